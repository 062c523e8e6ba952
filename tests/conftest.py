"""Shared fixtures. Environment first: huggingface_hub and gradio read these at import time."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from pathlib import Path

import pytest
from helpers import sphere_volume, write_nifti, write_tiny_model


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture
def volume_path(tmp_path: Path) -> Path:
    return write_nifti(tmp_path / "blob.nii.gz", sphere_volume())
