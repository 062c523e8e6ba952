"""App factory and lifespan: no work at import, a clear non-zero exit when startup cannot succeed."""

from __future__ import annotations

import sys

import pytest
from starlette.testclient import TestClient

from api.main import create_app


def test_server_exits_non_zero_with_the_reason_when_the_model_cannot_load(run_until_exit, tmp_path):
    finished = run_until_exit({"UNET3D_MODEL": str(tmp_path / "no-such-model")})
    assert finished.returncode != 0
    assert "cannot load the model" in finished.stderr
    assert "no-such-model' does not exist" in finished.stderr
    assert "Application startup failed" in finished.stderr


def test_server_exits_non_zero_on_an_invalid_setting(run_until_exit, tiny_model_dir):
    finished = run_until_exit({"UNET3D_MODEL": str(tiny_model_dir), "UNET3D_MAX_CONCURRENCY": "zero"})
    assert finished.returncode != 0
    assert "invalid UNET3D_* settings" in finished.stderr
    assert "max_concurrency" in finished.stderr


def test_importing_the_app_reads_no_settings_and_loads_no_model(run_until_exit):
    # Broken settings and a missing model would both fail at import if the module did any work.
    code = "import api.main; print(api.main.app.state.service is None, api.main.get_settings.cache_info().currsize)"
    settings = {"UNET3D_MODEL": "/no/such/model", "UNET3D_MAX_CONCURRENCY": "zero"}
    finished = run_until_exit(settings, [sys.executable, "-c", code])
    assert finished.returncode == 0, finished.stderr
    assert finished.stdout.split() == ["True", "0"]


@pytest.mark.parametrize("path", ["/v1/model", "/v1/predict"])
def test_v1_routes_answer_503_while_no_model_is_loaded(path):
    client = TestClient(create_app())  # no `with`: the lifespan, and so the model load, never runs
    response = client.get(path) if path == "/v1/model" else client.post(path, files={"file": ("a.nii.gz", b"x")})
    assert response.status_code == 503
    assert "not loaded" in response.json()["detail"]
    health = client.get("/health").json()
    assert health["model_loaded"] is False
