"""Hostile behaviour against a real uvicorn over real sockets: stalled and crawling uploads, upload bounds, the rate
limit, the temp quota, Gradio's upload route, the start-up sweep, readiness and SIGTERM (docs/hardening.md)."""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

SERVE = [str(Path(sys.executable).with_name("unet3d")), "serve"]
STALL_S = 1.5
GUARDED = {
    "UNET3D_MAX_CONCURRENCY": "1",
    "UNET3D_QUEUE_SIZE": "0",
    "UNET3D_UPLOAD_STALL_S": str(STALL_S),
    "UNET3D_UPLOAD_MIN_RATE_KIB_S": "8",
    "UNET3D_MAX_UPLOADS": "6",
    "UNET3D_MAX_UPLOADS_PER_CLIENT": "3",
    "UNET3D_TRUSTED_PROXIES": "127.0.0.1",
    "UNET3D_TEMP_QUOTA_MB": "32",
}
PART_HEAD = b'--b\r\nContent-Disposition: form-data; name="file"; filename="scan.nii.gz"\r\n\r\n'


@pytest.fixture(scope="module")
def guarded(launch_server, tiny_model_dir: Path) -> Iterator:
    """One slot, no queue, short stall time, few upload places, a 32 MiB temp quota; 127.0.0.1 is a trusted proxy, so
    each test client can be its own visitor through X-Forwarded-For."""
    server = launch_server({**GUARDED, "UNET3D_MODEL": str(tiny_model_dir)}, name="guarded")
    yield server
    server.stop()


class RawUpload:
    """A POST whose body is sent by hand, over its own socket."""

    def __init__(self, server, path: str = "/v1/predict", *, length: int = 100_000, client: str | None = None) -> None:
        host, port = server.url.removeprefix("http://").split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=30)
        self.answered: tuple[int, dict[str, str], str] | None = None
        forwarded = f"X-Forwarded-For: {client}\r\n" if client else ""
        self.sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {length}\r\n{forwarded}"
            "Content-Type: multipart/form-data; boundary=b\r\n\r\n".encode()
        )

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def crawl(self, data: bytes) -> bool:
        """Send `data` unless the server has answered already (then stop: the answer would be lost to a reset);
        returns whether it is still sending."""
        if self.answered is None and select.select([self.sock], [], [], 0)[0]:
            self.answered = self.answer()
        if self.answered is not None:
            return False
        self.sock.sendall(data)
        return True

    def answer(self, timeout: float = 30.0) -> tuple[int, dict[str, str], str]:
        """The status, headers and body of the server's answer (it may come before the body was all sent)."""
        if self.answered is not None:
            return self.answered
        self.sock.settimeout(timeout)
        data = b""
        while b"\r\n\r\n" not in data or len(data) < data.index(b"\r\n\r\n") + 4 + _length(data):
            chunk = self.sock.recv(65536)
            if not chunk:
                break
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        return int(lines[0].split()[1]), headers, body.decode("utf-8", "replace")

    def close(self) -> None:
        self.sock.close()


def _length(data: bytes) -> int:
    head = data.partition(b"\r\n\r\n")[0].decode("latin-1").lower()
    for line in head.split("\r\n"):
        if line.startswith("content-length:"):
            return int(line.split(":")[1])
    return 0


def stalled(server, client: str | None = None, path: str = "/v1/predict", length: int = 100_000) -> RawUpload:
    upload = RawUpload(server, path, length=length, client=client)
    upload.send(PART_HEAD + b"\x1f\x8b")  # the headers and two bytes of a .nii.gz, then nothing
    return upload


def settled(server, timeout: float = 10.0) -> str:
    """/metrics once no upload is in flight and the temp folders are empty."""
    deadline = time.monotonic() + timeout
    while True:
        text = httpx.get(f"{server.url}/metrics").text
        idle = "unet3d_uploads_in_flight 0.0" in text and "unet3d_inference_in_progress 0.0" in text
        if (idle and server.temp_files() == [] and gradio_leftovers(server) == []) or time.monotonic() > deadline:
            return text
        time.sleep(0.1)


def gradio_leftovers(server) -> list[str]:
    """Files in Gradio's upload folder that are not a finished upload (its `tmp…` names are uploads in progress)."""
    folder = server.tmp / "gradio"
    return sorted(p.name for p in folder.glob("tmp*")) if folder.is_dir() else []


def predict(server, nifti, *, client: str | None = None, shape=(24, 20, 16), timeout: float = 60) -> httpx.Response:
    headers = {"X-Forwarded-For": client} if client else {}
    payload = nifti.encode(nifti.blob(shape))
    return httpx.post(f"{server.url}/v1/predict", files={"file": ("t1.nii.gz", payload)}, headers=headers,
                      timeout=timeout)  # fmt: skip


