"""Library vs MONAI's sliding window on the same weights and the same 1 mm brain (nilearn's MNI152 T1).

Usage: python bench/compare.py [--model DIR] [--repeats 3] [--precision auto] [--skip-ct] [--json OUT.json]

`--precision fp32` runs ours as a CPU without native bf16 (AVX2 only: most laptops and many cloud VMs) would: the
JSON says which precision ran and what the CPU has (avx512_bf16 / AMX).
Needs the dev extras (MONAI, nilearn for the template): scripts/setup.sh --dev.

Times are measured in this process, alternating the two pipelines (the machine is shared and noisy,
so the ratio is the figure to trust); peak RSS is measured in a fresh child process per pipeline.
Both pipelines read the NIfTI, normalise it the same way, segment, and write a uint8 mask:
- ours: `Segmenter.predict` (auto mode: whole pass when it fits, bf16 on CPUs that have it, or --precision) + save;
- MONAI: `sliding_window_inference` (roi 128³, overlap 0.25, gaussian, sw_batch_size 1, fp32).
The FLOP floor is the network's FLOPs for one padded whole-volume pass divided by this machine's
measured bf16 matmul rate. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from train.mni152 import load_template, template_dir, tissue_labels  # noqa: E402
from unet3d import Segmenter, load_volume  # noqa: E402
from unet3d.hub import load_unet, resolve_source  # noqa: E402
from unet3d.io import save_mask  # noqa: E402
from unet3d.metrics import dice  # noqa: E402
from unet3d.planning import network_shape  # noqa: E402
from unet3d.preprocessing import normalize_minmax  # noqa: E402

T1_NAME = "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
DEFAULT_MODEL = ROOT / "models" / "unet3d-brain-tissue"
REFERENCE_BF16_GFLOPS = 873.0


def ours(segmenter: Segmenter, path: Path, out: Path) -> np.ndarray:
    global last_mode
    prediction = segmenter.predict(path)
    prediction.save(out)
    last_mode = prediction.mode
    return prediction.mask


last_mode = ""  # the mode ours ran in (whole or sliding), for the report


def monai(model: torch.nn.Module, path: Path, out: Path, clip: tuple[float, float]) -> np.ndarray:
    from monai.inferers import sliding_window_inference

    volume = load_volume(path)
    x = torch.from_numpy(normalize_minmax(volume.data, clip))[None, None]
    with torch.inference_mode():
        logits = sliding_window_inference(x, (128, 128, 128), 1, model, overlap=0.25, mode="gaussian")
    mask = logits[0].argmax(0).to(torch.uint8).numpy()
    save_mask(mask, volume, out)
    return mask


def _precision(segmenter: Segmenter) -> str:
    from unet3d.device import default_precision

    return segmenter.precision if segmenter.precision != "auto" else default_precision(segmenter.device)


def reference_labels() -> np.ndarray:
    _, gm, wm = load_template()
    return tissue_labels(np.asanyarray(gm.dataobj) / 255.0, np.asanyarray(wm.dataobj) / 255.0)


def flop_floor(model: torch.nn.Module, shape: tuple[int, ...], precision: str) -> dict[str, Any]:
    from torch.utils.flop_counter import FlopCounterMode

    probe = 32
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 1, probe, probe, probe))
    padded = network_shape(shape, 16)
    flops = counter.get_total_flops() * math.prod(padded) / probe**3  # a fully convolutional net: linear in voxels
    rates = {}
    for dtype in (torch.bfloat16, torch.float32):
        a = torch.randn(4096, 4096, dtype=dtype)
        torch.mm(a, a)
        started = time.perf_counter()
        for _ in range(5):
            torch.mm(a, a)
        rates[dtype] = 5 * 2 * 4096**3 / (time.perf_counter() - started)
    rate = rates[torch.float32 if precision == "fp32" else torch.bfloat16]
    return {
        "gflop": flops / 1e9,
        "bf16_matmul_gflops": rates[torch.bfloat16] / 1e9,
        "fp32_matmul_gflops": rates[torch.float32] / 1e9,
        "floor_s": flops / rate,
        "floor_precision": precision,
        "padded_shape": list(padded),
    }


def peak_rss_mb() -> float:
    """This process's peak RSS. ru_maxrss would be wrong here: Linux carries it over from the forking parent."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_kind() -> dict[str, Any]:
    """What the CPU is and whether it has native bf16 (the precision `auto` picks follows from it)."""
    from unet3d.device import cpu_has_bf16

    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    name = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")), "")
    flags = set(next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), []))
    return {
        "model": name,
        "avx2": "avx2" in flags,
        "avx512_bf16": "avx512_bf16" in flags,
        "amx_tile": "amx_tile" in flags,
        "native_bf16": cpu_has_bf16(),
    }


def child(kind: str, model_dir: str, out: Path, precision: str = "auto") -> dict[str, Any]:
    """One pipeline in a fresh process: its peak RSS is the pipeline's own."""
    if kind == "ct":
        return child_ct(model_dir, out)
    segmenter = Segmenter.from_pretrained(model_dir, device="cpu", precision=precision)
    t1 = template_dir() / T1_NAME
    started = time.perf_counter()
    if kind == "ours":
        ours(segmenter, t1, out / "ours.nii.gz")
    else:
        monai(segmenter.model, t1, out / "monai.nii.gz", segmenter.card.input.clip_percentiles or (0, 100))
    return {"seconds": time.perf_counter() - started, "peak_rss_mb": peak_rss_mb()}


