import contextlib
import io
import json
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
from helpers import sphere_volume, write_nifti

from unet3d.cli import main


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    """`unet3d ARGS` run in this process, with what it wrote to stdout and stderr (a process start costs seconds).

    The console script in its own process is tested in test_cli_hostile.py and by the closed-pipe test below.
    """
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return subprocess.CompletedProcess(["unet3d", *args], code, out.getvalue(), err.getvalue())


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
        "results.csv",
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


def _cube_masks(tmp_path):
    """Reference: a 4³ cube of 1 and a 2³ cube of 2; prediction: the same shifted by one voxel along I."""
    labels = np.zeros((10, 10, 10), np.uint8)
    labels[2:6, 2:6, 2:6] = 1
    labels[6:8, 6:8, 6:8] = 2
    gt = write_nifti(tmp_path / "gt.nii.gz", labels)
    pred = write_nifti(tmp_path / "pred.nii.gz", np.roll(labels, 1, axis=0))
    return pred, gt


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (np.full((8, 8, 8), 0.5, np.float32), "holds non-integer values (e.g. 0.5): expected an integer label mask"),
        (np.random.default_rng(0).integers(0, 256, (16, 16, 16)).astype(np.uint8), "looks like an image"),
        (np.full((8, 8, 8), -1, np.int16), "holds negative values (e.g. -1)"),
    ],
    ids=["float-values", "uint8-image", "negative-labels"],
)
def test_evaluate_refuses_a_file_that_is_not_a_label_mask_naming_it(tmp_path, data, fragment):
    image = write_nifti(tmp_path / "t1.nii.gz", data)
    mask = write_nifti(tmp_path / "mask.nii.gz", np.zeros(data.shape, np.uint8))
    result = _run("evaluate", str(mask), str(image))
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.startswith(f"unet3d: error: {image} ") and result.stderr.count("\n") == 1
    assert fragment in result.stderr


