"""`unet3d predict` on DICOM: a series folder or .zip is one case, `--dicom-seg` writes the SEG (one input, or beside
each mask of a batch), `--series` picks one series, a batch of series resumes on whole masks and SEGs; `unet3d stats`
measures a SEG; nothing a user sees or the run records names the patient."""

import csv
import json
import logging
import re
from pathlib import Path

import numpy as np
import pytest
from dicom_series import template, write_series, zip_folder
from hostile_dicom import PHI, two_series

from unet3d.cli import main
from unet3d.dicom import load_dicom, read_dicom_seg
from unet3d.geometry import same_grid
from unet3d.io import load_volume

SHAPE = (33, 39, 32)


@pytest.fixture(scope="module")
def series(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("export") / "brain"
    write_series(folder, *template(6), shuffle=2)
    return folder


def run(*arguments: str | Path, model: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["predict", *map(str, arguments), "--model", str(model), "--device", "cpu"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_seg_of(seg: Path, mask: Path, source: Path) -> None:
    """The SEG reads back on the series' grid equal to the NIfTI mask, itself on the series' grid."""
    volume, labels, back = load_dicom(source), load_volume(mask), read_dicom_seg(seg)
    assert same_grid(labels, volume) and same_grid(back, volume)
    np.testing.assert_array_equal(back.data, labels.data)


def test_one_series_folder_writes_the_mask_and_the_seg(series, tiny_model_dir, tmp_path, capsys):
    mask, seg = tmp_path / "mask.nii.gz", tmp_path / "mask.dcm"
    code, out, err = run(series, "-o", mask, "--dicom-seg", seg, "--json", model=tiny_model_dir, capsys=capsys)
    assert code == 0, err
    summary = json.loads(out)
    assert summary["source"]["format"] == "dicom" and summary["source"]["images"] == SHAPE[2]
    assert (summary["output"], summary["dicom_seg"]) == (str(mask), str(seg))
    assert_seg_of(seg, mask, series)


def test_a_zip_with_dicom_seg_alone_writes_the_seg_beside_the_mask(series, tiny_model_dir, tmp_path, capsys):
    upload = zip_folder(series, tmp_path / "scan.zip", prefix="DICOM/")
    code, _, err = run(upload, "-o", tmp_path / "out" / "m.nii.gz", "--dicom-seg", model=tiny_model_dir, capsys=capsys)
    assert code == 0, err
    assert_seg_of(tmp_path / "out" / "scan_seg.dcm", tmp_path / "out" / "m.nii.gz", upload)


def test_several_series_exit_1_with_the_listing_and_series_picks_one(tiny_model_dir, tmp_path, capsys):
    upload = tmp_path / "study.zip"
    upload.write_bytes(two_series()())
    code, _, err = run(upload, "-o", tmp_path / "mask.nii.gz", model=tiny_model_dir, capsys=capsys)
    assert code == 1 and err.count("\n") == 1
    assert "2 volumetric series" in err and "'T1 MPRAGE'" in err and "'T2 FLAIR'" in err and "--series UID" in err
    uid = re.findall(r"'T2 FLAIR' \(\d+ images, UID ([0-9.]+)\)", err)[0]
    code, out, err = run(upload, "-o", tmp_path / "mask.nii.gz", "--series", uid, "--json", model=tiny_model_dir,
                         capsys=capsys)  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["source"]["series_uid"] == uid


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (["--dicom-seg", "x.dcm"], "is not DICOM: leave --dicom-seg out"),
        (["--series", "1.2.3"], "is a NIfTI volume: leave the series out"),
    ],
)
def test_dicom_options_for_a_nifti_input_are_refused(extra, fragment, volume_path, tiny_model_dir, tmp_path, capsys):
    code, _, err = run(volume_path, "-o", tmp_path / "m.nii.gz", *extra, model=tiny_model_dir, capsys=capsys)
    assert code == 1 and fragment in err
    assert not (tmp_path / "m.nii.gz").exists()


def test_batch_options_that_name_one_series_or_one_file_are_refused(series, volume_path, tiny_model_dir, tmp_path,
                                                                     capsys):  # fmt: skip
    code, _, err = run(series, volume_path, "-o", tmp_path / "out", "--series", "1.2", model=tiny_model_dir,
                       capsys=capsys)  # fmt: skip
    assert code == 1 and "--series picks one series of one DICOM input, but 2 inputs were given" in err
    code, _, err = run(series, volume_path, "-o", tmp_path / "out", "--dicom-seg", "a.dcm", model=tiny_model_dir,
                       capsys=capsys)  # fmt: skip
    assert code == 1 and "names one file, but a batch writes one SEG per DICOM input" in err


@pytest.fixture
def cohort(series: Path, volume_path: Path, tmp_path: Path) -> Path:
    """A folder of cases: a series folder, a zipped series (no .zip name), and a NIfTI file."""
    root = tmp_path / "cohort"
    root.mkdir()
    write_series(root / "case_a" / "DICOM", *template(6))
    zip_folder(series, root / "case_b")
    (root / "case_c.nii.gz").write_bytes(volume_path.read_bytes())
    return root


def test_a_folder_of_series_is_a_batch_with_a_seg_beside_each_dicom_mask_and_resumes(
    cohort: Path, tiny_model_dir: Path, tmp_path: Path, capsys
):
    out = tmp_path / "out"
    code, _, err = run(cohort, "-o", out, "--dicom-seg", model=tiny_model_dir, capsys=capsys)
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == [
        "case_a_mask.nii.gz", "case_a_seg.dcm", "case_b_mask.nii.gz", "case_b_seg.dcm", "case_c_mask.nii.gz",
        "results.csv",
    ]  # fmt: skip
    assert_seg_of(out / "case_b_seg.dcm", out / "case_b_mask.nii.gz", cohort / "case_b")
    before = (out / "case_a_seg.dcm").stat().st_mtime_ns
    # A SEG cut short (a copy interrupted) and a missing one are redone; the whole ones are skipped.
    (out / "case_b_seg.dcm").write_bytes((out / "case_b_seg.dcm").read_bytes()[:-200])
    code, _, err = run(cohort, "-o", out, "--dicom-seg", model=tiny_model_dir, capsys=capsys)
    assert code == 0 and "2 of 3 cases already done" in err
    assert (out / "case_a_seg.dcm").stat().st_mtime_ns == before
    assert_seg_of(out / "case_b_seg.dcm", out / "case_b_mask.nii.gz", cohort / "case_b")
    with open(out / "results.csv", newline="", encoding="utf-8") as file:
        statuses = {row["case"]: row["status"] for row in csv.DictReader(file)}
    assert statuses == {"case_a": "skipped", "case_b": "ok", "case_c": "skipped"}


def test_a_series_folder_given_with_a_folder_output_is_one_case(series, tiny_model_dir, tmp_path, capsys):
    code, _, err = run(series, "-o", tmp_path / "out", "--dicom-seg", tmp_path / "segs", model=tiny_model_dir,
                       capsys=capsys)  # fmt: skip
    assert code == 0, err
    assert (tmp_path / "out" / "brain_mask.nii.gz").exists() and (tmp_path / "segs" / "brain_seg.dcm").exists()


def test_stats_measure_a_seg_on_its_series(series, tiny_model_dir, tmp_path, capsys):
    mask, seg = tmp_path / "m.nii.gz", tmp_path / "m.dcm"
    assert run(series, "-o", mask, "--dicom-seg", seg, model=tiny_model_dir, capsys=capsys)[0] == 0
    outputs = []
    for measured in (mask, seg):
        assert main(["stats", str(measured), "--image", str(series), "--json"]) == 0
        outputs.append(json.loads(capsys.readouterr().out))
    assert outputs[0]["classes"] == outputs[1]["classes"]
    assert outputs[1]["classes"][1]["intensity"] is not None


def test_no_patient_identifier_reaches_the_terminal_or_the_results(
    cohort, tiny_model_dir, tmp_path, capsys, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.DEBUG)
    (cohort / "two.zip").write_bytes(two_series()())  # refused: the listing names series, never the patient
    out = tmp_path / "out"
    arguments = ["-v", "predict", str(cohort), "-o", str(out), "--dicom-seg", "--json", "--model", str(tiny_model_dir)]
    code = main([*arguments, "--device", "cpu"])
    stdout, stderr = capsys.readouterr()
    assert code == 1 and "2 volumetric series" in stderr
    written = [stdout, stderr, caplog.text, (out / "results.csv").read_text(encoding="utf-8")]
    assert [value for value in PHI for text in written if value in text] == []
