"""The Ray engine against the local one: a cluster of 2 CPUs started here, the CLI joining it with --ray-address."""

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import ROOT, sphere_volume, write_nifti

from unet3d.cli import main

ray = pytest.importorskip("ray")

pytestmark = pytest.mark.slow  # starting Ray and its workers takes most of a minute on 2 cores


@pytest.fixture(scope="module")
def ray_address(tmp_path_factory: pytest.TempPathFactory):
    # Workers are started by this cluster and inherit this process's environment: make them import this checkout.
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), saved) if p)
    try:
        ray.init(
            num_cpus=2,
            num_gpus=0,
            include_dashboard=False,
            _temp_dir=str(tmp_path_factory.mktemp("ray")),
            logging_level="WARNING",
        )
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()  # stops the processes this cluster started, and only those
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as file:
        return list(csv.DictReader(file))


def _comparable(rows: list[dict[str, str]], folder: Path) -> dict[str, dict[str, str]]:
    """Rows by case, without the run time and with outputs relative to their folder."""
    shown = {}
    for row in rows:
        row = {key: value for key, value in row.items() if key != "runtime_ms"}
        row["output"] = str(Path(row["output"]).relative_to(folder)) if row["output"] else ""
        shown[row["case"]] = row
    return shown


def test_a_ray_run_writes_the_same_masks_and_rows_as_a_local_run_and_resumes_alike(
    ray_address, tiny_model_dir, tmp_path
):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for k in range(4):
        write_nifti(inputs / f"case{k}.nii.gz", sphere_volume((28, 24, 20), seed=k))
    (inputs / "broken.nii.gz").write_bytes((inputs / "case0.nii.gz").read_bytes()[:-150])
    listing = tmp_path / "cohort.csv"
    names = [p.name for p in sorted(inputs.iterdir())] + ["ghost.nii.gz"]  # the last one does not exist
    listing.write_text("input\n" + "".join(f"in/{name}\n" for name in names), encoding="utf-8")
    local, on_ray = tmp_path / "local", tmp_path / "ray"
    model = ["--model", str(tiny_model_dir), "--probabilities"]
    assert main(["predict", str(listing), "-o", str(local), *model]) == 1

    command = [sys.executable, "-m", "unet3d.cli", "predict", str(listing), "-o", str(on_ray), *model]
    command += ["--engine", "ray"]
    first = subprocess.run([*command, "--ray-address", ray_address], capture_output=True, text=True, timeout=400)
    assert first.returncode == 1, first.stderr
    assert "2 of 6 cases failed" in first.stderr and "Traceback" not in first.stderr

    expected = _comparable(_rows(local / "results.csv"), local)
    assert _comparable(_rows(on_ray / "results.csv"), on_ray) == expected
    assert {case: row["status"] for case, row in expected.items()} == {
        "broken": "failed",
        "ghost": "failed",
        **{f"case{k}": "ok" for k in range(4)},
    }
    written = sorted(p.name for p in local.glob("*.nii.gz"))
    assert written == sorted(p.name for p in on_ray.glob("*.nii.gz")) and len(written) == 8
    for name in written:  # the same bytes: mask data, header and the deterministic gzip stream
        assert (on_ray / name).read_bytes() == (local / name).read_bytes(), name

    # The same command again, joining the cluster through RAY_ADDRESS (as under `ray job submit` or a RayJob)
    joined = {**os.environ, "RAY_ADDRESS": ray_address}
    again = subprocess.run(command, capture_output=True, text=True, timeout=400, env=joined)
    assert again.returncode == 1, again.stderr
    statuses = {row["case"]: row["status"] for row in _rows(on_ray / "results.csv")}
    assert statuses == {"broken": "failed", "ghost": "failed", **{f"case{k}": "skipped" for k in range(4)}}
    assert not list(on_ray.glob("*.tmp-*"))


def test_a_ray_run_reads_dicom_series_and_writes_their_segs_as_a_local_run_does(ray_address, tiny_model_dir, tmp_path):
    from dicom_series import template, write_series, zip_folder

    from unet3d.dicom import read_dicom_seg

    inputs = tmp_path / "in"
    write_series(inputs / "folder_case", *template(6))
    zip_folder(inputs / "folder_case", inputs / "zipped_case.zip", prefix="DICOM/")
    local, on_ray = tmp_path / "local", tmp_path / "ray"
    model = ["--model", str(tiny_model_dir), "--dicom-seg"]
    assert main(["predict", str(inputs), "-o", str(local), *model]) == 0
    command = [sys.executable, "-m", "unet3d.cli", "predict", str(inputs), "-o", str(on_ray), *model]
    finished = subprocess.run([*command, "--engine", "ray", "--ray-address", ray_address], capture_output=True,
                              text=True, timeout=400)  # fmt: skip
    assert finished.returncode == 0, finished.stderr
    for case in ("folder_case", "zipped_case"):
        assert (on_ray / f"{case}_mask.nii.gz").read_bytes() == (local / f"{case}_mask.nii.gz").read_bytes()
        back = read_dicom_seg(on_ray / f"{case}_seg.dcm")
        assert np.array_equal(back.data, read_dicom_seg(local / f"{case}_seg.dcm").data)
