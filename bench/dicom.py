"""DICOM in and SEG out, measured: `load_dicom` on a zipped 200-slice 256×256 series vs dcm2niix converting the same
files, writing the SEG, and the read's peak memory.

Usage: python bench/dicom.py [--repeats 5] [--out bench/results/dicom-cpu.json]

The series is the MNI152 template (1 mm) centred in a 256×256×200 grid with scanner-like noise, stored as int16
single-frame MR files and zipped (deflate), as a PACS export comes. In one run, interleaved, each `--repeats` times
(medians reported, wall and CPU seconds):
- `read_zip`: `load_dicom(series.zip)`, in this process (warm: imports done, as in the server);
- `read_folder`: `load_dicom(folder)` of the extracted files;
- `dcm2niix`: `dcm2niix -z n` converting the extracted folder (a fresh process, as it is used); CPU from
  RUSAGE_CHILDREN; `unzip_dcm2niix` adds extracting the zip first (what a user with the zip must do);
- `seg_write`: `write_dicom_seg` of a 3-class mask on the series (the first call, which loads highdicom's tables, is
  reported apart as `seg_write_first`).
Peak memory of `load_dicom(series.zip)`: the peak of Python/numpy allocations (tracemalloc) and of the RSS of a fresh
child process above its post-import baseline, each over the volume's float32 size (target ≤ 2).
Targets (issue 16): read_zip / dcm2niix ≤ 1.5, seg_write < 1 s.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the test suite's series builder: one way to write DICOM for both

from dicom_series import TEMPLATE, SeriesSpec, dcm2niix_binary, reoriented, write_series, zip_folder  # noqa: E402

from unet3d import load_card, resolve_source  # noqa: E402
from unet3d.dicom import load_dicom, write_dicom_seg  # noqa: E402

SHAPE = (256, 256, 200)
MODEL = ROOT / "models" / "unet3d-brain-tissue"
# ru_maxrss would carry the parent's peak across fork: reset the high-water mark (Linux ≥ 4.0) and read VmHWM.
CHILD = """
import json, sys
from unet3d.dicom import load_dicom
def status(field):
    return next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith(field + ":"))
