"""A chain that keeps a skull-stripped input's own brain: what it would change, measured beside the chain as it is.

Usage: python bench/keep_stripped.py [--tissue models/unet3d-brain-tissue] [--stage DIR] [--threshold T]
           [--edge none|THRESHOLD:MM] [--data data/mni152] [--real-head HEAD BRAIN ...]
           [--surface-head data/pycortex-S1 --foramen-magnum-z -66] [--json FILE]

A chained model cuts every input to the brain its first stage finds, a scan someone already skull-stripped too: on
such a scan a 2 mm stage can take away cortex the user's mask kept. The rule tried here: when the input's non-zero
voxels are mostly the brain the stage finds (at least COVER of them), the input was stripped already, and its own
non-zero region (holes filled) is the brain. A full head, even one whose air is exactly 0, is several brains' worth
of non-zero voxels, so it is cut as before. For each setting (the rule off, then on) it measures the validation heads
and real heads as `python -m train chain` does (train/consistency.py), and a pycortex subject's figures
(train/surface_head.py: agreement in the cerebrum, Dice against FreeSurfer's surfaces). `--tissue` takes a chained
model or a tissue model alone; `--stage` (needed for the latter) replaces its first stage. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from scipy import ndimage

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from train.chain import BrainMaskSetting, check_settings  # noqa: E402
from train.chain_cli import parse_edge  # noqa: E402
from train.consistency import dataset_heads, measure_case, real_head  # noqa: E402
from train.errors import ConfigError  # noqa: E402
from train.surface_head import measure_surface_head  # noqa: E402
from unet3d import Segmenter  # noqa: E402
from unet3d.card import BrainEdge  # noqa: E402

# The least share of an input's non-zero voxels the stage's brain covers for the input to count as stripped. Measured
# (shipped stage 1.1): stripped scans 0.82-1.00 (ROBEX's head in its own mask: 0.82), whole heads 0.11-0.28 (S1,
# whose air is exactly 0: 0.28).
COVER = 0.6


class KeepStripped(Segmenter):
    """A Segmenter whose brain stage keeps an already stripped input's own brain while `keep` is set."""

    keep: ClassVar[bool] = False

    def brain(self, read: Any, threshold: float, edge: BrainEdge | None) -> tuple[torch.Tensor, np.ndarray]:
        found, scan = super().brain(read, threshold, edge)
        nonzero = read.volume.data != 0
        cover = int(np.count_nonzero(found.cpu().numpy() & nonzero)) / max(int(np.count_nonzero(nonzero)), 1)
        if not self.keep or cover < COVER:
            return found, scan
        own = ndimage.binary_fill_holes(nonzero)
        return torch.as_tensor(own, device=found.device), scan


def load(
    tissue: str, stage: str | None, threshold: float | None, edge: list[tuple[float, float] | None] | None
) -> Segmenter:
    """The chain, its first stage replaced by `stage`, its brain mask threshold and edge (`--edge`'s one-item list)
    replaced where given; a setting `train chain` would refuse is refused here too."""
    segmenter = KeepStripped.from_pretrained(tissue, device="cpu")
    if stage is not None:
        segmenter.brain_mask = KeepStripped.from_pretrained(stage, device="cpu")
    if segmenter.brain_mask is None:
        raise SystemExit(f"{tissue} has no brain stage: give one with --stage")
    card = segmenter.card.inference
    shipped = None if card.brain_mask_edge is None else (card.brain_mask_edge.threshold, card.brain_mask_edge.within_mm)
    setting = BrainMaskSetting(
        card.brain_mask_threshold if threshold is None else threshold, shipped if edge is None else edge[0]
    )
    try:
        check_settings([setting])
    except ConfigError as e:
        raise SystemExit(str(e)) from e
    grown = None if setting.edge is None else BrainEdge(*setting.edge)
    inference = dataclasses.replace(card, brain_mask_threshold=setting.threshold, brain_mask_edge=grown)
    segmenter.card = dataclasses.replace(segmenter.card, inference=inference)
    return segmenter


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tissue", default=str(ROOT / "models" / "unet3d-brain-tissue"), help="chain or tissue model")
    parser.add_argument("--stage", default=None, help="a brain stage to use instead of the chain's own")
    parser.add_argument("--threshold", type=float, default=None, help="brain threshold (default: card's)")
    parser.add_argument("--edge", type=parse_edge, nargs=1, default=None, help="THRESHOLD:MM or none (default: card's)")
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "mni152", help="dataset with validation heads")
    parser.add_argument("--real-head", nargs=2, action="append", default=[], metavar=("HEAD", "BRAIN"))
    parser.add_argument("--surface-head", type=Path, default=None, help="a pycortex subject folder")
    parser.add_argument("--foramen-magnum-z", type=float, default=-66.0, help="the subject's foramen magnum (mm)")
    parser.add_argument("--json", type=Path, default=None, help="also write the result to this file")
    args = parser.parse_args()
    segmenter = load(args.tissue, args.stage, args.threshold, args.edge)
    cases = dataset_heads(args.data, "validation") + [real_head(head, brain) for head, brain in args.real_head]
    result: dict[str, Any] = {"command": " ".join(["python", "bench/keep_stripped.py", *sys.argv[1:]])}
    for keep in (False, True):
        KeepStripped.keep = keep
        rows: list[dict[str, Any]] = []
        for case in cases:
            rows.append(measure_case(segmenter, case))
            print(json.dumps({"keep": keep, **rows[-1]}), file=sys.stderr, flush=True)
        if args.surface_head is not None:
            figures = measure_surface_head(segmenter, args.surface_head, args.foramen_magnum_z)
            rows.append({key: value for key, value in figures.items() if key != "files"})
        result["keep_stripped" if keep else "as_shipped"] = rows
    text = json.dumps(result, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
