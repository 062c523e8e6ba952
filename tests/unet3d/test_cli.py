import json
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
from helpers import sphere_volume, write_nifti

from unet3d.cli import main


def _run(*args, env=None):
    return subprocess.run([sys.executable, "-m", "unet3d.cli", *args], capture_output=True, text=True, env=env)


def test_predict_one_file_writes_that_file_and_prints_json(tiny_model_dir, volume_path, tmp_path, capsys):
    out = tmp_path / "result.nii.gz"
    assert main(["predict", str(volume_path), "-o", str(out), "--model", str(tiny_model_dir), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["output"] == str(out) and summary["filename"] == "blob.nii.gz"
    assert nib.load(out).shape == (24, 20, 16)


def test_predict_a_folder_writes_stem_mask_files_and_probabilities(tiny_model_dir, tmp_path, capsys):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for name in ("a.nii.gz", "b.nii"):
        write_nifti(inputs / name, sphere_volume())
    (inputs / "notes.txt").write_text("ignored")
    out = tmp_path / "out"
    code = main(["predict", str(inputs), "-o", str(out), "--model", str(tiny_model_dir), "--json", "--probabilities"])
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "a_mask.nii.gz",
        "a_probabilities.nii.gz",
        "b_mask.nii.gz",
        "b_probabilities.nii.gz",
    ]
    lines = capsys.readouterr().out.strip().splitlines()
    assert [json.loads(line)["filename"] for line in lines] == ["a.nii.gz", "b.nii"]


def test_several_files_continue_past_a_bad_one_and_exit_non_zero(tiny_model_dir, volume_path, tmp_path):
    bad = tmp_path / "bad.nii.gz"
    bad.write_text("not a volume")
    out = tmp_path / "out"
    result = _run("predict", str(bad), str(volume_path), "-o", str(out), "--model", str(tiny_model_dir))
    assert result.returncode == 1
    assert "bad.nii.gz: the file is named .nii.gz but is not gzip-compressed" in result.stderr
    assert "Traceback" not in result.stderr
    assert (out / "blob_mask.nii.gz").exists()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["predict", "/no/such/file.nii.gz", "-o", "x.nii.gz"], "input '/no/such/file.nii.gz' does not exist"),
        (["info", "--model", "/no/such/model"], "model path '/no/such/model' does not exist"),
        (["evaluate", "/no/a.nii.gz", "/no/b.nii.gz"], "cannot open the file"),
    ],
)
def test_bad_paths_end_with_one_line_and_no_traceback(arguments, message, tiny_model_dir):
    result = _run(*arguments)
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0 and message in result.stderr
    assert result.stderr.startswith("unet3d: error:")


def test_evaluate_prints_metrics_and_json(tmp_path, capsys):
    labels = np.zeros((10, 10, 10), np.uint8)
    labels[2:6, 2:6, 2:6] = 1
    labels[6:8, 6:8, 6:8] = 2
    shifted = np.roll(labels, 1, axis=0)
    gt = write_nifti(tmp_path / "gt.nii.gz", labels)
    pred = write_nifti(tmp_path / "pred.nii.gz", shifted)
    assert main(["evaluate", str(pred), str(gt), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["classes"][1]["dice"] == pytest.approx(0.75)
    assert len(metrics["iou_along_last_axis"]["class_1"]) == 10
    assert main(["evaluate", str(pred), str(gt)]) == 0
    assert "mean (foreground)" in capsys.readouterr().out


def test_evaluate_refuses_masks_on_different_grids(tmp_path):
    a = write_nifti(tmp_path / "a.nii.gz", np.zeros((8, 8, 8), np.uint8))
    b = write_nifti(tmp_path / "b.nii.gz", np.zeros((8, 8, 8), np.uint8), np.diag([2.0, 1, 1, 1]))
    result = _run("evaluate", str(a), str(b))
    assert result.returncode == 1 and "not on the same voxel grid" in result.stderr


def test_info_prints_card_and_resolved_source(tiny_model_dir, capsys):
    assert main(["info", "--model", str(tiny_model_dir)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["name"] == "tiny-test" and info["revision"] == "local" and len(info["sha256"]) == 64
