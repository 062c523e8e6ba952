"""Temp storage: the quota an upload reserves before writing, work folders, and the start-up sweep of leftovers."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import pytest

from api.errors import TempStorageFullError, error_response
from api.tempfiles import TempQuota, make_work_folder, remove_empty_strays, remove_leftovers, work_folder

DEAD_PID = 2**22 + 4321  # above Linux's pid_max: never a live process


@pytest.fixture
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def test_reservations_count_against_the_quota_with_what_is_kept_on_disk(private_tmp: Path, tmp_path: Path):
    kept = tmp_path / "gradio"
    kept.mkdir()
    (kept / "upload.bin").write_bytes(b"x" * 400_000)
    quota = TempQuota(1_000_000, kept=[kept])
    with quota.reserve(500_000):
        assert quota.reserved == 500_000 and quota.usage() == 900_000
        with pytest.raises(TempStorageFullError) as full, quota.reserve(200_000):
            pass
    answer = error_response(full.value)
    assert answer.status_code == 507 and int(answer.headers["retry-after"]) >= 1
    assert b"UNET3D_TEMP_QUOTA_MB" in answer.body and b"nothing was written" in answer.body
    assert quota.reserved == 0
    with quota.reserve(500_000):  # released: room again
        pass


def test_an_upload_larger_than_the_free_disk_space_is_refused(private_tmp: Path):
    with (
        pytest.raises(TempStorageFullError, match="free, too little for this upload"),
        TempQuota(2**62, kept=[]).reserve(2**61),
    ):
        pass


def test_work_folders_carry_the_pid_of_their_process(private_tmp: Path):
    with work_folder("request") as folder:
        assert Path(folder).name.startswith(f"unet3d-request-{os.getpid()}-")
    assert make_work_folder("ui").name.startswith(f"unet3d-ui-{os.getpid()}-")
    with pytest.raises(ValueError, match="unknown work folder kind 'other'"):
        work_folder("other")


def test_the_sweep_removes_a_crashs_leftovers_only(tmp_path: Path):
    tmp, gradio, data = tmp_path / "tmp", tmp_path / "gradio", tmp_path / "data"
    gone = [
        tmp / f"unet3d-request-{DEAD_PID}-abcd" / "file.nii.gz",
        tmp / f"unet3d-case-{os.getpid()}-abcd" / "file.nii.gz",  # this pid, before this process made anything
        tmp / "unet3d-ui-q1w2e3r4" / "mask.nii.gz",  # named before pids were
        gradio / ("0f" * 32) / "t1.nii.gz",
        gradio / "tmpa1b2c3",
        data / "masks" / f"7.nii.gz.tmp-{DEAD_PID}",
    ]
    kept = [
        tmp / f"unet3d-request-{os.getppid()}-abcd" / "file.nii.gz",  # a live neighbour's
        tmp / "unrelated" / "file",
        gradio / ("1e" * 32) / "fresh.nii.gz",
        gradio / "vibe_edit_history" / "x.py",  # Gradio's own folder, whatever its age
        data / "masks" / "7.nii.gz",
        data / "masks" / f"8.nii.gz.tmp-{os.getppid()}",  # being written by a live process
    ]
    for path in [*gone, *kept]:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * 100)
    old = time.time() - 7200
    for path in (gradio / ("0f" * 32), gradio / "tmpa1b2c3", gradio / "vibe_edit_history"):
        os.utime(path, (old, old))
    swept = remove_leftovers(temp_dir=tmp, upload_dir=gradio, data_dir=data)
    assert [str(p) for p in gone if p.exists()] == []
    assert [str(p) for p in kept if not p.exists()] == []
    assert swept.paths == 6 and swept.bytes == 600


def test_the_empty_files_gradios_file_input_leaves_behind_are_swept(tmp_path: Path):
    gradio = tmp_path / "gradio"
    gradio.mkdir()
    old = time.time() - 1200
    stray, fresh, partial = gradio / "tmpstray1", gradio / "tmpfresh1", gradio / "tmppartial"
    stray.touch()
    fresh.touch()
    partial.write_bytes(b"x" * 10)  # an upload being received: never empty
    os.utime(stray, (old, old))
    os.utime(partial, (old, old))
    assert remove_empty_strays(gradio, older_than_s=600) == 1
    assert not stray.exists() and fresh.exists() and partial.exists()
