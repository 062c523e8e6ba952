"""The Docker image, built and run for real with podman: scripts/container-smoke.sh (a few minutes)."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
from helpers import ROOT


@pytest.mark.container
@pytest.mark.timeout(1800)
def test_image_builds_serves_and_runs_as_uid_1000() -> None:
    is_root = os.geteuid() == 0
    if not is_root and subprocess.run(["sudo", "-n", "true"], capture_output=True, check=False).returncode != 0:
        pytest.skip("the container smoke test needs root or passwordless sudo (podman as root, apt-get)")
    if shutil.which("podman") is None and shutil.which("apt-get") is None:
        pytest.skip("neither podman nor apt-get (to install it) is available")
    result = subprocess.run(
        [str(ROOT / "scripts" / "container-smoke.sh")], cwd=ROOT, capture_output=True, text=True, check=False
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    assert "container smoke passed" in output
