"""Run under torchrun: train a few steps with DDP (gloo), then save this rank's final weights for comparison."""

import sys
from pathlib import Path

from safetensors.torch import save_file

from train.config import load_config
from train.trainer import Trainer


def main() -> None:
    config_path, data_root, out = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    config = load_config(config_path, [f"data.root={data_root}", "loop.epochs=2", "loop.steps_per_epoch=2"])
    trainer = Trainer(config, out, progress=False)
    rank = trainer.dist.rank
    trainer.fit()
    state = {k: v.contiguous() for k, v in trainer.model.state_dict().items()}
    save_file(state, str(out / f"rank{rank}.safetensors"))


if __name__ == "__main__":
    main()
