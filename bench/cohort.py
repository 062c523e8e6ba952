"""A cohort through the CLI and in one process: volumes/s, where the time goes, GPU utilisation, equal masks.

Usage: python bench/cohort.py [--model DIR] [--volume FILE] [--count 32] [--device auto] [--precision auto]
                              [--json OUT]

Makes `--count` brains from one volume (default: the MNI152 T1 example): varied crops, flips and axis permutations
(the affine kept right), int16 and float32 .nii.gz, one in four resampled to another spacing. Then, with the model
loaded once in this process: a `Segmenter.predict` + `save` loop, and `Segmenter.predict_many` (reading and writing
on worker threads); and `unet3d predict FOLDER -o OUT` as its own process. For the CLI, the wall time includes the
interpreter, torch and model start-up; its steady rate is taken from results.csv growing (first row to last).
GPU utilisation is sampled with nvidia-smi every 50 ms on CUDA. Masks of the CLI and the loop must be equal.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from unet3d import Segmenter, load_volume  # noqa: E402
from unet3d.compression import GZIP_BACKEND, writing  # noqa: E402
from unet3d.device import default_precision, synchronize  # noqa: E402

DEFAULT_MODEL = ROOT / "models" / "unet3d-brain-tissue"
DEFAULT_VOLUME = ROOT / "api" / "examples" / "mni152_t1.nii.gz"
STAGES = ("load", "preprocess", "infer", "postprocess", "encode")


def make_cohort(source: Path, folder: Path, count: int, seed: int = 0) -> list[Path]:
    """`count` variants of `source`: crop, flips, axis order, dtype, and every fourth one at another spacing."""
    import nibabel as nib

    volume = load_volume(source)
    rng = np.random.default_rng(seed)
    paths = []
    for n in range(count):
        data, affine = volume.data, volume.affine.copy()
        start = [int(rng.integers(0, max(1, s // 10))) for s in data.shape]
        stop = [s - int(rng.integers(0, max(1, s // 10))) for s in data.shape]
        data = data[start[0] : stop[0], start[1] : stop[1], start[2] : stop[2]]
        affine[:3, 3] = affine[:3, :3] @ start + affine[:3, 3]
        if n % 4 == 3:  # a coarser or finer scan of the same head
            factors = rng.choice([0.8, 1.25, 1.5], size=3)
            shape = [max(8, round(s / f)) for s, f in zip(data.shape, factors, strict=True)]
            resized = torch.nn.functional.interpolate(torch.from_numpy(np.ascontiguousarray(data))[None, None], shape)
            scale = np.array(data.shape) / np.array(shape)
            data, affine = resized[0, 0].numpy(), affine @ np.diag([*scale, 1.0])
        for axis in range(3):
            if rng.random() < 0.5:
                data = np.flip(data, axis)
                flip = np.eye(4)
                flip[axis, axis], flip[axis, 3] = -1, data.shape[axis] - 1
                affine = affine @ flip
        order = rng.permutation(3)
        data = np.transpose(data, order)
        affine = affine @ np.eye(4)[[*order, 3]].T
        stored = np.rint(data).astype(np.int16) if n % 2 == 0 else data.astype(np.float32)
        image = nib.Nifti1Image(np.ascontiguousarray(stored), affine)
        path = folder / f"brain{n:03d}.nii.gz"
        with path.open("wb") as raw, writing(raw) as gz:
            image.to_file_map(image.make_file_map({"image": gz}))
        paths.append(path)
    return paths


@contextmanager
def gpu_utilisation(enabled: bool) -> Iterator[list[float]]:
    """Samples of `nvidia-smi`'s utilization.gpu (%) every 50 ms while the block runs (empty without a GPU)."""
    samples: list[float] = []
    process = None
    if enabled and shutil.which("nvidia-smi"):
        command = ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "-lms", "50"]
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        reader = threading.Thread(target=lambda: samples.extend(_numbers(process.stdout)), daemon=True)
        reader.start()
    try:
        yield samples
    finally:
        if process is not None:
            process.terminate()
            process.wait(5)


def _numbers(stream: Any) -> Iterator[float]:
    for line in stream:
        try:
            yield float(line.split(",")[0])
        except ValueError:
            continue


def summarise_gpu(samples: list[float]) -> dict[str, float] | None:
    if not samples:
        return None
    mean = round(statistics.fmean(samples), 1)
    return {"mean_pct": mean, "median_pct": statistics.median(samples), "samples": len(samples)}


def in_process(segmenter: Segmenter, paths: list[Path], out: Path, gpu: bool, *, many: bool) -> dict[str, Any]:
    """The model already loaded: a predict + save loop, or predict_many; per-stage sums over the cohort."""
    out.mkdir(parents=True, exist_ok=True)
    stages = dict.fromkeys(STAGES, 0.0)
    synchronize(segmenter.device)
    with gpu_utilisation(gpu) as samples:
        started = time.perf_counter()
        if many:
            for case in segmenter.predict_many(paths, out):
                if case.error is not None:
                    raise case.error
                _add(stages, case.prediction.timings_ms)  # type: ignore[union-attr]
        else:
            for path in paths:
                prediction = segmenter.predict(path)
                prediction.save(out)
                _add(stages, prediction.timings_ms)
        synchronize(segmenter.device)
        wall = time.perf_counter() - started
    return _rates(len(paths), wall, stages, samples)


