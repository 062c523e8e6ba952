"""The service started from a Hub repo id (UNET3D_MODEL) through a loopback FakeHub, as a real uvicorn process."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from helpers import ROOT, write_tiny_model
from hubserver import FakeHub, get_json, hub_env, model_files, uvicorn_service


@pytest.fixture
def hub():
    with FakeHub() as server:
        yield server


@pytest.mark.slow
def test_service_from_a_repo_id_reports_the_commit_and_then_starts_offline_from_the_pinned_cache(
    hub: FakeHub, tmp_path: Path
) -> None:
    files = model_files(write_tiny_model(tmp_path / "tiny", seed=5))
    sha = hub.add_commit("acme/tiny", files)
    weights_sha256 = hashlib.sha256(files["model.safetensors"]).hexdigest()
    hf_home = tmp_path / "hf-home"

    online = hub_env(hub.url, hf_home, UNET3D_MODEL="acme/tiny", UNET3D_DEVICE="cpu")
    with uvicorn_service(online, ROOT) as url:
        health, model = get_json(f"{url}/health"), get_json(f"{url}/v1/model")
    assert health["status"] == "ok" and health["model_loaded"] is True
    assert health["model"] == {"id": "acme/tiny", "revision": sha}
    assert (model["id"], model["revision"], model["sha256"]) == ("acme/tiny", sha, weights_sha256)
    assert model["name"] == "tiny-test"
    assert hub.requests("GET", "/resolve/")

    # Production style: a pinned commit, HF_HUB_OFFLINE=1, and `main` has moved on meanwhile.
    hub.add_commit("acme/tiny", model_files(write_tiny_model(tmp_path / "tiny2", seed=6)))
    hub.clear_log()
    pinned = hub_env(
        hub.url, hf_home, offline=True, UNET3D_MODEL="acme/tiny", UNET3D_MODEL_REVISION=sha, UNET3D_DEVICE="cpu"
    )
    with uvicorn_service(pinned, ROOT) as url:
        health, model = get_json(f"{url}/health"), get_json(f"{url}/v1/model")
    assert health["model"] == {"id": "acme/tiny", "revision": sha}
    assert model["sha256"] == weights_sha256
    assert hub.log == []


@pytest.mark.slow
def test_service_with_an_uncached_model_offline_fails_to_start_with_the_pin_advice(
    hub: FakeHub, tmp_path: Path
) -> None:
    env = hub_env(hub.url, tmp_path / "hf-home", offline=True, UNET3D_MODEL="acme/tiny", UNET3D_DEVICE="cpu")
    with pytest.raises(RuntimeError) as failure, uvicorn_service(env, ROOT, timeout=60):
        pass
    assert "pin a commit sha in UNET3D_MODEL_REVISION (the CLI's --revision" in str(failure.value)
    assert hub.log == []
