"""Service overhead and load: the library vs HTTP on the same file, 8 concurrent clients, UI render time.

Usage: python bench/server.py [--model DIR] [--volume FILE] [--repeats 3] [--clients 8] [--json OUT]

1. Library: `Segmenter.predict(path)` + `Prediction.save()` in this process.
2. HTTP: `POST /v1/predict?return_binary=true` of the same file against a real uvicorn process
   (UNET3D_MAX_CONCURRENCY=1, UNET3D_QUEUE_SIZE=--clients); the mask must equal the library's.
   One warm-up run each, then the two alternate (the machine is shared and noisy: trust the ratio of medians).
   Target: median HTTP time <= 1.15 x median library time.
3. Load: --clients concurrent clients, one request each, against the same server. Target: 0 errors and a
   peak server RSS (VmHWM, reset through /proc/PID/clear_refs) <= 1.5 x the single-request peak.
4. UI: server time to re-render the three views after a slider move (target <= 150 ms), from cached arrays.
Prints one JSON object (and writes it to --json).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import nibabel as nib
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from service import start_server  # noqa: E402  (bench/ is on sys.path when run as a script)

from api.ui.review import default_window, start_review  # noqa: E402
from api.ui.state import ViewInputs  # noqa: E402
from api.ui.views import write_views  # noqa: E402
from unet3d import Segmenter  # noqa: E402

DEFAULT_MODEL = ROOT / "models" / "unet3d-brain-tissue"
DEFAULT_VOLUME = ROOT / "api" / "examples" / "mni152_t1.nii.gz"


def library_run(segmenter: Segmenter, volume: Path, out: Path) -> tuple[float, Any]:
    started = time.perf_counter()
    prediction = segmenter.predict(volume)
    prediction.save(out)
    return time.perf_counter() - started, prediction


def post_volume(url: str, payload: bytes, name: str) -> tuple[float, httpx.Response]:
    started = time.perf_counter()
    response = httpx.post(
        f"{url}/v1/predict", params={"return_binary": "true"}, files={"file": (name, payload)}, timeout=900
    )
    return time.perf_counter() - started, response


def reset_peak_rss(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # resets VmHWM to the current RSS (Linux >= 4.0)


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc status")


def concurrent_load(url: str, payload: bytes, name: str, clients: int) -> tuple[list[float], list[int]]:
    latencies: list[float] = [0.0] * clients
    statuses: list[int] = [0] * clients
    barrier = threading.Barrier(clients)

    def client(i: int) -> None:
        barrier.wait()
        latencies[i], response = post_volume(url, payload, name)
        statuses[i] = response.status_code

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, statuses


def render_times(prediction: Any, workdir: Path, moves: int = 30) -> dict[str, float]:
    review = start_review(prediction, workdir / "review")
    low, high = default_window(review.layers.image)
    z_size = review.layers.shape[2]
    times = []
    for k in range(moves):
        inputs = ViewInputs(
            indices=((z_size // 4 + k) % z_size, 116, 98), window=high - low, level=(low + high) / 2, opacity=0.4,
            visible=tuple(c.name for c in review.classes[1:]), overlay="classes", crosshair=True,
        )  # fmt: skip
        started = time.perf_counter()
        write_views(review, inputs)
        times.append((time.perf_counter() - started) * 1000)
    review.close()
    return {"median_ms": round(statistics.median(times), 1), "p95_ms": round(sorted(times)[int(0.95 * moves)], 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="model directory (default: shipped)")
    parser.add_argument("--volume", type=Path, default=DEFAULT_VOLUME, help="volume to send (default: MNI152 T1)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of library and HTTP each (default: 3)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients in the load step (default: 8)")
    parser.add_argument("--json", type=Path, default=None, help="also write the result to this file")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="unet3d-bench-"))
    payload = args.volume.read_bytes()

    segmenter = Segmenter.from_pretrained(args.model)
    library_mask = workdir / "library_mask.nii.gz"
    process, url = start_server(args.model, workdir, queue_size=args.clients)
    try:
        # Warm-up both (first-call allocations, oneDNN kernel choice), then alternate: the machine is shared.
        library_run(segmenter, args.volume, library_mask)
        post_volume(url, payload, args.volume.name)
        library, http, masks = [], [], []
        reset_peak_rss(process.pid)
        for _ in range(args.repeats):
            elapsed, prediction = library_run(segmenter, args.volume, library_mask)
            library.append(elapsed)
            elapsed, response = post_volume(url, payload, args.volume.name)
            response.raise_for_status()
            http.append(elapsed)
            masks.append(response.content)
        single_peak = peak_rss_mb(process.pid)
        (workdir / "http_mask.nii.gz").write_bytes(masks[-1])
        same_mask = bool(
            np.array_equal(
                np.asarray(nib.load(workdir / "http_mask.nii.gz").dataobj), np.asarray(nib.load(library_mask).dataobj)
            )
        )
        reset_peak_rss(process.pid)
        started = time.perf_counter()
        latencies, statuses = concurrent_load(url, payload, args.volume.name, args.clients)
        load_wall = time.perf_counter() - started
        load_peak = peak_rss_mb(process.pid)
    finally:
        process.terminate()
        process.wait(30)
    report = {
        "machine": {"cpus": os.cpu_count(), "torch_threads": _torch_threads()},
        "volume": args.volume.name,
        "library_s": [round(t, 3) for t in library],
        "http_s": [round(t, 3) for t in http],
        "http_over_library": round(statistics.median(http) / statistics.median(library), 3),
        "http_mask_equals_library_mask": same_mask,
        "load": {
            "clients": args.clients,
            "errors": sum(1 for s in statuses if s != 200),
            "statuses": sorted(set(statuses)),
            "wall_s": round(load_wall, 2),
            "latency_s": {"min": round(min(latencies), 2), "max": round(max(latencies), 2)},
            "peak_rss_single_mb": round(single_peak, 1),
            "peak_rss_concurrent_mb": round(load_peak, 1),
            "peak_rss_ratio": round(load_peak / single_peak, 3),
        },
        "ui_render_three_views": render_times(prediction, workdir),
        "targets": {"http_over_library": 1.15, "errors": 0, "peak_rss_ratio": 1.5, "ui_render_ms": 150},
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n", encoding="utf-8")


def _torch_threads() -> int:
    import torch

    return int(torch.get_num_threads())


if __name__ == "__main__":
    main()
