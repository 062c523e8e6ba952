"""GPU timing: one brain end to end (read .nii.gz → mask .nii.gz written) per precision, and a 512×512×400 CT.

Usage: python bench/gpu.py MODEL_DIR VOLUME.nii.gz [--repeats 5] [--precisions auto fp32] [--ct] [--json OUT]

Per precision: one warm-up, then `--repeats` timed runs of `Segmenter.predict` + `Prediction.save` (the device
synchronised), the median and the stages of the fastest. The masks are compared with the previous host pipeline
(tests/numpy_reference.py: NumPy preprocessing and restoration around the same network, fp32) and with this
pipeline's own fp32 mask. `--ct` adds a synthetic int16 CT (512×512×400 at 0.8×0.8×1 mm, resampled to the card's
1 mm on the device and restored from probabilities): written, read, segmented, saved, per stage, with the GPU's
peak memory. Runs on a CPU too (`--device cpu`), for rehearsals. Prints one JSON object.
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

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from numpy_reference import predict_mask  # noqa: E402

from unet3d import Segmenter, load_volume  # noqa: E402
from unet3d.compression import GZIP_BACKEND, writing  # noqa: E402
from unet3d.device import default_precision, synchronize  # noqa: E402


def timed_runs(segmenter: Segmenter, volume: Path, out: Path, repeats: int) -> dict[str, Any]:
    """One warm-up, then `repeats` end-to-end runs: median, best, and the stages of the best."""
    segmenter.predict(volume).save(out)
    runs = []
    for _ in range(repeats):
        synchronize(segmenter.device)
        started = time.perf_counter()
        prediction = segmenter.predict(volume)
        prediction.save(out)
        synchronize(segmenter.device)
        runs.append((time.perf_counter() - started, dict(prediction.timings_ms)))
    best = min(runs, key=lambda run: run[0])
    return {
        "median_ms": round(1000 * statistics.median(run[0] for run in runs), 1),
        "best_ms": round(1000 * best[0], 1),
        "best_stages_ms": {stage: round(ms, 1) for stage, ms in best[1].items()},
        "mode": prediction.mode,
        "network_shape": list(prediction.network_shape),
        "mask": prediction.mask,
    }


def previous_pipeline_mask(segmenter: Segmenter, volume: Path) -> np.ndarray:
    """The previous host pipeline's mask around the same network in fp32 (on its device)."""
    device = segmenter.device

    def on_device(x: torch.Tensor) -> torch.Tensor:
        return segmenter.network(x.to(device)).cpu()

    return predict_mask(on_device, load_volume(volume), segmenter.card, segmenter.model.pad_multiple)  # type: ignore[arg-type]


def brain(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    result: dict[str, Any] = {}
    masks: dict[str, np.ndarray] = {}
    for precision in args.precisions:
        segmenter = Segmenter.from_pretrained(args.model, device=args.device, precision=precision)
        resolved = default_precision(segmenter.device) if precision == "auto" else precision
        runs = timed_runs(segmenter, args.volume, work / "brain_mask.nii.gz", args.repeats)
        masks[precision] = runs.pop("mask")
        result[f"end_to_end_{precision}"] = {"precision": resolved, **runs}
    fp32 = Segmenter.from_pretrained(args.model, device=args.device, precision="fp32")
    with torch.inference_mode():
        previous = previous_pipeline_mask(fp32, args.volume)
    current = masks.get("fp32")
    if current is None:
        current = fp32.predict(args.volume).mask
    result["mask_agreement"] = {
        "fp32_vs_previous_pipeline_fp32": round(float((current == previous).mean()), 6),
        **{f"{p}_vs_fp32": round(float((m == current).mean()), 6) for p, m in masks.items() if p != "fp32"},
    }
    return result


def make_ct(path: Path, shape: tuple[int, int, int]) -> None:
    """A body-shaped int16 CT: an elliptic cylinder of soft tissue (40 ± 30 HU) in air (-1000 HU)."""
    import nibabel as nib

    rng = np.random.default_rng(0)
    grid = np.ogrid[: shape[0], : shape[1]]
    centre = (shape[0] / 2, shape[1] / 2)
    body = ((grid[0] - centre[0]) / (0.39 * shape[0])) ** 2 + ((grid[1] - centre[1]) / (0.31 * shape[1])) ** 2 <= 1
    ct = np.where(body[..., None], rng.normal(40, 30, shape), -1000).astype(np.int16)
    image = nib.Nifti1Image(ct, np.diag([0.8, 0.8, 1.0, 1.0]))
    with path.open("wb") as raw, writing(raw) as gz:
        image.to_file_map(image.make_file_map({"image": gz}))


def ct(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    shape = tuple(args.ct_shape)
    path = work / "ct.nii.gz"
    started = time.perf_counter()
    make_ct(path, shape)  # type: ignore[arg-type]
    written_s = time.perf_counter() - started
    segmenter = Segmenter.from_pretrained(args.model, device=args.device)
    if segmenter.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    runs = timed_runs(segmenter, path, work / "ct_mask.nii.gz", max(1, args.repeats // 2))
    runs.pop("mask")
    peak = torch.cuda.max_memory_allocated() / 2**30 if segmenter.device.type == "cuda" else None
    return {
        "shape": list(shape),
        "spacing_mm": [0.8, 0.8, 1.0],
        "file_mb": round(path.stat().st_size / 2**20, 1),
        "write_s": round(written_s, 2),
        **runs,
        "gpu_peak_gib": None if peak is None else round(peak, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="model directory or Hub repo id")
    parser.add_argument("volume", type=Path, help="a .nii/.nii.gz volume to segment")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per precision (default: 5)")
    parser.add_argument(
        "--precisions", nargs="+", default=["auto", "fp16", "bf16", "fp32"], choices=["auto", "fp16", "bf16", "fp32"]
    )
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu for a rehearsal")
    parser.add_argument("--ct", action="store_true", help="also the synthetic 512×512×400 CT")
    parser.add_argument("--ct-shape", type=int, nargs=3, default=[512, 512, 400], help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, default=None, help="also write the result to this file")
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("bench/gpu.py needs a CUDA device (or --device cpu for a rehearsal)")
    result: dict[str, Any] = {
        "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
        "torch": torch.__version__,
        "gzip": GZIP_BACKEND,
        "volume": args.volume.name,
    }
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        result["brain"] = brain(args, work)
        if args.ct:
            result["ct"] = ct(args, work)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
