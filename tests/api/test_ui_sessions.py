"""The review UI's tabs under a memory budget, through gradio_client against a real server: a tab past the budget is
told to retry, a closed tab's review is released at once, an idle one when its time to live ends."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

REVIEW_BYTES = 24 * 20 * 16 * 8  # the test volume's voxels × 8 bytes (api/ui/sessions.py)


def session_bytes(server) -> float:
    for line in httpx.get(f"{server.url}/metrics").text.splitlines():
        if line.startswith("unet3d_ui_session_bytes "):
            return float(line.split()[1])
    raise AssertionError("no unet3d_ui_session_bytes in /metrics")


def wait_for_bytes(server, expected: float, timeout: float = 15.0) -> float:
    deadline = time.monotonic() + timeout
    while (held := session_bytes(server)) != expected and time.monotonic() < deadline:
        time.sleep(0.2)
    return held


@pytest.mark.slow
def test_tabs_share_a_memory_budget_and_give_it_back_when_they_close_or_expire(
    launch_server, tiny_model_dir: Path, nifti, tmp_path: Path
) -> None:
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    budget_mb = 1.5 * REVIEW_BYTES / 2**20  # room for one review, not two
    settings = {"UNET3D_MODEL": str(tiny_model_dir), "UNET3D_SESSION_MEMORY_MB": f"{budget_mb:.6f}",
                "UNET3D_SESSION_WAIT_S": "1", "UNET3D_SESSION_TTL_S": "8"}  # fmt: skip
    server = launch_server(settings, name="ui-budget")
    volume = tmp_path / "t1.nii.gz"
    volume.write_bytes(nifti.encode(nifti.blob()))
    first = Client(f"{server.url}/ui/", verbose=False, download_files=str(tmp_path / "first"))
    second = Client(f"{server.url}/ui/", verbose=False, download_files=str(tmp_path / "second"))
    try:
        first.predict(handle_file(str(volume)), api_name="/segment")
        assert session_bytes(server) == REVIEW_BYTES
        with pytest.raises(AppError) as busy:
            second.predict(handle_file(str(volume)), api_name="/segment")
        assert "The server is busy with other segmentations: try again in about" in str(busy.value)
        first.close()  # the tab closes: its heartbeat ends, and with it the review
        assert wait_for_bytes(server, 0) == 0
        second.predict(handle_file(str(volume)), api_name="/segment")
        assert session_bytes(server) == REVIEW_BYTES
        # the second tab stays open but idle: its session expires after UNET3D_SESSION_TTL_S
        assert wait_for_bytes(server, 0, timeout=20) == 0
    finally:
        first.close()
        second.close()
    assert "Traceback" not in server.logs()
