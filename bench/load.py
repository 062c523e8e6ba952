"""Load: N requests from C concurrent clients against a real uvicorn process; errors, latency, memory, correctness.

Usage: python bench/load.py [--model DIR] [--volume FILE] [--size 64] [--inputs 8] [--requests 500] [--clients 8]
                            [--max-concurrency 1] [--queue-size 8] [--no-ui] [--json OUT]

On a GPU: `--size 0` sends whole 1 mm brains (the MNI152 T1 flipped eight ways), `--max-concurrency 4` lets the CPU
stages of some requests (reading, restoring, writing) run while the GPU works on another's.

The service runs the shipped brain-tissue model on real MRI: `--inputs` different 64³ crops of the MNI152 T1 at its
native 1 mm (a whole 1 mm brain takes ~3 s on 2 cores, so 500 of them would take 25 minutes; the model resamples to
1 mm, so a downsampled brain would cost the same). Each client sends the crops in turn, so requests running side
by side carry different inputs. Every answer is checked:
  - 0 responses with a 5xx status, except 503 with a Retry-After header (the queue was full; the client waits and
    the request counts as refused, not failed);
  - every mask equals the one the same input got when sent alone before the load (no cross-talk between requests);
  - RSS after the load <= 1.1 x RSS after a warm-up under the same concurrency (no leak), /metrics back to an
    empty queue, TMPDIR empty.
Prints one JSON object (and writes it to --json); exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import nibabel as nib
import numpy as np
from service import start_server  # bench/ is on sys.path when run as a script

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = ROOT / "models" / "unet3d-brain-tissue"
DEFAULT_VOLUME = ROOT / "api" / "examples" / "mni152_t1.nii.gz"
RSS_GROWTH_LIMIT = 1.1


def crops(volume: Path, size: int, count: int) -> list[bytes]:
    """`count` different size³ crops around the volume's centre, each a .nii.gz with its own correct affine; with
    `size` 0, the whole volume flipped along a different set of axes each time (up to 8 different inputs)."""
    image = nib.Nifti1Image.from_filename(volume)
    data = np.asanyarray(image.dataobj)
    if size <= 0:
        return [_flipped(data, image.affine, variant) for variant in range(count)]
    centre = np.array(data.shape[:3]) // 2 - size // 2
    rng = np.random.default_rng(0)
    payloads = []
    for _ in range(count):
        start = np.clip(centre + rng.integers(-size // 3, size // 3 + 1, 3), 0, np.array(data.shape[:3]) - size)
        box = tuple(slice(int(s), int(s) + size) for s in start)
        affine = image.affine.copy()
        affine[:3, 3] = image.affine[:3, :3] @ start + image.affine[:3, 3]
        crop = nib.Nifti1Image(np.ascontiguousarray(data[box]), affine)
        payloads.append(gzip.compress(crop.to_bytes(), compresslevel=6))
    return payloads


def _flipped(data: np.ndarray, affine: np.ndarray, variant: int) -> bytes:
    axes = [axis for axis in range(3) if variant >> axis & 1]
    moved = affine.copy()
    for axis in axes:  # voxel i of the flipped array is voxel n-1-i of the original
        flip = np.eye(4)
        flip[axis, axis], flip[axis, 3] = -1, data.shape[axis] - 1
        moved = moved @ flip
    flipped = np.ascontiguousarray(np.flip(data, axes) if axes else data)
    return gzip.compress(nib.Nifti1Image(flipped, moved).to_bytes(), compresslevel=1)


def mask_digest(payload: bytes) -> str:
    """SHA-256 of the mask's voxels (the gzip bytes may legitimately differ)."""
    image = nib.Nifti1Image.from_bytes(gzip.decompress(payload))
    return hashlib.sha256(np.asanyarray(image.dataobj).tobytes()).hexdigest()


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/{pid}/status")


def predict(client: httpx.Client, payload: bytes, index: int) -> httpx.Response:
    return client.post(
        "/v1/predict", params={"return_binary": "true"}, files={"file": (f"crop{index}.nii.gz", payload)}
    )


@dataclass
class Tally:
    """What the clients saw, guarded by one lock."""

    latencies_s: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    wrong_masks: int = 0
    busy_without_retry_after: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, status: int, seconds: float, *, wrong: bool = False, missing_retry_after: bool = False) -> None:
        with self.lock:
            self.statuses[status] = self.statuses.get(status, 0) + 1
            self.latencies_s.append(seconds)
            self.wrong_masks += wrong
            self.busy_without_retry_after += missing_retry_after


@dataclass
class Measured:
    """Server-side figures taken around the load."""

    wall_s: float
    rss_warm_mb: float
    rss_after_mb: float
    peak_mb: float
    metrics: str
    leftovers: list[str]
    expected: list[str]
    warmup: Tally