def child_ct(model_dir: str, out: Path) -> dict[str, Any]:
    import nibabel as nib

    rng = np.random.default_rng(0)
    shape = (512, 512, 400)
    grid = np.ogrid[: shape[0], : shape[1], : shape[2]]
    body = ((grid[0] - 256) / 200.0) ** 2 + ((grid[1] - 256) / 160.0) ** 2 <= 1.0
    ct = np.where(body, rng.normal(40, 30, shape), -1000).astype(np.int16)
    path = out / "ct.nii.gz"
    nib.save(nib.Nifti1Image(ct, np.diag([0.8, 0.8, 1.0, 1.0])), path)
    del ct, body
    segmenter = Segmenter.from_pretrained(model_dir, device="cpu")
    started = time.perf_counter()
    prediction = segmenter.predict(path)
    prediction.save(out / "ct_mask.nii.gz")
    return {
        "seconds": time.perf_counter() - started,
        "mode": prediction.mode,
        "shape": list(shape),
        "peak_rss_mb": peak_rss_mb(),
    }


def run_child(kind: str, model_dir: str, out: Path, precision: str = "auto") -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", kind, "--model", model_dir, "--out", str(out)]
    command += ["--precision", precision]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(DEFAULT_MODEL), help="model directory (default: the shipped model)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each pipeline (default: 3)")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"], help="ours (default: auto)")
    parser.add_argument("--skip-ct", action="store_true", help="skip the synthetic 512×512×400 CT (about a minute)")
    parser.add_argument("--json", type=Path, default=None, help="also write the result to this file")
    parser.add_argument("--child", choices=["ours", "monai", "ct"], help=argparse.SUPPRESS)  # peak-RSS subprocesses
    parser.add_argument("--out", default="/tmp/unet3d-bench", help="scratch folder for the masks")
    args = parser.parse_args()
    out = Path(args.out)
    t1 = template_dir() / T1_NAME
    out.mkdir(parents=True, exist_ok=True)
    if args.child:
        print(json.dumps(child(args.child, args.model, out, args.precision)))
        return
    segmenter = Segmenter.from_pretrained(args.model, device="cpu", precision=args.precision)
    source = resolve_source(args.model)
    plain = load_unet(source).eval()  # the same weights, un-fused, fp32: what MONAI gets
    clip = segmenter.card.input.clip_percentiles or (0.0, 100.0)
    times: dict[str, list[float]] = {"ours": [], "monai": []}
    masks: dict[str, np.ndarray] = {}
    for _ in range(args.repeats):
        for name in ("ours", "monai"):
            started = time.perf_counter()
            mask = ours(segmenter, t1, out / "o.nii.gz") if name == "ours" else monai(plain, t1, out / "m.nii.gz", clip)
            times[name].append(time.perf_counter() - started)
            masks[name] = mask
    if _precision(segmenter) == "fp32":  # ours ran in fp32 already
        fp32_mask, fp32_seconds = masks["ours"], statistics.median(times["ours"])
    else:
        fp32 = Segmenter.from_pretrained(args.model, device="cpu", precision="fp32")
        started = time.perf_counter()
        fp32_mask = ours(fp32, t1, out / "f.nii.gz")
        fp32_seconds = time.perf_counter() - started
    reference = reference_labels()
    floor = flop_floor(plain, reference.shape, _precision(segmenter))
    median = {name: statistics.median(values) for name, values in times.items()}
    result: dict[str, Any] = {
        "volume": "MNI152 T1 197x233x189 1 mm",
        "threads": torch.get_num_threads(),
        "cpu": cpu_kind(),
        "ours_precision": _precision(segmenter),
        "ours_mode": last_mode,
        "seconds_median": {k: round(v, 3) for k, v in median.items()},
        "seconds_all": {k: [round(x, 3) for x in v] for k, v in times.items()},
        "speedup_vs_monai": round(median["monai"] / median["ours"], 2),
        "dice": {
            name: {"grey_matter": round(dice(m, reference, 1), 4), "white_matter": round(dice(m, reference, 2), 4)}
            for name, m in masks.items()
        },
        "mask_agreement": round(float((masks["ours"] == masks["monai"]).mean()), 5),
        "precision": {
            "default": _precision(segmenter),
            "fp32_seconds": round(fp32_seconds, 3),
            "bf16_vs_fp32_agreement": round(float((masks["ours"] == fp32_mask).mean()), 5),
        },
        "flop_floor": {k: round(v, 3) if isinstance(v, float) else v for k, v in floor.items()},
        "ours_over_floor": round(median["ours"] / floor["floor_s"], 2),
        # The reference rate for these 2 cores (notes/perf-measured.md); this machine may measure lower.
        "ours_over_floor_at_873_gflops": round(median["ours"] / (floor["gflop"] / REFERENCE_BF16_GFLOPS), 2),
        "peak_rss_mb": {
            kind: round(run_child(kind, args.model, out, args.precision)["peak_rss_mb"]) for kind in ("ours", "monai")
        },
    }
    if not args.skip_ct:
        result["ct_512x512x400"] = run_child("ct", args.model, out)
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
