"""GPU timing of the library on one volume: end-to-end `Segmenter.predict` + save, with its stages, per precision.

Usage: python bench/gpu.py MODEL_DIR VOLUME.nii.gz [--repeats 5] [--json OUT]   (prints one JSON object)
For each of fp16, bf16 and fp32: one warm-up run, then the median of --repeats runs and the stages of the fastest.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from unet3d import Segmenter


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="model directory or Hub repo id")
    parser.add_argument("volume", help="a .nii/.nii.gz volume to segment")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per precision (default: 5)")
    parser.add_argument("--json", type=Path, default=None, help="also write the result to this file")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench/gpu.py needs a CUDA device")
    result: dict[str, object] = {"device": torch.cuda.get_device_name(), "torch": torch.__version__}
    for precision in ("fp16", "bf16", "fp32"):
        seg = Segmenter.from_pretrained(args.model, device="cuda", precision=precision)
        seg.predict(args.volume)  # warm-up (cuDNN autotuning, allocator)
        runs = []
        for _ in range(args.repeats):
            torch.cuda.synchronize()
            started = time.perf_counter()
            prediction = seg.predict(args.volume)
            prediction.save("/tmp/bench_gpu_mask.nii.gz")
            torch.cuda.synchronize()
            runs.append((time.perf_counter() - started, prediction.timings_ms))
        best = min(runs, key=lambda r: r[0])
        result[f"end_to_end_{precision}"] = {
            "median_ms": round(1000 * statistics.median(r[0] for r in runs), 1),
            "best_stages_ms": {k: round(v, 1) for k, v in best[1].items()},
            "mode": prediction.mode,
            "network_shape": list(prediction.network_shape),
        }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