# ---- slow bodies ----------------------------------------------------------------------------------------------------


def test_a_stalled_upload_is_cut_off_with_408_and_leaves_no_file(guarded):
    upload = stalled(guarded, client="203.0.113.1")
    started = time.monotonic()
    status, _, body = upload.answer()
    upload.close()
    assert status == 408
    assert STALL_S - 0.2 < time.monotonic() - started < STALL_S + 3
    detail = json.loads(body)["detail"]
    assert "nothing arrived for 1.5 s (UNET3D_UPLOAD_STALL_S)" in detail and "send it again" in detail
    settled(guarded)
    assert guarded.temp_files() == []


def test_a_crawling_upload_is_cut_off_with_408(guarded):
    upload = RawUpload(guarded, client="203.0.113.2")
    upload.send(PART_HEAD)
    started = time.monotonic()
    while upload.crawl(b"x" * 100):  # 100 bytes every 0.1 s: 1 KiB/s, never silent for long, far below 8 KiB/s
        assert time.monotonic() - started < 10, "never cut off"
        time.sleep(0.1)
    status, headers, body = upload.answer()
    upload.close()
    assert status == 408 and headers["connection"] == "close"  # so that it cannot go on sending either
    assert STALL_S - 0.2 < time.monotonic() - started < STALL_S + 3
    assert "below the 8 KiB/s the server needs (UNET3D_UPLOAD_MIN_RATE_KIB_S)" in json.loads(body)["detail"]
    settled(guarded)
    assert guarded.temp_files() == []


def test_a_stalled_upload_holds_no_slot_so_a_real_request_is_served(guarded, nifti):
    """One slot and no queue: before, nine stalled uploads took every slot and real requests got 503."""
    uploads = [stalled(guarded, client=f"198.51.100.{i}") for i in range(3)]
    time.sleep(0.2)
    answer = predict(guarded, nifti, client="192.0.2.10")
    health = httpx.get(f"{guarded.url}/health", timeout=2)
    statuses = [upload.answer()[0] for upload in uploads]
    for upload in uploads:
        upload.close()
    assert answer.status_code == 200, answer.text
    assert health.status_code == 200
    assert statuses == [408, 408, 408]


def test_gradios_upload_route_gets_the_same_limits_and_keeps_no_partial_file(guarded):
    upload = RawUpload(guarded, "/ui/gradio_api/upload", length=900_000, client="203.0.113.3")
    try:
        upload.send(b'--b\r\nContent-Disposition: form-data; name="files"; filename="t1.nii.gz"\r\n\r\n')
        deadline = time.monotonic() + 20
        while not gradio_leftovers(guarded):  # keep it coming until Gradio has its own temp file, half written
            assert time.monotonic() < deadline and upload.crawl(b"x" * 20_000), "Gradio never began the upload"
            time.sleep(0.1)
        status, headers, body = upload.answer()  # then nothing more: it stalls
    finally:
        upload.close()
    assert status == 408 and headers["content-type"] == "application/json"
    assert "UNET3D_UPLOAD_STALL_S" in json.loads(body)["detail"]
    settled(guarded)
    assert gradio_leftovers(guarded) == []


# ---- bounds ---------------------------------------------------------------------------------------------------------


def test_uploads_in_flight_are_bounded_per_client_then_in_total(guarded):
    held = [stalled(guarded, client="198.51.100.20") for _ in range(3)]
    over_client = stalled(guarded, client="198.51.100.20")
    held += [stalled(guarded, client=f"198.51.100.{30 + i}") for i in range(3)]
    over_total = stalled(guarded, client="198.51.100.40")
    per_client, per_client_headers, per_client_body = over_client.answer(timeout=5)
    total, total_headers, total_body = over_total.answer(timeout=5)
    assert per_client == 429 and int(per_client_headers["retry-after"]) >= 1
    assert "UNET3D_MAX_UPLOADS_PER_CLIENT" in json.loads(per_client_body)["detail"]
    assert total == 503 and int(total_headers["retry-after"]) >= 1
    assert "UNET3D_MAX_UPLOADS" in json.loads(total_body)["detail"]
    assert [upload.answer()[0] for upload in held] == [408] * 6  # the places come back when they are cut off
    for upload in [*held, over_client, over_total]:
        upload.close()
    settled(guarded)
    assert httpx.get(f"{guarded.url}/metrics").text.count("unet3d_uploads_in_flight 0.0") == 1


