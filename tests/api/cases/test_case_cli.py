"""`unet3d review import` and `unet3d users add` through the real console script, and the plugin point they use."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
from helpers import ROOT

from api.cases.service import CaseService
from api.cases.store import CaseQuery
from api.cases.users import UserDirectory
from api.settings import Settings

SHAPE = (10, 9, 8)


def unet3d(*arguments: str, env: dict[str, str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "unet3d.cli", *arguments]
    return subprocess.run(command, cwd=ROOT, env=env, input=stdin, capture_output=True, text=True, timeout=300)


def environment(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNET3D_")}
    return {**env, "UNET3D_DATA_DIR": str(tmp_path / "data"), "PYTHONPATH": str(ROOT), **extra}


def write(path: Path, data: np.ndarray) -> Path:
    nib.save(nib.Nifti1Image(data, np.diag([1.0, 1.0, 2.0, 1.0])), path)
    return path


def mask(label: int) -> np.ndarray:
    labels = np.zeros(SHAPE, np.uint8)
    labels[2:6, 2:6, 2:5] = label
    return labels


def stored_cases(tmp_path: Path) -> dict[str, object]:
    service = CaseService.open(Settings(data_dir=tmp_path / "data"))
    try:
        return {c.name: service.store.get_case(c.id) for c in service.store.list_cases(CaseQuery(limit=500)).cases}
    finally:
        service.close()


def test_import_a_batch_run_takes_its_classes_qc_warnings_and_model(tmp_path):
    out = tmp_path / "OUT"
    out.mkdir()
    volume = np.random.default_rng(0).normal(size=SHAPE).astype(np.float32)
    for name, label in (("s1", 1), ("s2", 2)):
        write(tmp_path / f"{name}.nii.gz", volume)
        write(out / f"{name}_mask.nii.gz", mask(label))
    columns = ["case", "input", "output", "status", "error", "runtime_ms", "background_ml", "grey_ml", "white_ml",
               "qc_warnings", "model_id", "model_revision", "weights_sha256"]  # fmt: skip
    rows = [
        ["s1", str(tmp_path / "s1.nii.gz"), "s1_mask.nii.gz", "ok", "", "12", "1", "2", "0", "low contrast; cut off",
         "org/brain", "abc123", "f" * 64],
        ["s2", str(tmp_path / "s2.nii.gz"), str(out / "s2_mask.nii.gz"), "skipped", "", "", "", "", "", "", "org/brain",
         "abc123", "f" * 64],
        ["s3", str(tmp_path / "s3.nii.gz"), "", "failed", "unreadable file", "", "", "", "", "", "", "", ""],
    ]  # fmt: skip
    with (out / "results.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows([columns, *rows])
    env = environment(tmp_path)
    first = unet3d("review", "import", str(out), env=env)
    assert first.returncode == 1, first.stderr  # s3 failed in the batch run: reported, not imported
    assert "imported 2 cases" in first.stdout and "s3: the batch run failed on it: unreadable file" in first.stderr
    again = unet3d("review", "import", str(out), env=env)
    assert "imported 0 cases, 2 present already" in again.stdout
    cases = stored_cases(tmp_path)
    s1 = cases["s1"]
    assert s1.classes == ["background", "grey", "white"] and s1.qc_warnings == ["low contrast", "cut off"]
    assert s1.model == {"id": "org/brain", "revision": "abc123", "sha256": "f" * 64}
    assert s1.revisions[0].author == "model:org/brain@abc123" and s1.source == "import"
    assert [v.voxels for v in cases["s2"].class_volumes] == [720 - 48, 0, 48]


def test_import_pairs_volumes_and_masks_by_name_and_reports_the_rest(tmp_path):
    folder = tmp_path / "pairs"
    folder.mkdir()
    write(folder / "a.nii.gz", np.ones(SHAPE, np.float32))
    write(folder / "a_mask.nii.gz", mask(1))
    write(folder / "b.nii", np.ones(SHAPE, np.float32))
    write(folder / "b_mask.nii.gz", np.zeros((10, 9, 7), np.uint8))  # another grid
    write(folder / "c.nii.gz", np.ones(SHAPE, np.float32))  # no mask
    result = unet3d("review", "import", str(folder), env=environment(tmp_path))
    assert result.returncode == 1 and "imported 1 cases" in result.stdout
    assert "b: mask b_mask.nii.gz" in result.stderr and "not on the voxel grid" in result.stderr
    assert "c: no mask c_mask.nii.gz" in result.stderr
    assert list(stored_cases(tmp_path)) == ["a"]


def test_users_add_reads_the_password_from_stdin_and_refuses_without_a_terminal(tmp_path):
    env = environment(tmp_path, UNET3D_USERS_FILE=str(tmp_path / "users"))
    added = unet3d("users", "add", "ann", "--password-stdin", env=env, stdin="s3cret\n")
    assert added.returncode == 0 and "added ann" in added.stdout
    assert UserDirectory(tmp_path / "users").verify("ann", "s3cret")
    no_tty = unet3d("users", "add", "bob", env=env, stdin="")
    assert no_tty.returncode == 1 and "--password-stdin" in no_tty.stderr
    unnamed = unet3d("users", "add", "a:b", "--password-stdin", env=env, stdin="x\n")
    assert unnamed.returncode == 1 and "without ':'" in unnamed.stderr
    assert unet3d("users", "list", env=env).stdout.split() == ["ann"]


def test_the_unet3d_cli_loads_no_server_or_database_code_until_a_plugin_command_runs():
    probe = "import sys; import unet3d.cli; print(sorted(m for m in sys.modules if m.split('.')[0] in " \
            "('api', 'sqlalchemy', 'alembic', 'fastapi')))"  # fmt: skip
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "[]", result.stderr
    helped = subprocess.run([sys.executable, "-m", "unet3d.cli", "--help"], cwd=ROOT, capture_output=True, text=True,
                            timeout=120)  # fmt: skip
    assert "review cases: import" in helped.stdout and "UNET3D_USERS_FILE" in helped.stdout


def test_a_plugin_whose_extra_is_missing_says_how_to_install_it(tmp_path, monkeypatch, capsys):
    from unet3d import cli

    monkeypatch.setitem(cli.KNOWN_PLUGINS, "review", ("api.cases.no_such_module:main", "review"))
    monkeypatch.setattr(cli, "entry_points", lambda **_: [])
    assert cli.main(["review", "import", str(tmp_path)]) == 1
    assert "pip install 'unet3d[serve]'" in capsys.readouterr().err
