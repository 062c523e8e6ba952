"""Cost of one training step's parts on this machine: sample drawing (plain template vs generated heads) and the
network's forward + backward, in one run, so the step count of a GPU recipe can be scaled from ratios.

Usage: python bench/training_step.py [--data data/mni152] [--samples 8] [--steps 1] [--threads 2]
       [--out bench/results/training-step-cpu.json]

Measured: seconds per sample of the plain PatchSampler on the skull-stripped template (the previous recipe's
augmentation) and of the HeadSampler of train/configs/brain-tissue-synth.yaml, each mode on its own and mixed as the
config mixes them; then one step (bf16 autocast where the CPU has it, as the trainer) of 2 × 128³ for base 16 and
base 12. Prints and writes one JSON object.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import torch

from train.augment import PatchSampler
from train.config import load_config
from train.data import cases, load_subject
from train.optim import amp_dtype, dice_ce_loss
from train.synth import head_sampler
from unet3d import UNet3D

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "train" / "configs" / "brain-tissue-synth.yaml"
MODES = {"head": (1.0, 0.0, 0.0), "stripped": (0.0, 1.0, 0.0), "synthetic": (0.0, 0.0, 1.0)}


def per_sample(draw: Any, samples: int) -> float:
    draw(1)  # warm-up
    started = time.perf_counter()
    draw(samples)
    return (time.perf_counter() - started) / samples


def sampler_costs(data: Path, samples: int) -> dict[str, float]:
    config = load_config(CONFIG, [f"data.root={data}", "loop.device=cpu"])
    device = torch.device("cpu")
    patch = tuple(config.data.patch_size)
    subject = load_subject(cases(data, "training")[0], (1.0, 1.0, 1.0), device, 3)
    plain = PatchSampler([subject], patch, config.augment, device=device)  # type: ignore[arg-type]
    costs = {"plain_template": per_sample(plain.sample, samples)}
    costs["heads_mixed"] = per_sample(head_sampler(config, device, seed=0).sample, samples)
    for mode, (head, stripped, synthetic) in MODES.items():
        only = dataclasses.replace(config.synth, head_weight=head, stripped_weight=stripped, synthetic_weight=synthetic)
        costs[f"heads_{mode}"] = per_sample(
            head_sampler(dataclasses.replace(config, synth=only), device, seed=0).sample, samples
        )
    return costs


def step_seconds(base: int, steps: int) -> float:
    config = load_config(CONFIG, ["loop.device=cpu"])
    model = UNet3D(num_classes=3, base_channels=base, depth=4, norm="batch")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    dtype = amp_dtype(config, torch.device("cpu"))
    images = torch.rand(2, 1, 128, 128, 128)
    labels = torch.randint(0, 3, (2, 128, 128, 128))

    def step() -> None:
        with torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
            logits = model(images)
        loss = dice_ce_loss(logits, labels, config)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    step()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - started) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "mni152")
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    result: dict[str, Any] = {"threads": args.threads, "torch": torch.__version__}
    result["seconds_per_sample"] = {k: round(v, 3) for k, v in sampler_costs(args.data, args.samples).items()}
    if args.steps:
        result["seconds_per_step_2x128"] = {f"base{b}": round(step_seconds(b, args.steps), 2) for b in (16, 12)}
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