def test_an_upload_past_the_temp_quota_is_refused_before_a_byte_is_written(guarded):
    for path in ("/v1/predict", "/ui/gradio_api/upload"):
        upload = RawUpload(guarded, path, length=40 * 2**20, client="203.0.113.4")  # headers only: no body sent
        status, headers, body = upload.answer(timeout=5)
        upload.close()
        assert status == 507 and int(headers["retry-after"]) >= 1
        assert "UNET3D_TEMP_QUOTA_MB" in json.loads(body)["detail"] and "nothing was written" in body
    assert guarded.temp_files() == [] and gradio_leftovers(guarded) == []


def test_a_busy_server_still_answers_503_with_retry_after(guarded, nifti):
    """A real prediction holds the one slot (a 160³ volume takes the tiny model seconds): the next gets 503."""
    running: list[httpx.Response] = []
    worker = threading.Thread(target=lambda: running.append(predict(guarded, nifti, shape=(160, 160, 160))))
    worker.start()
    deadline = time.monotonic() + 30
    while "unet3d_inference_in_progress 1.0" not in httpx.get(f"{guarded.url}/metrics").text:
        assert time.monotonic() < deadline, "the prediction never started"
        time.sleep(0.02)
    busy = predict(guarded, nifti, client="192.0.2.11")
    worker.join(60)
    assert busy.status_code == 503 and int(busy.headers["retry-after"]) >= 1 and "busy" in busy.json()["detail"]
    assert running[0].status_code == 200


def test_ready_is_200_when_serving(guarded):
    assert httpx.get(f"{guarded.url}/ready").json() == {"status": "ready"}


# ---- rate limit and client identity ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rate_limited(launch_server, tiny_model_dir: Path) -> Iterator:
    """Two requests a second per client, bursts of five; no trusted proxy; started as the image starts it."""
    settings = {"UNET3D_MODEL": str(tiny_model_dir), "UNET3D_RATE_LIMIT": "2", "UNET3D_RATE_BURST": "5"}
    server = launch_server(settings, name="rate-limited", command=SERVE)
    yield server
    server.stop()


@pytest.mark.slow
def test_past_its_bucket_a_client_gets_429_with_retry_after_and_probes_never_do(rate_limited):
    with rate_limited.client() as client:
        answers = [client.get("/v1/model", headers={"X-Forwarded-For": f"192.0.2.{i}"}) for i in range(8)]
        probes = [client.get(path).status_code for _ in range(30) for path in ("/health", "/ready", "/metrics")]
    statuses = [a.status_code for a in answers]
    # the forwarded addresses change nothing: 127.0.0.1 is no trusted proxy, so it is one client
    assert statuses[:5] == [200] * 5 and 429 in statuses[5:]
    refused = next(a for a in answers if a.status_code == 429)
    assert 1 <= int(refused.headers["retry-after"]) <= 1
    assert "at most 2 per second (bursts of 5)" in refused.json()["detail"]
    assert set(probes) == {200}
    time.sleep(float(refused.headers["retry-after"]))
    assert httpx.get(f"{rate_limited.url}/v1/model").status_code == 200  # the bucket refills


# ---- start-up sweep -------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_startup_removes_the_leftovers_of_a_crash_and_keeps_a_live_neighbours(launch_server, tiny_model_dir, tmp_path):
    home = tmp_path / "server"
    tmp, gradio, data = home / "tmp", home / "gradio", home / "data"
    dead_pid = 2**22 + 12345  # above the kernel's pid_max: never a live process
    planted = {
        "dead request": tmp / f"unet3d-request-{dead_pid}-abcd1234" / "file.nii.gz",
        "old naming": tmp / "unet3d-ui-k3j2h1g0" / "t1_mask.nii.gz",
        "stale upload": gradio / ("ab" * 32) / "t1.nii.gz",
        "half upload": gradio / "tmpq1w2e3r4",
        "half write": data / "volumes" / f"3.nii.gz.tmp-{dead_pid}",
    }
    kept = {
        "live neighbour": tmp / f"unet3d-request-{os.getpid()}-zzzz9999" / "file.nii.gz",
        "recent upload": gradio / ("cd" * 32) / "t2.nii.gz",
        "someone else's": tmp / "notes.txt",
        "finished write": data / "volumes" / "3.nii.gz",
    }
    for path in [*planted.values(), *kept.values()]:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * 1000)
    two_hours_ago = time.time() - 7200
    for path in (gradio / ("ab" * 32), gradio / "tmpq1w2e3r4"):
        os.utime(path, (two_hours_ago, two_hours_ago))
    server = launch_server({"UNET3D_MODEL": str(tiny_model_dir)}, home=home)
    server.stop()
    assert [name for name, path in planted.items() if path.exists()] == []
    assert [name for name, path in kept.items() if not path.exists()] == []
    assert "removed 5 leftover temp file(s) of an earlier run" in server.logs()


