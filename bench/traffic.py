"""The visitors of bench/soak.py: real users (HTTP API, gradio_client, a browser) and hostile ones (stalled and
crawling uploads, the hostile corpus, bursts past the rate limit). Each records what it got in a shared `Tally`.

Every visitor has its own X-Forwarded-For address (the soak server trusts 127.0.0.1 as a proxy), so the per-client
limits see them as the different people they stand for.
"""

from __future__ import annotations

import gzip
import hashlib
import select
import socket
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import nibabel as nib
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from hostile_corpus import CORPUS  # tests/ holds the corpus; bench/ may import everything

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"]
PART_HEAD = b'--b\r\nContent-Disposition: form-data; name="file"; filename="scan.nii.gz"\r\n\r\n'
RETRIED = {429, 503}  # a real client waits Retry-After and sends again


@dataclass
class Tally:
    """What every visitor got: statuses per kind, and the latency of every real request served."""

    statuses: dict[str, Counter[int]] = field(default_factory=lambda: defaultdict(Counter))
    served_s: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    problems: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, kind: str, status: int, seconds: float | None = None) -> None:
        with self.lock:
            self.statuses[kind][status] += 1
            if seconds is not None:
                self.served_s[kind].append(seconds)

    def problem(self, text: str) -> None:
        with self.lock:
            self.problems.append(text)


class Day:
    """A compressed day: phases of different traffic, `intensity` scaling how often the real users come."""

    PHASES = (("night", 0.25), ("morning", 0.7), ("peak", 1.0), ("afternoon", 0.8), ("evening", 1.0), ("late", 0.4))

    def __init__(self, minutes: float) -> None:
        self.started, self.length_s = time.monotonic(), minutes * 60
        self.over = threading.Event()

    def phase(self) -> tuple[str, float]:
        elapsed = (time.monotonic() - self.started) / self.length_s
        return self.PHASES[min(int(elapsed * len(self.PHASES)), len(self.PHASES) - 1)]

    def pause(self, base_s: float) -> bool:
        """Wait `base_s` scaled by the phase's intensity; False once the day is over."""
        return not self.over.wait(base_s / self.phase()[1])

    def wait(self, seconds: float) -> bool:
        """Wait `seconds` whatever the phase; False once the day is over."""
        return not self.over.wait(seconds)


class Once(Day):
    """A day of one visit, at once (the warm-up)."""

    def __init__(self) -> None:
        super().__init__(minutes=1.0)
        self.visits = 0

    def pause(self, base_s: float) -> bool:
        self.visits += 1
        return self.visits == 1


def mask_digest(payload: bytes) -> str:
    image = nib.Nifti1Image.from_bytes(gzip.decompress(payload))
    return hashlib.sha256(np.asanyarray(image.dataobj).tobytes()).hexdigest()


def until_served(kind: str, tally: Tally, send: Callable[[], httpx.Response]) -> httpx.Response:
    """Send until the answer is not 'retry later' (429/503 with Retry-After); record every answer."""
    while True:
        started = time.perf_counter()
        answer = send()
        retry_after = answer.headers.get("retry-after")
        if answer.status_code in RETRIED and retry_after:
            tally.record(kind, answer.status_code)
            time.sleep(min(float(retry_after), 10))
            continue
        tally.record(kind, answer.status_code, time.perf_counter() - started)
        return answer


def api_user(url: str, number: int, crops: list[bytes], expected: list[str], day: Day, tally: Tally) -> None:
    """Segments the crops in turn over HTTP; checks every mask against its sequential result."""
    headers = {"X-Forwarded-For": f"192.0.2.{number}"}
    with httpx.Client(base_url=url, timeout=300, headers=headers) as client:
        index = number
        while day.pause(1.0):
            index = (index + 1) % len(crops)

            def send(i: int = index) -> httpx.Response:
                files = {"file": (f"crop{i}.nii.gz", crops[i])}
                return client.post("/v1/predict", params={"return_binary": "true"}, files=files)

            answer = until_served("api", tally, send)
            if answer.status_code != 200:
                tally.problem(f"api user {number}: {answer.status_code} {answer.text[:200]}")
            elif mask_digest(answer.content) != expected[index]:
                tally.problem(f"api user {number}: crop {index} got another mask than when it was sent alone")


def gradio_user(url: str, crop: Path, day: Day, tally: Tally, downloads: Path) -> None:
    """Opens a session (its own tab on the server), segments a crop through /segment, closes it."""
    from gradio_client import Client, handle_file

    while day.pause(6.0):
        started = time.perf_counter()
        client = Client(f"{url}/ui/", verbose=False, headers={"X-Forwarded-For": "192.0.2.50"},
                        download_files=str(downloads))  # fmt: skip
        try:
            mask, summary = client.predict(handle_file(str(crop)), api_name="/segment")
            ok = Path(mask).is_file() and summary["input_shape"] == [64, 64, 64]
            tally.record("gradio", 200 if ok else 500, time.perf_counter() - started)
        except Exception as e:  # any failure of a real user is a finding to report
            tally.record("gradio", 500)
            tally.problem(f"gradio user: {type(e).__name__}: {str(e)[:200]}")
        finally:
            client.close()