def test_evaluate_takes_an_explicit_num_classes_as_the_word_that_a_file_is_a_mask(tmp_path, capsys):
    speckles = np.random.default_rng(0).integers(0, 100, (16, 16, 16)).astype(np.uint8)  # many tiny labelled objects
    mask = write_nifti(tmp_path / "speckles.nii.gz", speckles)
    assert main(["evaluate", str(mask), str(mask), "--num-classes", "100", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["mean_dice"] == 1.0


def test_evaluate_accepts_an_int16_mask_with_many_labels_above_255(tmp_path, capsys):
    labels = np.zeros((30, 30, 4), np.int16)
    for index, (i, j) in enumerate(np.ndindex(10, 10)):
        labels[3 * i : 3 * i + 3, 3 * j : 3 * j + 3] = 3 * index  # 100 blocks, labels 0, 3, ..., 297
    mask = write_nifti(tmp_path / "parcels.nii.gz", labels)
    assert main(["evaluate", str(mask), str(mask), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert len(metrics["classes"]) == 298 and metrics["mean_dice"] == 1.0


def test_evaluate_refuses_num_classes_below_the_highest_label(tmp_path):
    pred, gt = _cube_masks(tmp_path)
    result = _run("evaluate", str(pred), str(gt), "--num-classes", "2")
    assert result.returncode == 1 and result.stdout == ""
    assert f"{pred} holds labels up to 2: --num-classes must be at least 3, got 2" in result.stderr


def test_evaluate_names_the_classes_after_a_model_card(tmp_path, tiny_model_dir, capsys):
    pred, gt = _cube_masks(tmp_path)
    assert main(["evaluate", str(pred), str(gt), "--model", str(tiny_model_dir), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert [c["name"] for c in metrics["classes"]] == ["background", "shell", "core"]
    assert list(metrics["iou_along_last_axis"]) == ["shell", "core"]
    assert main(["evaluate", str(pred), str(gt), "--model", str(tiny_model_dir)]) == 0
    assert "\nshell " in capsys.readouterr().out


def test_evaluate_with_a_model_refuses_labels_it_does_not_have(tmp_path, tiny_model_dir, capsys):
    labels = np.zeros((10, 10, 10), np.uint8)
    labels[2:6, 2:6, 2:6] = 5
    mask = write_nifti(tmp_path / "other.nii.gz", labels)
    assert main(["evaluate", str(mask), str(mask), "--model", str(tiny_model_dir)]) == 1
    expected = f"{mask} holds labels up to 5, but model '{tiny_model_dir}' has 3 classes"
    assert expected in capsys.readouterr().err
    assert main(["evaluate", str(mask), str(mask), "--model", str(tiny_model_dir), "--num-classes", "6"]) == 1
    assert "--num-classes 6 contradicts the 3 classes of model" in capsys.readouterr().err


def test_evaluate_reports_a_class_absent_from_both_masks_without_scores(tmp_path, capsys):
    pred, gt = _cube_masks(tmp_path)
    assert main(["evaluate", str(pred), str(gt), "--num-classes", "4", "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    absent = metrics["classes"][3]
    assert (absent["dice"], absent["iou"], absent["hd95_mm"]) == (None, None, None)
    assert metrics["mean_dice"] == pytest.approx((0.75 + 0.5) / 2)
    assert main(["evaluate", str(pred), str(gt), "--num-classes", "4"]) == 0
    text = capsys.readouterr().out
    assert "nan" not in text.lower() and "None" not in text
    row = next(line for line in text.splitlines() if line.startswith("class_3"))
    assert row.split() == ["class_3", "-", "-", "-", "0.00", "0.00"]
    assert "mean (foreground): dice 0.6250" in text
    assert "absent from both masks (no dice, iou or hd95; left out of the means): class_3" in text


def test_evaluate_text_summarises_iou_along_the_last_axis(tmp_path, capsys):
    labels = np.zeros((10, 10, 6), np.uint8)
    labels[2:6, 2:6, 1:5] = 1
    prediction = labels.copy()
    prediction[2:4, 2:6, 3] = 0  # slice 3 loses half of the class: IoU 0.5 there, 1.0 elsewhere
    gt = write_nifti(tmp_path / "gt.nii.gz", labels)
    pred = write_nifti(tmp_path / "pred.nii.gz", prediction)
    assert main(["evaluate", str(pred), str(gt)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "IoU along the last axis" in "\n".join(lines)
    row = next(line for line in lines if line.startswith("class_1") and "/" in line)
    assert row.split() == ["class_1", "4/6", "0.5000", "1.0000", "3"]
    assert main(["evaluate", str(gt), str(gt)]) == 0
    same = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("class_1") and "/" in line)
    assert same.split() == ["class_1", "4/6", "1.0000", "1.0000", "-"]  # no slice is worst when all agree


def test_evaluate_read_by_a_closed_pipe_exits_quietly(tmp_path):
    pred, gt = _cube_masks(tmp_path)
    # The reader is gone before the command writes (`unet3d evaluate ... | head -0`): its output hits a closed pipe.
    process = subprocess.Popen(
        [sys.executable, "-m", "unet3d.cli", "evaluate", str(pred), str(gt)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    process.stdout.close()
    stderr = process.stderr.read()
    assert process.wait(timeout=120) == 141
    assert stderr == ""


@pytest.mark.parametrize("several", ["files", "folder"])
def test_predict_refuses_a_file_name_output_for_several_inputs_before_any_work(tmp_path, several):
    inputs = tmp_path / "in"
    inputs.mkdir()
    paths = [write_nifti(inputs / name, sphere_volume()) for name in ("a.nii.gz", "b.nii.gz")]
    sources = [str(p) for p in paths] if several == "files" else [str(inputs)]
    out = tmp_path / "one.nii.gz"
    result = _run("predict", *sources, "-o", str(out), "--model", "/no/such/model")
    assert result.returncode == 1 and result.stderr.count("\n") == 1
    assert f"-o '{out}' is a file name, but " in result.stderr and "-o to be a folder" in result.stderr
    assert not out.exists()


@pytest.mark.parametrize(("name", "exists"), [("mask.png", False), ("mask.nii.gz.txt", False), ("notes", True)])
def test_predict_refuses_an_output_that_is_neither_nifti_nor_a_folder_before_any_work(tmp_path, name, exists):
    source = write_nifti(tmp_path / "t1.nii.gz", sphere_volume())
    out = tmp_path / name
    if exists:
        out.write_text("my notes")
    result = _run("predict", str(source), "-o", str(out), "--model", "/no/such/model")
    assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr
    assert f"-o '{out}'" in result.stderr and "pass -o t1_mask.nii.gz, or a folder" in result.stderr
    assert out.is_file() == exists and not out.is_dir()
    if exists:
        assert out.read_text() == "my notes"


def test_stats_measure_an_existing_mask_with_its_image_and_class_names(tmp_path, tiny_model_dir, capsys):
    labels = np.zeros((10, 10, 10), np.uint8)
    labels[2:6, 2:6, 2:6] = 1
    labels[6:10, 6:8, 6:8] = 2  # reaches the last slice along I
    affine = np.diag([2.0, 1.0, 1.0, 1.0])
    mask = write_nifti(tmp_path / "mask.nii.gz", labels, affine)
    image = write_nifti(tmp_path / "t1.nii.gz", np.arange(1000, dtype=np.float32).reshape(10, 10, 10), affine)
    assert main(["stats", str(mask), "--image", str(image), "--model", str(tiny_model_dir), "--json"]) == 0
    measured = json.loads(capsys.readouterr().out)
    assert [c["name"] for c in measured["classes"]] == ["background", "shell", "core"]
    shell, core = measured["classes"][1:]
    assert (shell["volume_ml"], shell["touches_border"], core["touches_border"]) == (0.128, False, True)
    assert shell["intensity"]["mean"] == pytest.approx(388.5)
    assert main(["stats", str(mask), "--image", str(image)]) == 0
    text = capsys.readouterr().out
    assert "\nclass_1 " in text and "median" in text and "foreground: 0.16 mL" in text
    assert "touching the edge of the field of view: class_2;" in text and "lower bounds" in text


@pytest.mark.parametrize(
    ("image_affine", "as_mask", "fragment"),
    [
        (np.eye(4), False, "not on the same voxel grid (shape and affine): give --image the volume"),
        (None, True, "looks like an image, not a label mask"),
    ],
    ids=["image-on-another-grid", "image-given-as-the-mask"],
)
def test_stats_refuse_inputs_that_cannot_be_measured_together(tmp_path, image_affine, as_mask, fragment):
    labels = np.zeros((16, 16, 16), np.uint8)
    labels[4:8, 4:8, 4:8] = 1
    affine = np.diag([2.0, 1.0, 1.0, 1.0])
    mask = write_nifti(tmp_path / "mask.nii.gz", labels, affine)
    noise = np.random.default_rng(0).integers(0, 256, (16, 16, 16)).astype(np.uint8)
    image = write_nifti(tmp_path / "t1.nii.gz", noise, image_affine if image_affine is not None else affine)
    arguments = ("stats", str(image)) if as_mask else ("stats", str(mask), "--image", str(image))
    result = _run(*arguments)
    assert result.returncode == 1 and result.stdout == "" and result.stderr.count("\n") == 1
    assert fragment in result.stderr


def test_evaluate_and_stats_give_one_volume_on_a_sheared_grid(tmp_path, capsys):
    labels = np.zeros((10, 10, 10), np.uint8)
    labels[2:6, 2:6, 2:6] = 1  # 64 voxels
    sheared = np.diag([2.0, 1.0, 1.0, 1.0])
    sheared[0, 1] = 1.0  # voxel edges of 2 and 1.41 mm, but 2 mm³ a voxel: the zoom product said 2.83
    mask = write_nifti(tmp_path / "mask.nii.gz", labels, sheared, sform_code=2)
    assert main(["stats", str(mask), "--json"]) == 0
    measured = json.loads(capsys.readouterr().out)["classes"][1]["volume_ml"]
    assert main(["evaluate", str(mask), str(mask), "--json"]) == 0
    scored = json.loads(capsys.readouterr().out)["classes"][1]
    assert measured == scored["volume_ml_pred"] == scored["volume_ml_ref"] == pytest.approx(64 * 0.002)
