"""Shared fixtures. Environment first: huggingface_hub and gradio read these at import time."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
if "PYTEST_XDIST_WORKER_COUNT" in os.environ:  # the workers share the cores: each (and what it starts) takes its part
    workers = int(os.environ["PYTEST_XDIST_WORKER_COUNT"])
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // workers)))

from pathlib import Path

import pytest
from helpers import sphere_volume, write_nifti, write_tiny_model


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture
def volume_path(tmp_path: Path) -> Path:
    return write_nifti(tmp_path / "blob.nii.gz", sphere_volume())
