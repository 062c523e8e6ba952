"""Peak host memory of `Segmenter.predict` vs the estimate that refuses volumes which cannot fit (unet3d/planning.py).

Usage: python bench/memory.py [--model DIR] [--out bench/results/memory-cpu.json]

Each case is a synthetic ellipsoid volume written to a temporary .nii.gz, segmented on the CPU in a fresh child
process. Measured: the child's peak RSS (ru_maxrss) minus its RSS once the model is loaded. Estimated: the figure
`Segmenter.predict` compares with the available memory (before subtracting what is already allocated). The
estimate must stay below the measurement (ratio < 1), so that a refusal always means "could not have fitted".
Prints and writes one JSON object.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = ROOT / "models" / "unet3d-brain-tissue"

# (shape, spacing in mm, fraction of the field of view the ellipsoid fills, probabilities requested)
CASES: list[tuple[tuple[int, int, int], tuple[float, float, float], float, bool]] = [
    ((192, 224, 192), (1.0, 1.0, 1.0), 0.9, False),  # a 1 mm brain: one whole-volume pass
    ((256, 256, 256), (1.0, 1.0, 1.0), 0.9, False),
    ((256, 256, 256), (1.0, 1.0, 1.0), 0.9, True),
    ((384, 384, 384), (1.0, 1.0, 1.0), 0.9, False),
    ((384, 384, 384), (1.0, 1.0, 1.0), 0.5, False),  # large field of view: the foreground crop shrinks it
    ((512, 512, 200), (0.5, 0.5, 1.0), 0.9, False),  # resampled down to 1 mm
    ((256, 256, 80), (1.0, 1.0, 3.0), 0.9, False),  # thick slices, resampled up
    ((256, 256, 80), (1.0, 1.0, 3.0), 0.9, True),
]

CHILD = """
import json, resource, sys
import unet3d.planning as planning
from unet3d import Segmenter

path, model, probabilities = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
estimates = []
original = planning.predict_bytes
planning.predict_bytes = lambda *a, **k: estimates.append(original(*a, **k)) or estimates[-1]
segmenter = Segmenter.from_pretrained(model, device="cpu")
base = int(open("/proc/self/statm").read().split()[1]) * resource.getpagesize()
prediction = segmenter.predict(path, probabilities=probabilities)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"measured_mb": (peak - base) / 2**20, "estimated_mb": estimates[0] / 2**20,
                  "mode": prediction.mode, "network_shape": prediction.network_shape}))
"""


def write_case(path: Path, shape: tuple[int, int, int], spacing: tuple[float, ...], fill: float) -> None:
    rng = np.random.default_rng(0)
    axes = np.ogrid[tuple(slice(0, n) for n in shape)]
    radius = sum(((a - (n - 1) / 2) / (n * fill / 2)) ** 2 for a, n in zip(axes, shape, strict=True))
    data = (np.clip(1.2 - np.sqrt(radius), 0, 1) * 800).astype(np.int16)
    data += (rng.normal(0, 20, shape) * (data > 0)).astype(np.int16)  # a zero background, as in skull-stripped MRI
    nib.save(nib.Nifti1Image(data, np.diag([*spacing, 1.0])), path)


def measure(path: Path, model: Path, probabilities: bool) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(path), str(model), "1" if probabilities else "0"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="model directory (default: shipped)")
    parser.add_argument(
        "--out",
        type=Path,
        default=ROOT / "bench" / "results" / "memory-cpu.json",
        help="where the result goes (default: the committed bench/results/memory-cpu.json, replaced)",
    )
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for index, (shape, spacing, fill, probabilities) in enumerate(CASES):
            path = Path(tmp) / f"case{index}.nii.gz"
            write_case(path, shape, spacing, fill)
            row = {"shape": shape, "spacing_mm": spacing, "fill": fill, "probabilities": probabilities}
            row.update(measure(path, args.model, probabilities))
            row["ratio"] = round(row["estimated_mb"] / row["measured_mb"], 3)
            print(json.dumps(row), file=sys.stderr)
            rows.append(row)
    report = {"cases": rows, "max_ratio": max(r["ratio"] for r in rows), "min_ratio": min(r["ratio"] for r in rows)}
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