def browser_user(url: str, crop: Path, day: Day, tally: Tally) -> None:
    """A person in Chromium: opens the page, uploads a crop, segments it, moves a slider, closes the tab."""
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        while day.pause(20.0):
            context = browser.new_context(viewport={"width": 1440, "height": 1000},
                                          extra_http_headers={"X-Forwarded-For": "192.0.2.60"})  # fmt: skip
            page = context.new_page()
            started = time.perf_counter()
            try:
                page.goto(f"{url}/ui/", wait_until="load")
                page.locator("#volume-input input[type=file]").set_input_files(str(crop))
                page.locator("#segment-btn").click()
                expect(page.locator("#mask-output a[href*='_mask.nii.gz']")).to_be_visible(timeout=300_000)
                tally.record("browser", 200, time.perf_counter() - started)
                slider = page.locator("#axial-slider input[type=range]").bounding_box() or {}
                before = page.locator("#axial-view img").get_attribute("src")
                page.mouse.click(slider["x"] + slider["width"] * 0.3, slider["y"] + slider["height"] / 2)
                expect(page.locator("#axial-view img")).not_to_have_attribute("src", before or "", timeout=60_000)
            except Exception as e:  # as for the gradio user
                tally.record("browser", 500)
                tally.problem(f"browser user: {type(e).__name__}: {str(e)[:200]}")
            finally:
                context.close()
        browser.close()


class RawUpload:
    """A POST /v1/predict whose body is sent by hand over its own socket."""

    def __init__(self, url: str, client: str, length: int = 200_000) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=60)
        self.sock.sendall(
            f"POST /v1/predict HTTP/1.1\r\nHost: {host}\r\nContent-Length: {length}\r\nX-Forwarded-For: {client}\r\n"
            "Content-Type: multipart/form-data; boundary=b\r\n\r\n".encode()
            + PART_HEAD
        )

    def answered(self) -> bool:
        return bool(select.select([self.sock], [], [], 0)[0])

    def status(self) -> int:
        line = self.sock.recv(4096).split(b"\r\n", 1)[0].split()
        self.sock.close()
        return int(line[1]) if len(line) > 1 else 0


def slow_wave(url: str, wave: int, stalled: int, crawling: int, tally: Tally) -> None:
    """`stalled` uploads that stop after their first bytes and `crawling` ones that trickle 1 KiB/s, from as many
    addresses; waits until the server has cut every one off."""
    stall = [RawUpload(url, f"10.{wave % 250}.0.{i}") for i in range(stalled)]
    crawl = [RawUpload(url, f"10.{wave % 250}.1.{i}") for i in range(crawling)]
    deadline = time.monotonic() + 120
    while crawl and time.monotonic() < deadline:
        for upload in list(crawl):
            if upload.answered():
                tally.record("crawling", upload.status())
                crawl.remove(upload)
            else:
                try:
                    upload.sock.sendall(b"x" * 200)
                except OSError:
                    tally.record("crawling", upload.status())
                    crawl.remove(upload)
        time.sleep(0.2)
    for upload in stall:
        upload.sock.settimeout(120)
        tally.record("stalled", upload.status())


def hostile_pass(url: str, tally: Tally) -> None:
    """The whole hostile corpus once; every answer must be the status the corpus prescribes."""
    with httpx.Client(base_url=url, timeout=120, headers={"X-Forwarded-For": "203.0.113.66"}) as client:
        for case in CORPUS:
            answer = until_served("hostile", tally, lambda case=case: client.post(
                "/v1/predict", params=case.params, content=case.body(), headers=case.headers()))  # fmt: skip
            if answer.status_code != case.status:
                tally.problem(f"hostile {case.id}: {answer.status_code} instead of {case.status}")


def burst(url: str, requests: int, tally: Tally) -> None:
    """`requests` requests at once from one address: past its bucket, 429 with Retry-After."""
    with httpx.Client(base_url=url, timeout=30, headers={"X-Forwarded-For": "198.51.100.200"}) as client:
        for _ in range(requests):
            answer = client.get("/v1/model")
            tally.record("burst", answer.status_code)
            if answer.status_code == 429 and not answer.headers.get("retry-after"):
                tally.problem("burst: a 429 without Retry-After")


def summary(tally: Tally) -> dict[str, Any]:
    """Statuses per kind and the latency percentiles of what real users were served."""
    latency = {
        kind: {f"p{q}": round(float(np.percentile(values, q)) * 1000, 1) for q in (50, 95, 99)} | {"n": len(values)}
        for kind, values in tally.served_s.items()
    }
    statuses = {kind: dict(sorted((str(k), v) for k, v in counts.items())) for kind, counts in tally.statuses.items()}
    return {"statuses": statuses, "served_ms": latency, "problems": tally.problems[:50]}
