"""Soak: a compressed day of mixed traffic against one real server, for a configurable number of minutes.

Usage: python bench/soak.py [--minutes 5] [--api-users 3] [--no-browser] [--model DIR] [--json OUT]

The server runs the shipped model as the image runs it (`unet3d serve`), with the per-client rate limit on, as on the
Space, and the hostile corpus's size caps. Six phases (night … late) set how often the real users come:
  - `--api-users` HTTP clients segment 64³ crops of the MNI152 T1 (every mask is checked against the one the same
    crop got when sent alone), a gradio_client user opens a session, segments a crop and closes it, and a person in
    Chromium (playwright, /usr/bin/chromium) uploads a crop, segments it, moves a slider and closes the tab;
    a real user who is told 429/503 waits Retry-After and sends again;
  - hostile visitors: waves of stalled and crawling uploads, the whole hostile corpus (tests/hostile_corpus.py), and
    bursts of requests past the rate limit.
Afterwards the server is left to settle and is stopped with SIGTERM. Targets: 0 answers with a 5xx status, every
real request served (p50/p95/p99 reported), every stalled or crawling upload cut off with 408, the bursts limited
with 429 + Retry-After, peak RSS under --rss-limit-mb and the final RSS near the baseline (1.25 × + 150 MB), no temp
files left, exit status 0. Prints one JSON object (and writes it to --json); exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import traffic
from load import DEFAULT_MODEL, DEFAULT_VOLUME, crops, rss_mb
from service import start_server

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from hostile_corpus import CAPS  # tests/ holds the corpus

SETTINGS = {
    **CAPS,
    "UNET3D_RATE_LIMIT": "10",
    "UNET3D_RATE_BURST": "60",
    "UNET3D_TRUSTED_PROXIES": "127.0.0.1",
    "UNET3D_UPLOAD_STALL_S": "3",
    "UNET3D_UPLOAD_MIN_RATE_KIB_S": "8",
    "UNET3D_MAX_UPLOADS": "32",
    "UNET3D_MAX_UPLOADS_PER_CLIENT": "4",
    "UNET3D_GRACEFUL_SHUTDOWN_S": "30",
}
SETTLED_RATIO, SETTLED_MARGIN_MB = 1.25, 150.0
IDLE_GAUGES = (
    "unet3d_uploads_in_flight",
    "unet3d_queue_depth",
    "unet3d_inference_in_progress",
    "unet3d_ui_session_bytes",
)


def gauges(url: str) -> dict[str, float]:
    lines = httpx.get(f"{url}/metrics", timeout=10).text.splitlines()
    return {line.split()[0]: float(line.split()[1]) for line in lines if line.startswith("unet3d_") and "{" not in line}


def attackers(url: str, day: traffic.Day, tally: traffic.Tally) -> None:
    """Bursts every 20 s; a wave of slow uploads in each phase; the hostile corpus in every other phase.

    Hostile traffic keeps no hours: its pace does not follow the phases."""
    waves: list[threading.Thread] = []
    while day.wait(20.0):
        traffic.burst(url, 80, tally)
        name, _ = day.phase()
        if len(waves) <= [phase for phase, _ in day.PHASES].index(name):  # this phase's wave has not come yet
            waves.append(threading.Thread(target=traffic.slow_wave, args=(url, len(waves), 12, 6, tally)))
            waves[-1].start()
            if len(waves) % 2 == 1:  # every other phase
                traffic.hostile_pass(url, tally)
    for wave in waves:
        wave.join(180)


def sample_rss(pid: int, day: traffic.Day, samples: list[float]) -> None:
    while not day.over.wait(1.0):
        samples.append(rss_mb(pid))


def warm_up(url: str, crop_path: Path, tally: traffic.Tally, browser: bool, downloads: Path) -> None:
    """One visit of each kind before the baseline: every worker thread and lazily built cache exists by then."""
    traffic.gradio_user(url, crop_path, traffic.Once(), tally, downloads)
    if browser:
        traffic.browser_user(url, crop_path, traffic.Once(), tally)


def run_day(args: argparse.Namespace, url: str, pid: int, workdir: Path) -> dict[str, Any]:
    payloads = crops(DEFAULT_VOLUME, 64, 8)
    crop_path = workdir / "crop.nii.gz"
    crop_path.write_bytes(payloads[0])
    with httpx.Client(base_url=url, timeout=300, headers={"X-Forwarded-For": "192.0.2.250"}) as alone:
        answers = [alone.post("/v1/predict", params={"return_binary": "true"}, files={"file": ("c.nii.gz", p)})
                   for p in payloads]  # fmt: skip
    expected = [traffic.mask_digest(a.content) for a in answers]
    warmup = traffic.Tally()
    warm_up(url, crop_path, warmup, args.browser, workdir / "downloads")
    time.sleep(20)  # the warm-up tabs close (heartbeat) and release their reviews
    baseline = rss_mb(pid)
    tally, day, samples = traffic.Tally(), traffic.Day(args.minutes), [baseline]
    visitors = [threading.Thread(target=traffic.api_user, args=(url, n, payloads, expected, day, tally))
                for n in range(args.api_users)]  # fmt: skip
    visitors.append(threading.Thread(target=traffic.gradio_user, args=(url, crop_path, day, tally, workdir / "dl")))
    if args.browser:
        visitors.append(threading.Thread(target=traffic.browser_user, args=(url, crop_path, day, tally)))
    visitors += [threading.Thread(target=attackers, args=(url, day, tally)),
                 threading.Thread(target=sample_rss, args=(pid, day, samples))]  # fmt: skip
    for visitor in visitors:
        visitor.start()
    time.sleep(args.minutes * 60)
    day.over.set()
    for visitor in visitors:
        visitor.join(600)
    settled = settle(url)
    time.sleep(15)  # the last tabs' heartbeats end; freed pages go back to the system
    return {"baseline": baseline, "samples": samples, "end": rss_mb(pid), "tally": tally, "warmup": warmup,
            "settled": settled}  # fmt: skip


def settle(url: str, timeout_s: float = 120.0) -> dict[str, float]:
    """The gauges once nothing is in flight and no tab holds a review (or after `timeout_s`)."""
    deadline = time.monotonic() + timeout_s
    while True:
        values = gauges(url)
        idle = all(values.get(name, 0) == 0 for name in IDLE_GAUGES)
        if idle or time.monotonic() > deadline:
            return values
        time.sleep(1.0)


def leftovers(workdir: Path) -> tuple[list[str], int]:
    """Temp files the server left: work folders in its TMPDIR and partial uploads in Gradio's folder; and how many
    empty `tmp…` files Gradio's File input left there (one per event: the server sweeps them every 10 minutes)."""
    found = [str(p.relative_to(workdir)) for p in (workdir / "tmp").iterdir()]
    gradio = list((workdir / "gradio").glob("tmp*"))
    found += [str(p.relative_to(workdir)) for p in gradio if p.stat().st_size > 0]
    return sorted(found), sum(1 for p in gradio if p.stat().st_size == 0)