def run_load(url: str, payloads: list[bytes], expected: list[str], requests: int, clients: int) -> Tally:
    """`clients` threads, each on its own keep-alive connection, share `requests` requests between them."""
    tally = Tally()
    counter = iter(range(requests))
    counter_lock = threading.Lock()
    barrier = threading.Barrier(clients)

    def client(number: int) -> None:
        with httpx.Client(base_url=url, timeout=600) as session:
            barrier.wait()
            while True:
                with counter_lock:
                    taken = next(counter, None)
                if taken is None:
                    return
                index = (taken + number) % len(payloads)
                started = time.perf_counter()
                response = predict(session, payloads[index], index)
                elapsed = time.perf_counter() - started
                if response.status_code == 200:
                    tally.record(200, elapsed, wrong=mask_digest(response.content) != expected[index])
                    continue
                retry_after = response.headers.get("retry-after")
                tally.record(response.status_code, elapsed, missing_retry_after=retry_after is None)
                if response.status_code == 503 and retry_after is not None:
                    time.sleep(min(float(retry_after), 5.0))

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return tally


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--volume", type=Path, default=DEFAULT_VOLUME)
    parser.add_argument("--size", type=int, default=64, help="edge of the cubic crops, in voxels (0: whole volumes)")
    parser.add_argument("--no-ui", action="store_true", help="serve the HTTP API alone (api.main:create_api_app)")
    parser.add_argument("--inputs", type=int, default=8, help="different crops")
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--max-concurrency", type=int, default=1, help="UNET3D_MAX_CONCURRENCY")
    parser.add_argument("--queue-size", type=int, default=8, help="UNET3D_QUEUE_SIZE")
    parser.add_argument("--warmup", type=int, default=48, help="concurrent requests before the RSS baseline")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="unet3d-load-"))
    payloads = crops(args.volume, args.size, args.inputs)
    process, url = start_server(
        args.model,
        workdir,
        max_concurrency=args.max_concurrency,
        queue_size=args.queue_size,
        own_tmpdir=True,
        ui=not args.no_ui,
    )
    try:
        with httpx.Client(base_url=url, timeout=600) as session:
            alone = [predict(session, payload, i) for i, payload in enumerate(payloads)]
            assert all(r.status_code == 200 for r in alone), [r.text for r in alone if r.status_code != 200]
            expected = [mask_digest(r.content) for r in alone]
        # Warm up under the same concurrency: every inference thread and its malloc arena exist before the baseline.
        warmup = run_load(url, payloads, expected, args.warmup, args.clients)
        time.sleep(1.0)
        rss_warm = rss_mb(process.pid)
        started = time.perf_counter()
        tally = run_load(url, payloads, expected, args.requests, args.clients)
        wall_s = time.perf_counter() - started
        time.sleep(1.0)  # let the last requests' folders and buffers go
        measured = Measured(
            wall_s=wall_s,
            rss_warm_mb=rss_warm,
            rss_after_mb=rss_mb(process.pid),
            peak_mb=rss_mb(process.pid, "VmHWM"),
            metrics=httpx.get(f"{url}/metrics").text,
            leftovers=sorted(str(p.relative_to(workdir)) for p in (workdir / "tmp").rglob("*")),
            expected=expected,
            warmup=warmup,
        )
    finally:
        process.terminate()
        process.wait(30)
        shutil.rmtree(workdir, ignore_errors=True)
    report = summarise(args, tally, measured)
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n", encoding="utf-8")
    return 0 if all(report["passed"].values()) else 1


def summarise(args: argparse.Namespace, tally: Tally, measured: Measured) -> dict[str, Any]:
    """The JSON report, with one pass/fail entry per target."""
    m = measured
    drained = "unet3d_queue_depth 0.0" in m.metrics and "unet3d_inference_in_progress 0.0" in m.metrics
    server_errors = sum(n for status, n in tally.statuses.items() if status >= 500 and status != 503)
    ok = tally.statuses.get(200, 0)
    return {
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "setup": {
            "model": str(args.model.relative_to(ROOT) if args.model.is_relative_to(ROOT) else args.model),
            "inputs": f"{args.inputs} different {f'{args.size}^3 crops' if args.size > 0 else 'flips'} of "
            f"{args.volume.name} (1 mm)",
            "ui": not args.no_ui,
            "distinct_masks": len(set(m.expected)),
            "requests": args.requests,
            "clients": args.clients,
            "max_concurrency": args.max_concurrency,
            "queue_size": args.queue_size,
        },
        "warmup_statuses": {str(k): v for k, v in sorted(m.warmup.statuses.items())},
        "statuses": {str(k): v for k, v in sorted(tally.statuses.items())},
        "wall_s": round(m.wall_s, 1),
        "throughput_rps": round(ok / m.wall_s, 2),
        "latency_ms": {
            "p50": round(percentile(tally.latencies_s, 50) * 1000, 1),
            "p95": round(percentile(tally.latencies_s, 95) * 1000, 1),
            "p99": round(percentile(tally.latencies_s, 99) * 1000, 1),
            "max": round(max(tally.latencies_s) * 1000, 1),
            "mean": round(statistics.fmean(tally.latencies_s) * 1000, 1),
        },
        "rss_mb": {
            "after_warmup": round(m.rss_warm_mb, 1),
            "after_load": round(m.rss_after_mb, 1),
            "ratio": round(m.rss_after_mb / m.rss_warm_mb, 3),
            "peak": round(m.peak_mb, 1),
        },
        "wrong_masks": tally.wrong_masks + m.warmup.wrong_masks,
        "tmpdir_leftovers": m.leftovers,
        "passed": {
            "no_5xx_but_503_with_retry_after": server_errors == 0 and tally.busy_without_retry_after == 0,
            "every_mask_matches_its_sequential_result": tally.wrong_masks + m.warmup.wrong_masks == 0
            and len(set(m.expected)) == args.inputs,
            "rss_after_within_1.1x_warm": m.rss_after_mb <= RSS_GROWTH_LIMIT * m.rss_warm_mb,
            "queue_drained": drained,
            "no_temp_files_left": m.leftovers == [],
            "all_requests_answered": sum(tally.statuses.values()) == args.requests,
        },
    }


if __name__ == "__main__":
    sys.exit(main())
