"""UI sessions and memory: RSS of the server while N gradio_client sessions hold a review each, and after they close.

Usage: python bench/sessions.py [--sessions 4] [--after-s 30] [--model DIR] [--setting NAME=VALUE ...] [--json OUT]

Each session is its own gradio_client `Client` (its own tab on the server, with the heartbeat a browser keeps) that
segments the MNI152 T1 example through `/segment` (~8.7 M voxels: the tab then holds a ~70 MB review). The server's
RSS is read from /proc: idle after startup, with every session open, and at intervals after every client closed
(a closed tab's arrays are released when its heartbeat ends). Passes when RSS `--after-s` seconds after the last
close is within 1.25 × the idle figure + 150 MB (what the first prediction keeps for good: torch's thread pools and
the model's working buffers), and /metrics says the UI holds no session memory any more.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from gradio_client import Client, handle_file
from load import DEFAULT_MODEL, DEFAULT_VOLUME, rss_mb
from service import start_server

SETTLED_MARGIN_MB = 150.0
SETTLED_RATIO = 1.25


def metric(url: str, name: str) -> float:
    """One gauge's value from /metrics (NaN when the server has no such gauge, e.g. an older version)."""
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        if line.startswith(f"{name} "):
            return float(line.split()[1])
    return float("nan")


def open_sessions(url: str, count: int, volume: Path) -> list[Client]:
    """`count` clients, each with a segmented review on the server."""
    clients = []
    for _ in range(count):
        client = Client(f"{url}/ui/", verbose=False)
        client.predict(handle_file(str(volume)), api_name="/segment")
        clients.append(client)
    return clients


def measure(args: argparse.Namespace, url: str, pid: int) -> dict[str, Any]:
    time.sleep(2.0)
    idle = rss_mb(pid)
    clients = open_sessions(url, args.sessions, args.volume)
    held_bytes = metric(url, "unet3d_ui_session_bytes")
    with_sessions = rss_mb(pid)
    for client in clients:
        client.close()
    closed_at = time.monotonic()
    after: dict[str, float] = {}
    for mark in sorted({5.0, args.after_s / 2, args.after_s}):
        time.sleep(max(mark - (time.monotonic() - closed_at), 0))
        after[f"{mark:g}s"] = round(rss_mb(pid), 1)
    released = metric(url, "unet3d_ui_session_bytes")
    settled = after[f"{args.after_s:g}s"]
    return {
        "sessions": args.sessions,
        "rss_mb": {"idle": round(idle, 1), "with_sessions": round(with_sessions, 1), "after_close": after},
        "ui_session_mb": {"held": round(held_bytes / 2**20, 1), "after_close": round(released / 2**20, 1)},
        "passed": {
            "rss_back_near_idle": settled <= SETTLED_RATIO * idle + SETTLED_MARGIN_MB,
            "session_memory_released": released == 0,
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=4)
    parser.add_argument("--after-s", type=float, default=30.0, help="when RSS is judged after the last close")
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--volume", type=Path, default=DEFAULT_VOLUME)
    parser.add_argument("--setting", action="append", default=[], help="NAME=VALUE for the server's environment")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    settings = dict(item.split("=", 1) for item in args.setting)
    workdir = Path(tempfile.mkdtemp(prefix="unet3d-sessions-"))
    process, url = start_server(args.model, workdir, own_tmpdir=True, settings=settings)
    try:
        report = {"settings": settings, **measure(args, url, process.pid)}
    finally:
        process.terminate()
        process.wait(60)
        shutil.rmtree(workdir, ignore_errors=True)
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n", encoding="utf-8")
    return 0 if all(report["passed"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