def report(
    args: argparse.Namespace, day: dict[str, Any], left: tuple[list[str], int], code: int | None
) -> dict[str, Any]:
    tally: traffic.Tally = day["tally"]
    found = traffic.summary(tally)
    statuses = found["statuses"]
    server_errors = sum(n for kind in statuses.values() for status, n in kind.items() if int(status) >= 500)
    real = [statuses.get(kind, {}) for kind in ("api", "gradio", *(["browser"] if args.browser else []))]
    served = all(set(counts) <= {"200", "429", "503"} and counts.get("200", 0) > 0 for counts in real)
    peak, end, baseline = max(day["samples"]), day["end"], day["baseline"]
    slow = {**statuses.get("stalled", {}), **statuses.get("crawling", {})}
    return {
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "setup": {"minutes": args.minutes, "api_users": args.api_users, "browser": args.browser, "settings": SETTINGS},
        **found,
        "rss_mb": {"baseline": round(baseline, 1), "peak": round(peak, 1), "end": round(end, 1)},
        "settled_gauges": day["settled"],
        "temp_leftovers": left[0],
        "gradio_empty_files": left[1],
        "exit_code": code,
        "passed": {
            "no_5xx": server_errors == 0,
            "every_real_request_served": served and not found["problems"],
            "slow_uploads_cut_off_with_408": bool(slow) and set(slow) == {"408"},
            "bursts_limited_with_429": "429" in statuses.get("burst", {}),
            "rss_bounded": peak <= args.rss_limit_mb,
            "rss_back_near_baseline": end <= SETTLED_RATIO * baseline + SETTLED_MARGIN_MB,
            "no_temp_files_left": left[0] == [],
            "exit_0_on_sigterm": code == 0,
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0, help="how long the day lasts")
    parser.add_argument("--api-users", type=int, default=3)
    parser.add_argument("--no-browser", dest="browser", action="store_false", help="leave Chromium out")
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--rss-limit-mb", type=float, default=3000.0, help="the most RSS may reach")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    args.browser = args.browser and traffic.CHROMIUM.exists()
    workdir = Path(tempfile.mkdtemp(prefix="unet3d-soak-"))
    process, url = start_server(args.model, workdir, queue_size=8, own_tmpdir=True, settings=SETTINGS, serve=True)
    code = None
    try:
        day = run_day(args, url, process.pid, workdir)
        process.send_signal(signal.SIGTERM)
        code = process.wait(120)
        result = report(args, day, leftovers(workdir), code)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(30)
        shutil.rmtree(workdir, ignore_errors=True)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n", encoding="utf-8")
    return 0 if all(result["passed"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
