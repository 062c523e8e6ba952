"""Faults: broken weights, an unreachable Hub, out-of-memory during inference, clients that vanish mid-request.

Covered elsewhere and not repeated here: a missing model directory or an invalid setting stops the server with the
reason (tests/api/test_main.py); the library's Hub fallbacks, pinned cache loads with HF_HUB_OFFLINE=1 and
< 2 s failures (tests/unet3d/test_hub.py); a pinned revision served offline from the cache and an uncached model
refused offline (tests/api/test_service_hub.py); the engine's whole → sliding → batch 1 → CPU retries
(tests/unet3d/test_inference.py).
"""

from __future__ import annotations

import pickle
import shutil
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import nibabel as nib
import numpy as np
import pytest
import torch
from helpers import ROOT, write_tiny_model
from hostile_corpus import MULTIPART_HEADERS, multipart, nifti
from hubserver import FakeHub, free_port, get_json, hub_env, model_files, run, unet3d_command, uvicorn_service
from starlette.testclient import TestClient

from api.limits import InferenceSlots
from api.main import create_app
from api.service import SegmentationService
from unet3d import Segmenter, UNet3D
from unet3d.card import load_card
from unet3d.hub import load_unet, resolve_source

# Runs the app under uvicorn in this interpreter and reports how long startup (the lifespan) took before it failed.
TIMED_STARTUP = """
import sys, time
import api.main, uvicorn
app = api.main.app  # built on first use (Gradio's import and the UI): not part of what the model's failure costs
started = time.monotonic()
try:
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]))
finally:
    print(f"startup-seconds {time.monotonic() - started:.3f}", file=sys.stderr)
"""