def _add(total: dict[str, float], timings: dict[str, float]) -> None:
    for stage in STAGES:
        total[stage] += timings.get(stage, 0.0)


def _rates(count: int, wall: float, stages: dict[str, float], samples: list[float]) -> dict[str, Any]:
    return {
        "wall_s": round(wall, 2),
        "volumes_per_s": round(count / wall, 2),
        "stage_ms_per_volume": {stage: round(ms / count, 1) for stage, ms in stages.items()},
        "gpu_utilisation": summarise_gpu(samples),
    }


def cli(args: argparse.Namespace, inputs: Path, out: Path, gpu: bool) -> dict[str, Any]:
    """`unet3d predict INPUTS -o OUT` in its own process; the rate from results.csv's rows as they appear."""
    command = [sys.executable, "-m", "unet3d.cli", "predict", str(inputs), "-o", str(out), "--model", str(args.model)]
    command += ["--device", args.device, "--precision", args.precision]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    results = out / "results.csv"
    rows: list[tuple[int, float]] = []
    with gpu_utilisation(gpu) as samples:
        started = time.perf_counter()
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        while process.poll() is None:
            count = _rows(results)
            if count and (not rows or rows[-1][0] != count):
                rows.append((count, time.perf_counter() - started))
            time.sleep(0.02)  # a few samples per case; the poll itself must not take a core from the run
        wall = time.perf_counter() - started
    if process.returncode != 0:
        raise RuntimeError(f"unet3d predict failed ({process.returncode}): {process.stderr.read()[-2000:]}")
    count = _rows(results)
    rows.append((count, wall))
    first = next(t for n, t in rows if n >= 1)
    last = next(t for n, t in rows if n >= count)
    runtimes = [float(row["runtime_ms"]) for row in csv.DictReader(results.open()) if row["status"] == "ok"]
    return {
        "wall_s": round(wall, 2),
        "volumes_per_s_with_startup": round(count / wall, 2),
        "start_to_first_case_s": round(first, 2),
        "steady_volumes_per_s": round((count - 1) / (last - first), 2) if last > first else None,
        "runtime_ms_per_case_median": round(statistics.median(runtimes), 1),
        "ok": len(runtimes),
        "gpu_utilisation": summarise_gpu(samples),
    }


def _rows(results: Path) -> int:
    try:
        return max(0, sum(1 for _ in results.open()) - 1)
    except OSError:
        return 0


def compare_masks(a: Path, b: Path, names: list[str]) -> dict[str, Any]:
    agreement = []
    for name in names:
        left, right = load_volume(a / name).data, load_volume(b / name).data
        agreement.append(float((left == right).mean()))
    return {"cases": len(names), "identical": sum(x == 1.0 for x in agreement), "min_agreement": min(agreement)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--volume", type=Path, default=DEFAULT_VOLUME)
    parser.add_argument("--count", type=int, default=32, help="brains in the cohort (default: 32)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    parser.add_argument("--skip-cli", action="store_true", help="only the in-process runs")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="unet3d-cohort-"))
    try:
        started = time.perf_counter()
        (work / "in").mkdir()
        paths = make_cohort(args.volume, work / "in", args.count)
        made_s = time.perf_counter() - started
        segmenter = Segmenter.from_pretrained(args.model, device=args.device, precision=args.precision)
        gpu = segmenter.device.type == "cuda"
        segmenter.predict(paths[0]).save(work / "warm.nii.gz")  # warm-up: allocator, cuDNN, oneDNN primitives
        result: dict[str, Any] = {
            "device": torch.cuda.get_device_name() if gpu else f"cpu ({os.cpu_count()} cores)",
            "precision": args.precision if args.precision != "auto" else default_precision(segmenter.device),
            "gzip": GZIP_BACKEND,
            "cohort": {"count": len(paths), "made_s": round(made_s, 1), "source": args.volume.name},
        }
        result["loop"] = in_process(segmenter, paths, work / "loop", gpu, many=False)
        result["predict_many"] = in_process(segmenter, paths, work / "many", gpu, many=True)
        del segmenter
        if not args.skip_cli:
            result["cli"] = cli(args, work / "in", work / "cli", gpu)
        names = sorted(p.name for p in (work / "loop").glob("*_mask.nii.gz"))
        result["masks_many_vs_loop"] = compare_masks(work / "loop", work / "many", names)
        if not args.skip_cli:
            result["masks_cli_vs_loop"] = compare_masks(work / "loop", work / "cli", names)
            loop_per_volume = result["loop"]["wall_s"] / len(paths)
            steady = result["cli"]["steady_volumes_per_s"]
            result["cli_steady_s_per_volume_over_loop"] = round(1 / steady / loop_per_volume, 3) if steady else None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