open("/proc/self/clear_refs", "w").write("5")
base = status("VmRSS")
volume = load_dicom(sys.argv[1])
print(json.dumps({"peak": status("VmHWM") - base, "volume": volume.data.nbytes}))
"""


def write_case(folder: Path) -> Path:
    """The template in a 256×256×200 grid with noise, as int16 axial DICOM files (LPS, as scanners store axial)."""
    template = np.asarray(nib.load(TEMPLATE).dataobj, dtype=np.float32) * 4.0
    data = np.zeros(SHAPE, np.float32)
    offset = [(n - t) // 2 for n, t in zip(SHAPE, template.shape, strict=True)]
    data[tuple(slice(o, o + t) for o, t in zip(offset, template.shape, strict=True))] = template
    data += np.random.default_rng(0).normal(0, 4, SHAPE).astype(np.float32)
    affine = np.eye(4)
    affine[:3, 3] = [-128.0, -128.0, -100.0]
    write_series(folder / "series", *reoriented(data, affine, "LPS"), SeriesSpec())
    return zip_folder(folder / "series", folder / "series.zip", prefix="export/DICOM/")


def timed(action: Callable[[], Any]) -> tuple[float, float]:
    """(wall, CPU) seconds of `action` in this process."""
    wall, cpu = time.perf_counter(), time.process_time()
    action()
    return time.perf_counter() - wall, time.process_time() - cpu


def run_dcm2niix(folder: Path, out: Path, archive: Path | None = None) -> tuple[float, float]:
    """(wall, CPU) seconds of dcm2niix converting `folder` (after extracting `archive` into it, if given)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = time.perf_counter()
    cpu = time.process_time()
    if archive is not None:
        with zipfile.ZipFile(archive) as opened:
            opened.extractall(folder)
    extract_cpu = time.process_time() - cpu
    out.mkdir(parents=True, exist_ok=True)
    command = [str(dcm2niix_binary()), "-z", "n", "-b", "n", "-f", "x", "-o", str(out), str(folder)]
    subprocess.run(command, check=True, capture_output=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    child = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return time.perf_counter() - wall, child + extract_cpu


def memory(archive: Path) -> dict[str, float]:
    tracemalloc.start()
    volume = load_dicom(archive)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    child = subprocess.run([sys.executable, "-c", CHILD, str(archive)], capture_output=True, text=True, check=True)
    rss = json.loads(child.stdout.strip().splitlines()[-1])
    return {
        "volume_float32_mb": round(volume.data.nbytes / 2**20, 1),
        "traced_peak_mb": round(peak / 2**20, 1),
        "traced_peak_ratio": round(peak / volume.data.nbytes, 3),
        "rss_peak_mb": round(rss["peak"] / 2**20, 1),
        "rss_peak_ratio": round(rss["peak"] / rss["volume"], 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "dicom-cpu.json")
    args = parser.parse_args()
    source = resolve_source(MODEL)
    card = load_card(source.directory / "model.yaml")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        archive = write_case(folder)
        volume = load_dicom(archive)  # warm-up: imports, first allocation of the volume's size
        mask = np.digitize(volume.data, [250, 600]).astype(np.uint8)
        first = timed(lambda: write_dicom_seg(mask, volume, card, source, folder / "seg.dcm"))
        samples: dict[str, list[tuple[float, float]]] = {}
        for repeat in range(args.repeats):
            for name, seconds in one_round(folder, archive, repeat, lambda: write_dicom_seg(
                    mask, volume, card, source, folder / "seg.dcm")).items():  # fmt: skip
                samples.setdefault(name, []).append(seconds)
            clean(folder, repeat)
        report = summarise(samples, first, archive, memory(archive))
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


def one_round(folder: Path, archive: Path, repeat: int, write_seg: Callable[[], Any]) -> dict[str, tuple[float, float]]:
    """(wall, CPU) seconds of each measured action, once, in a fixed order."""
    return {
        "read_zip": timed(lambda: load_dicom(archive)),
        "read_folder": timed(lambda: load_dicom(folder / "series")),
        "dcm2niix": run_dcm2niix(folder / "series", folder / f"out{repeat}"),
        "unzip_dcm2niix": run_dcm2niix(folder / f"unzipped{repeat}", folder / f"out-unzipped{repeat}", archive),
        "seg_write": timed(write_seg),
    }


def clean(folder: Path, repeat: int) -> None:
    """Drop a round's dcm2niix outputs and extracted files, so the disk cache of later rounds stays as it was."""
    for name in (f"out{repeat}", f"unzipped{repeat}", f"out-unzipped{repeat}"):
        shutil.rmtree(folder / name, ignore_errors=True)


def summarise(
    samples: dict[str, list[tuple[float, float]]], first: tuple[float, float], archive: Path, peak: dict[str, float]
) -> dict[str, Any]:
    """Medians (the figures) and minima (the least disturbed runs: this machine is shared) of wall and CPU seconds."""
    stats = {
        name: {
            "wall_s": round(statistics.median(w for w, _ in runs), 3),
            "cpu_s": round(statistics.median(c for _, c in runs), 3),
            "best_wall_s": round(min(w for w, _ in runs), 3),
            "best_cpu_s": round(min(c for _, c in runs), 3),
        }
        for name, runs in samples.items()
    }

    def ratio(name: str, other: str, key: str) -> float:
        return round(stats[name][key] / stats[other][key], 3)

    return {
        "series": {"shape": list(SHAPE), "files": SHAPE[2], "zip_mb": round(archive.stat().st_size / 2**20, 1)},
        "rounds": len(samples["read_zip"]),
        "seconds": stats,
        "seg_write_first": {"wall_s": round(first[0], 3), "cpu_s": round(first[1], 3)},
        "ratios": {
            f"{name}_vs_{other}_{key.removesuffix('_s')}": ratio(name, other, key)
            for name, other in (("read_zip", "dcm2niix"), ("read_zip", "unzip_dcm2niix"), ("read_folder", "dcm2niix"))
            for key in ("wall_s", "cpu_s", "best_wall_s", "best_cpu_s")
        },
        "memory": peak,
        "targets": {"read_zip_vs_dcm2niix": 1.5, "seg_write_s": 1.0, "peak_ratio": 2.0},
        "machine": {"cpus": len(os.sched_getaffinity(0)), "load_1min": round(os.getloadavg()[0], 2)},
    }


if __name__ == "__main__":
    main()