# ---- restarts -------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_sigterm_mid_prediction_drains_finishes_in_flight_work_and_exits_0(launch_server, tiny_model_dir, nifti):
    """SIGTERM while a prediction runs and another waits: /ready turns 503 at once, the waiting one and new ones get
    503 + Retry-After, the running one completes, and the process exits 0 within the grace period."""
    settings = {"UNET3D_MODEL": str(tiny_model_dir), "UNET3D_MAX_CONCURRENCY": "1", "UNET3D_QUEUE_SIZE": "2",
                "UNET3D_DRAIN_S": "2", "UNET3D_GRACEFUL_SHUTDOWN_S": "30"}  # fmt: skip
    server = launch_server(settings, name="sigterm", command=SERVE)
    answers: dict[str, httpx.Response] = {}
    running = threading.Thread(target=lambda: answers.update(running=predict(server, nifti, shape=(160, 160, 160))))
    running.start()
    deadline = time.monotonic() + 30
    while "unet3d_inference_in_progress 1.0" not in httpx.get(f"{server.url}/metrics").text:
        assert time.monotonic() < deadline, "the prediction never started"
        time.sleep(0.02)
    queued = threading.Thread(target=lambda: answers.update(queued=predict(server, nifti)))
    queued.start()
    while "unet3d_queue_depth 1.0" not in httpx.get(f"{server.url}/metrics").text:
        time.sleep(0.02)
    server.process.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    ready = httpx.get(f"{server.url}/ready")
    health = httpx.get(f"{server.url}/health")
    new = predict(server, nifti)
    queued.join(10)
    running.join(60)
    code = server.process.wait(60)
    assert ready.status_code == 503 and int(ready.headers["retry-after"]) >= 1
    assert health.status_code == 200  # alive while it drains: no restart loop
    for refused in (new, answers["queued"]):
        assert refused.status_code == 503 and "restarting" in refused.json()["detail"]
        assert int(refused.headers["retry-after"]) >= 1
    assert answers["running"].status_code == 200, answers["running"].text
    assert code == 0, server.logs()
    assert "Traceback" not in server.logs()


# ---- the attack of the issue ----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_50_stalled_and_20_crawling_uploads_while_real_requests_keep_getting_200(launch_server, tiny_model_dir, nifti):
    bounds = {"UNET3D_MAX_UPLOADS": "100", "UNET3D_MAX_UPLOADS_PER_CLIENT": "2", "UNET3D_TEMP_QUOTA_MB": "64"}
    settings = {**GUARDED, **bounds, "UNET3D_MODEL": str(tiny_model_dir), "UNET3D_UPLOAD_STALL_S": "4"}
    server = launch_server(settings, name="attacked")
    attackers = [stalled(server, client=f"10.9.0.{i}") for i in range(50)]
    crawlers = [RawUpload(server, client=f"10.9.1.{i}") for i in range(20)]
    stop = threading.Event()

    def crawl() -> None:  # until each crawler has been answered
        for crawler in crawlers:
            crawler.send(PART_HEAD)
        while not stop.is_set() and any([crawler.crawl(b"x" * 200) for crawler in crawlers]):  # noqa: C419 (every one crawls)
            time.sleep(0.2)

    crawling = threading.Thread(target=crawl)
    crawling.start()
    real: list[int] = []
    try:
        time.sleep(0.5)
        in_flight = httpx.get(f"{server.url}/metrics").text
        deadline = time.monotonic() + 3.0  # while all 70 hold their sockets open
        while time.monotonic() < deadline:
            real.append(httpx.get(f"{server.url}/health", timeout=2).status_code)
            real.append(predict(server, nifti, client="192.0.2.99", timeout=10).status_code)
        cut = [upload.answer()[0] for upload in attackers]
        crawling.join(30)
        cut += [crawler.answer()[0] for crawler in crawlers]
    finally:
        stop.set()
        crawling.join(5)
        for upload in [*attackers, *crawlers]:
            upload.close()
    assert "unet3d_uploads_in_flight 70.0" in in_flight
    assert len(real) >= 4 and set(real) == {200}
    assert cut == [408] * 70
    metrics = settled(server)
    assert server.temp_files() == []
    assert 'status="500"' not in metrics
    server.stop()
    assert server.process.returncode is not None