class _OpensMarker:
    """Unpickling this creates the marker file: proof that a pickle was executed."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["malicious-pickle", "truncated", "html-error-page"])
def test_server_refuses_to_start_on_corrupt_weights_and_runs_no_pickle(
    damage: str, tiny_model_dir: Path, tmp_path: Path, run_until_exit
) -> None:
    model = shutil.copytree(tiny_model_dir, tmp_path / "model")
    marker = tmp_path / "pickle-was-executed"
    weights = model / "model.safetensors"
    content = {
        "malicious-pickle": pickle.dumps(_OpensMarker(marker)),
        "truncated": weights.read_bytes()[: weights.stat().st_size // 2],
        "html-error-page": b"<html><body>502 Bad Gateway</body></html>",
    }[damage]
    weights.write_bytes(content)
    finished = run_until_exit({"UNET3D_MODEL": str(model)})
    assert finished.returncode != 0
    assert "cannot load the model" in finished.stderr
    assert "'model.safetensors' is not a valid safetensors file" in finished.stderr
    assert "Application startup failed" in finished.stderr
    assert not marker.exists()


@pytest.mark.slow
def test_server_refuses_a_model_directory_holding_only_a_pickle(tiny_model_dir, tmp_path, run_until_exit) -> None:
    model = shutil.copytree(tiny_model_dir, tmp_path / "model")
    marker = tmp_path / "pickle-was-executed"
    (model / "model.safetensors").unlink()
    (model / "pytorch_model.bin").write_bytes(pickle.dumps(_OpensMarker(marker)))
    finished = run_until_exit({"UNET3D_MODEL": str(model)})
    assert finished.returncode != 0
    assert "refusing to load 'pytorch_model.bin': pickled checkpoints can run arbitrary code" in finished.stderr
    assert not marker.exists()


@pytest.fixture
def hub_gone(tmp_path: Path) -> Iterator[tuple[str, Path, str]]:
    """A Hub that served `acme/tiny` once (now in the cache at the returned sha), then went away."""
    with FakeHub() as hub:
        sha = hub.add_commit("acme/tiny", model_files(write_tiny_model(tmp_path / "tiny", seed=3)))
        hub.add_commit("acme/uncached", model_files(write_tiny_model(tmp_path / "other", seed=4)))
        url, hf_home = hub.url, tmp_path / "hf-home"
        fetched = run(unet3d_command("info", "--model", "acme/tiny", "--revision", sha), hub_env(url, hf_home), ROOT)
        assert fetched.returncode == 0, fetched.stderr
    # The FakeHub is stopped: its port now refuses connections, as an unreachable Hub does. HF_HUB_OFFLINE stays 0.
    return url, hf_home, sha


@pytest.mark.slow
def test_unreachable_hub_serves_the_cached_pinned_revision(hub_gone) -> None:
    url, hf_home, sha = hub_gone
    env = hub_env(url, hf_home, UNET3D_MODEL="acme/tiny", UNET3D_MODEL_REVISION=sha, UNET3D_DEVICE="cpu")
    with uvicorn_service(env, ROOT) as service:
        health = get_json(f"{service}/health")
    assert health["model"] == {"id": "acme/tiny", "revision": sha}


@pytest.mark.slow
def test_unreachable_hub_and_an_uncached_model_fail_startup_within_2_s(hub_gone) -> None:
    url, hf_home, _ = hub_gone
    env = hub_env(url, hf_home, UNET3D_MODEL="acme/uncached", UNET3D_DEVICE="cpu")
    finished = run([sys.executable, "-c", TIMED_STARTUP, str(free_port())], env, ROOT)
    assert finished.returncode != 0
    assert "not in the local cache and the Hub is offline or unreachable" in finished.stderr
    assert "pin a commit sha in UNET3D_MODEL_REVISION" in finished.stderr
    seconds = float(finished.stderr.rsplit("startup-seconds", 1)[1].split()[0])
    assert seconds < 2.0, f"startup took {seconds:.2f} s to fail: a retry storm?"


# ---- out of memory during inference ---------------------------------------------------------------------------------


class OutOfMemoryAbove(UNet3D):
    """The tiny UNet3D, except that any forward pass over more than `limit` voxels runs out of memory.

    CUDA out-of-memory cannot be produced on a CPU-only machine; this raises the very exception torch raises there.
    """

    limit = 16**3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x[0, 0].numel() > self.limit:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (injected)")
        return super().forward(x)


def service_for(model: UNet3D, model_dir: Path) -> SegmentationService:
    source = resolve_source(model_dir)
    card = load_card(model_dir / "model.yaml")
    caps = {"max_voxels": 10**6, "max_decompressed_bytes": 2**26}
    segmenter = Segmenter(model, card, source, device="cpu", precision="fp32", **caps)
    return SegmentationService(segmenter, InferenceSlots(1, 2))


def predict_over_http(service: SegmentationService, volume: bytes, **params: str) -> httpx.Response:
    app = create_app()
    app.state.service = service  # the lifespan (which would load UNET3D_MODEL) does not run without `with`
    client = TestClient(app)
    body = multipart([(b"file", b"oom.nii.gz", volume)])
    return client.post(
        "/v1/predict",
        params=params,
        content=body,
        headers=MULTIPART_HEADERS,
    )


def injected_model(model_dir: Path, limit: int) -> OutOfMemoryAbove:
    regular = load_unet(resolve_source(model_dir))
    model = OutOfMemoryAbove(**{k: getattr(regular, k) for k in ("in_channels", "num_classes", "base_channels",
                                                                  "depth", "norm")})  # fmt: skip
    model.load_state_dict(regular.state_dict(), strict=True)
    model.limit = limit
    return model


def test_out_of_memory_in_a_whole_pass_falls_back_to_the_sliding_window_with_the_same_mask(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    volume = nifti(np.random.default_rng(11).normal(100, 30, (40, 36, 20)).astype(np.float32))
    regular = service_for(load_unet(resolve_source(tiny_model_dir)), tiny_model_dir)
    expected = predict_over_http(regular, volume, mode="sliding", return_binary="true")
    injected = service_for(injected_model(tiny_model_dir, limit=16**3), tiny_model_dir)
    summary = predict_over_http(injected, volume, mode="whole")
    fallen_back = predict_over_http(injected, volume, mode="whole", return_binary="true")
    assert summary.status_code == fallen_back.status_code == expected.status_code == 200, summary.text
    assert summary.json()["mode"] == "sliding"  # asked for one whole pass; it ran out of memory and slid
    masks = []
    for name, answer in (("expected", expected), ("fallen_back", fallen_back)):
        (tmp_path / f"{name}.nii.gz").write_bytes(answer.content)
        masks.append(np.asanyarray(nib.load(tmp_path / f"{name}.nii.gz").dataobj))
    assert len(np.unique(masks[0])) > 1
    assert np.array_equal(*masks)


def test_out_of_memory_on_every_plan_is_a_503_that_says_what_to_do(tiny_model_dir: Path) -> None:
    service = service_for(injected_model(tiny_model_dir, limit=1), tiny_model_dir)
    answer = predict_over_http(service, nifti())
    assert answer.status_code == 503
    assert "out of memory even with a sliding window on the CPU" in answer.json()["detail"]
    assert service.slots.running == 0 and service.slots.waiting == 0


# ---- clients that go away -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def one_slot_server(launch_server, tiny_model_dir: Path) -> Iterator:
    """One inference slot and no queue: a slot leaked by a vanished client would turn the next request into a 503."""
    server = launch_server(
        {"UNET3D_MODEL": str(tiny_model_dir), "UNET3D_MAX_CONCURRENCY": "1", "UNET3D_QUEUE_SIZE": "0"},
        name="one-slot",
    )
    yield server
    server.stop()


def _raw_request(server, body: bytes, content_length: int) -> socket.socket:
    host, port = server.url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    head = (
        f"POST /v1/predict HTTP/1.1\r\nHost: {host}\r\nContent-Length: {content_length}\r\n"
        f"Content-Type: {MULTIPART_HEADERS['content-type']}\r\n\r\n"
    ).encode()
    sock.sendall(head + body)
    return sock


def _settled(server, timeout: float = 10.0) -> str:
    """/metrics once no request is admitted any more and the temp folder is empty (the server cleans up async)."""
    deadline = time.monotonic() + timeout
    while True:
        text = httpx.get(f"{server.url}/metrics").text
        idle = "unet3d_queue_depth 0.0" in text and "unet3d_inference_in_progress 0.0" in text
        if (idle and server.temp_files() == []) or time.monotonic() > deadline:
            return text
        time.sleep(0.1)


@pytest.mark.slow
@pytest.mark.parametrize("sent_fraction", [0.0, 0.5, 0.99])
def test_a_client_that_disconnects_mid_upload_leaves_no_temp_file_and_no_stuck_slot(
    one_slot_server, sent_fraction: float
) -> None:
    body = multipart([(b"file", b"big.nii.gz", nifti(np.random.default_rng(2).normal(size=(64, 64, 64))))])
    for _ in range(3):  # a stuck slot or a leaked folder would accumulate
        sock = _raw_request(one_slot_server, body[: int(len(body) * sent_fraction)], content_length=len(body))
        time.sleep(0.2)
        sock.close()
    metrics = _settled(one_slot_server)
    assert "unet3d_queue_depth 0.0" in metrics and "unet3d_inference_in_progress 0.0" in metrics
    assert one_slot_server.temp_files() == []
    after = httpx.post(f"{one_slot_server.url}/v1/predict", files={"file": ("ok.nii.gz", nifti())}, timeout=60)
    assert after.status_code == 200, after.text
    assert 'status="500"' not in metrics, "a vanished client was counted as a server error"


@pytest.mark.slow
def test_a_client_that_disconnects_while_its_prediction_runs_leaves_nothing_behind(one_slot_server) -> None:
    body = multipart([(b"file", b"slow.nii.gz", nifti(np.random.default_rng(4).normal(size=(96, 96, 96))))])
    sock = _raw_request(one_slot_server, body, content_length=len(body))
    deadline = time.monotonic() + 10
    while "unet3d_inference_in_progress 1.0" not in httpx.get(f"{one_slot_server.url}/metrics").text:
        assert time.monotonic() < deadline, "the prediction never started"
        time.sleep(0.02)
    sock.close()
    _settled(one_slot_server, timeout=60)
    assert one_slot_server.temp_files() == []
    after = httpx.post(f"{one_slot_server.url}/v1/predict", files={"file": ("ok.nii.gz", nifti())}, timeout=60)
    assert after.status_code == 200, after.text
