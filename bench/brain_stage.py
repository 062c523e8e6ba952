"""A brain stage alone, with and without the skull: the brain it finds in a head and in the same head stripped.

Usage: python bench/brain_stage.py STAGE [STAGE ...] [--data data/mni152]
           [--real-head data/robex-ref/atlas.nii.gz data/robex-ref/atlas_mask.nii.gz] [--json FILE]

STAGE: a brain-extraction model directory (2 classes, e.g. runs/brain-mask/model or a chain's brain_mask/). For each
of the dataset's full-head validation cases and each real head (its scan, stripped in memory by its brain mask), it
runs the stage on the head and on the stripped scan and reports the brain volume of each, the reference mask's
volume, the Dice between the two results (1.0: the stage finds the same brain with and without the skull) and the
fraction of the head result outside the reference mask. Before a brain stage is chained (`python -m train chain`),
this says whether it finds the same brain in a scan someone else stripped. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from train.consistency import HeadCase, dataset_heads, measure_case, real_head  # noqa: E402
from unet3d import Segmenter, load_volume  # noqa: E402


def measure(stage: str, cases: list[HeadCase]) -> list[dict[str, Any]]:
    segmenter = Segmenter.from_pretrained(stage, device="cpu")
    if segmenter.card.class_names() != ["background", "brain"]:
        raise SystemExit(f"{stage}: not a brain stage (classes {segmenter.card.class_names()}, want background, brain)")
    rows = []
    for case in cases:
        row = measure_case(segmenter, case)
        reference = load_volume(case.brain) if case.brain else None
        rows.append(
            {
                "case": case.name,
                "reference_ml": round(float((reference.data > 0.5).sum()) * reference.voxel_volume_ml, 1)
                if reference
                else None,
                "head_ml": row["volume_ml_full"]["brain"],
                "stripped_ml": row["volume_ml_stripped"]["brain"],
                "agreement_dice": row["agreement_dice"]["brain"],
                "outside_fraction": row["outside_fraction"],
            }
        )
        print(json.dumps({"stage": stage, **rows[-1]}), file=sys.stderr, flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stages", nargs="+", help="brain stage model directories")
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "mni152", help="dataset with validation heads")
    parser.add_argument(
        "--real-head", nargs=2, action="append", default=[], metavar=("HEAD", "BRAIN"), help="a real head and its mask"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the result to this file")
    args = parser.parse_args()
    cases = dataset_heads(args.data, "validation") + [real_head(head, brain) for head, brain in args.real_head]
    result = {"stages": {stage: measure(stage, cases) for stage in args.stages}}
    text = json.dumps(result, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
