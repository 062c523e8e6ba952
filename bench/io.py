"""NIfTI gzip I/O: inflating a volume and deflating its mask with Python's zlib and with ISA-L (python-isal), per level.

Usage: python bench/io.py [--volume api/examples/mni152_t1.nii.gz] [--repeats 5] [--json bench/results/io-cpu.json]

Reads the volume's gzip stream in 1 MiB chunks (as unet3d.nifti does) with each library; writes a 3-class uint8 mask of
the volume's grid at each level, checking that Python's own gzip reads every file back to the same bytes. Also times
`load_volume` and `save_mask` end to end (which use unet3d.compression). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from unet3d import load_volume  # noqa: E402
from unet3d.compression import GZIP_BACKEND, WRITE_LEVEL  # noqa: E402
from unet3d.io import mask_image, save_mask  # noqa: E402


def best_ms(run: Callable[[], Any], repeats: int) -> float:
    run()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return round(1000 * min(times), 2)


def inflate(stream_class: Any, payload: bytes) -> int:
    size = 0
    with stream_class(fileobj=io.BytesIO(payload), mode="rb") as stream:
        while chunk := stream.read(1 << 20):
            size += len(chunk)
    return size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--volume", type=Path, default=ROOT / "api" / "examples" / "mni152_t1.nii.gz")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    payload = args.volume.read_bytes()
    volume = load_volume(args.volume)
    data = volume.data
    mask = np.where(data > np.percentile(data, 80), 2, np.where(data > np.percentile(data, 60), 1, 0)).astype(np.uint8)
    raw = mask_image(mask, volume).to_bytes()
    result: dict[str, Any] = {
        "volume": f"{args.volume.name} {'x'.join(map(str, volume.shape))} ({len(payload)} bytes gzip)",
        "backend": GZIP_BACKEND,
        "write_level": WRITE_LEVEL,
        "inflate_ms": {"zlib": best_ms(lambda: inflate(gzip.GzipFile, payload), args.repeats)},
        "deflate_mask": {},
    }
    levels: list[tuple[str, Callable[[int], bytes]]] = [("zlib", lambda lv: gzip.compress(raw, lv, mtime=0))]
    try:
        from isal import igzip

        result["inflate_ms"]["isal"] = best_ms(lambda: inflate(igzip.IGzipFile, payload), args.repeats)
        levels.append(("isal", lambda lv: igzip.compress(raw, lv, mtime=0)))
    except ImportError:
        result["inflate_ms"]["isal"] = None
    for name, compress in levels:
        for level in (0, 1, 2, 3) if name == "isal" else (1, 6):
            out = compress(level)
            assert gzip.decompress(out) == raw, f"{name} level {level} did not round-trip"
            ms = best_ms(lambda c=compress, lv=level: c(lv), args.repeats)  # type: ignore[misc]
            result["deflate_mask"][f"{name}_{level}"] = {"ms": ms, "bytes": len(out)}
    with tempfile.TemporaryDirectory() as work:
        target = Path(work) / "mask.nii.gz"
        result["load_volume_ms"] = best_ms(lambda: load_volume(args.volume), args.repeats)
        result["save_mask_ms"] = best_ms(lambda: save_mask(mask, volume, target), args.repeats)
        result["save_mask_bytes"] = target.stat().st_size
        result["median_load_ms_check"] = round(
            1000 * statistics.median(best_ms(lambda: load_volume(target), 1) / 1000 for _ in range(3)), 2
        )
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
