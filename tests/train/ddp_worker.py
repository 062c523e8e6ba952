"""Run under torchrun: train a few steps with DDP (gloo), then save this rank's final weights for comparison.

An optional 4th argument names a stage of the resume check: "first-epoch" stops after epoch 1 (standing in for
a kill), "resume" continues that run from its checkpoint (each rank must restore its own augmentation stream).
"""

import sys
from pathlib import Path

from safetensors.torch import save_file

from train.config import load_config
from train.trainer import Trainer


def main() -> None:
    config_path, data_root, out = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    stage = sys.argv[4] if len(sys.argv) > 4 else "whole"
    config = load_config(config_path, [f"data.root={data_root}", "loop.epochs=2", "loop.steps_per_epoch=2"])
    trainer = Trainer(config, out, progress=False)
    if stage == "first-epoch":
        trainer.fit(epoch_callback=lambda epoch, _: epoch == 1)
        return
    trainer.fit(resume=stage == "resume")
    state = {k: v.contiguous() for k, v in trainer.model.state_dict().items()}
    save_file(state, str(out / f"{stage}-rank{trainer.dist.rank}.safetensors"))


if __name__ == "__main__":
    main()
