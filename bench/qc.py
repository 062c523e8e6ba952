"""What quality control costs: its share of `Segmenter.predict` on the MNI example (the goal: under 5%).

Usage: python bench/qc.py [--model DIR] [--volume PATH] [--repeats 5] [--device cpu] [--json bench/results/qc-cpu.json]

Each repeat runs one plain `predict` (whole pass, argmax from the logits: the common path) and one with
`probabilities=True` (the sliding/probabilities path the UI's uncertainty map takes), timing inside them the two
parts QC adds: the uncertainty meter (`EntropyMeter`, fed by inference) and `assess` (the measures and the verdict).
The machine is shared, so the figure to trust is the share within the same runs. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import unet3d.segmenter as segmenter_module  # noqa: E402
from unet3d import Segmenter  # noqa: E402
from unet3d.uncertainty import EntropyMeter  # noqa: E402

Timings = dict[str, float]


def timed(spent: Timings, key: str, function: Callable[..., Any]) -> Callable[..., Any]:
    """`function`, adding the seconds each call takes to `spent[key]`."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            spent[key] = spent.get(key, 0.0) + time.perf_counter() - started

    return wrapper


def run(segmenter: Segmenter, volume: Path, probabilities: bool, spent: Timings) -> dict[str, float]:
    spent.clear()
    started = time.perf_counter()
    prediction = segmenter.predict(volume, probabilities=probabilities)
    total = time.perf_counter() - started
    assert prediction.qc is not None
    meter, assess = spent.get("meter", 0.0), spent.get("assess", 0.0)
    return {"predict_s": total, "meter_s": meter, "assess_s": assess, "share": (meter + assess) / total}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(ROOT / "models" / "unet3d-brain-tissue"))
    parser.add_argument("--volume", type=Path, default=ROOT / "api" / "examples" / "mni152_t1.nii.gz")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", type=Path, default=None, help="also write the result here")
    args = parser.parse_args()

    spent: Timings = {}
    EntropyMeter.add_logits = timed(spent, "meter", EntropyMeter.add_logits)  # type: ignore[method-assign]
    EntropyMeter.add_probabilities = timed(spent, "meter", EntropyMeter.add_probabilities)  # type: ignore[method-assign]
    segmenter_module.assess = timed(spent, "assess", segmenter_module.assess)  # type: ignore[attr-defined]
    segmenter = Segmenter.from_pretrained(args.model, device=args.device)
    segmenter.predict(args.volume)  # warm-up: first-call allocations and imports
    runs: dict[str, list[dict[str, float]]] = {"labels": [], "probabilities": []}
    for _ in range(args.repeats):
        runs["labels"].append(run(segmenter, args.volume, False, spent))
        runs["probabilities"].append(run(segmenter, args.volume, True, spent))
    result: dict[str, Any] = {"volume": args.volume.name, "device": args.device, "repeats": args.repeats}
    for path, measured in runs.items():
        result[path] = {key: round(statistics.median(r[key] for r in measured), 4) for key in measured[0]}
    result["goal_share"] = 0.05
    result["meets_goal"] = all(result[path]["share"] < 0.05 for path in runs)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json is not None:
        args.json.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
