"""The review UI's segmentation (the service's predict with probabilities, for the uncertainty overlay) against the
CLI's (`predict` + save) on the same file, alternated in one process.

Usage: python bench/probabilities.py [--model DIR] [--volume FILE] [--repeats 3] [--device auto] [--json OUT]

The UI path may cost more than the CLI's by the probabilities themselves (a softmax, and a float32 map per class on
the input grid brought to the host); it must not take a slower route. Prints the medians, the stages of each path
and the modes that ran. Needs the serving extras (api.service).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from api.limits import InferenceSlots  # noqa: E402
from api.service import SegmentationService  # noqa: E402
from unet3d import Segmenter  # noqa: E402
from unet3d.device import synchronize  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "unet3d-brain-tissue")
    parser.add_argument("--volume", type=Path, default=ROOT / "api" / "examples" / "mni152_t1.nii.gz")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    segmenter = Segmenter.from_pretrained(args.model, device=args.device)
    service = SegmentationService(segmenter, InferenceSlots(1, 0))
    ui_options = service.options(probabilities=True)
    times: dict[str, list[float]] = {"cli": [], "ui": []}
    stages: dict[str, dict[str, float]] = {}
    modes: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as work:
        target = Path(work) / "mask.nii.gz"
        segmenter.predict(args.volume)  # warm-up
        for _ in range(args.repeats):
            for path in ("cli", "ui"):
                synchronize(segmenter.device)
                started = time.perf_counter()
                if path == "cli":
                    prediction = segmenter.predict(args.volume)
                else:
                    job = lambda: service.predict(args.volume, name=args.volume.name, options=ui_options)  # noqa: E731
                    prediction = service.slots.run(job)
                prediction.save(target)
                synchronize(segmenter.device)
                times[path].append(time.perf_counter() - started)
                stages[path] = {k: round(v, 1) for k, v in prediction.timings_ms.items()}
                modes[path] = prediction.mode
    service.slots.shutdown()
    median = {path: statistics.median(values) for path, values in times.items()}
    result: dict[str, Any] = {
        "device": str(segmenter.device),
        "volume": args.volume.name,
        "median_s": {path: round(value, 3) for path, value in median.items()},
        "ui_over_cli": round(median["ui"] / median["cli"], 3),
        "last_stages_ms": stages,
        "modes": modes,
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
