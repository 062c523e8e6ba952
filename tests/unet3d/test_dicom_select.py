"""Which series `load_dicom` reads from an upload holding several, and what it reports (never about the patient)."""

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
from dicom_series import SeriesSpec, reoriented, template, write_series, zip_folder
from hostile_dicom import PHI
from pydicom.data import get_testdata_file

from unet3d.dicom import load_dicom
from unet3d.errors import AmbiguousSeriesError, InvalidVolumeError
from unet3d.io import Volume


def two_series(folder: Path) -> tuple[SeriesSpec, SeriesSpec]:
    data, affine = template(6)
    t1 = SeriesSpec(description="T1 MPRAGE", number=3)
    t2 = SeriesSpec(description="T2 FLAIR", number=4, study_uid=t1.study_uid, frame_uid=t1.frame_uid)
    write_series(folder / "t1", data, affine, t1)
    write_series(folder / "t2", data[:, :, ::2] * 2, affine @ np.diag([1, 1, 2, 1]), t2)
    return t1, t2


def localizer(folder: Path, spec: SeriesSpec) -> None:
    """A 3-image scout in another plane, as scanners store beside the series."""
    data, affine = reoriented(*template(6), "PIR")
    scout = SeriesSpec(description="Localizer", number=1, image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"),
                       study_uid=spec.study_uid, frame_uid=spec.frame_uid)  # fmt: skip
    write_series(folder / "scout", data[:, :, 14:17], affine, scout)


def test_a_localizer_beside_the_series_is_ignored_and_reported(tmp_path: Path):
    data, affine = template(6)
    spec = SeriesSpec()
    write_series(tmp_path / "upload" / "t1", data, affine, spec)
    localizer(tmp_path / "upload", spec)
    volume = load_dicom(tmp_path / "upload")
    assert volume.source.series_uid == spec.series_uid
    [ignored] = volume.source.ignored_series
    assert (ignored.description, ignored.images, ignored.reason) == ("Localizer", 3, "localizer (ImageType LOCALIZER)")


def test_a_scout_without_the_localizer_type_is_ignored_for_having_too_few_slices(tmp_path: Path):
    data, affine = template(6)
    spec = SeriesSpec()
    write_series(tmp_path / "upload" / "t1", data, affine, spec)
    scout = SeriesSpec(description="3-plane scout", number=1, study_uid=spec.study_uid)
    write_series(tmp_path / "upload" / "scout", data[:, :, :3], affine, scout)
    [ignored] = load_dicom(tmp_path / "upload").source.ignored_series
    assert ignored.reason == "localizer (at most 3 slices in one orientation)"


def test_two_volumetric_series_are_listed_and_one_is_picked_by_uid(tmp_path: Path):
    t1, t2 = two_series(tmp_path / "upload")
    archive = zip_folder(tmp_path / "upload", tmp_path / "study.zip")
    with pytest.raises(AmbiguousSeriesError) as raised:
        load_dicom(archive)
    message = str(raised.value)
    assert isinstance(raised.value, InvalidVolumeError)
    for expected in ("2 volumetric series", "series 3 'T1 MPRAGE' (32 images", "series 4 'T2 FLAIR' (16 images",
                     t1.series_uid, t2.series_uid, "--series UID", "?series=UID"):  # fmt: skip
        assert expected in message
    volume = load_dicom(archive, series=t2.series_uid)
    assert volume.shape == (33, 39, 16)
    assert volume.source.series_uid == t2.series_uid
    [ignored] = volume.source.ignored_series
    assert (ignored.uid, ignored.reason) == (t1.series_uid, "not selected")


def test_an_unknown_series_uid_lists_what_the_upload_holds(tmp_path: Path):
    t1, _ = two_series(tmp_path / "upload")
    with pytest.raises(InvalidVolumeError, match=r"no image series with UID '1\.2\.3'") as raised:
        load_dicom(tmp_path / "upload", series="1.2.3")
    assert t1.series_uid in str(raised.value)


def test_a_report_beside_the_series_is_listed_as_not_an_image(tmp_path: Path):
    data, affine = template(6)
    spec = SeriesSpec()
    write_series(tmp_path / "upload", data, affine, spec)
    report = pydicom.dcmread(get_testdata_file("test-SR.dcm"))
    report.PatientName, report.PatientID = spec.patient.name, spec.patient.id
    report.PatientBirthDate = spec.patient.birth_date
    report.save_as(tmp_path / "upload" / "SR0001")
    [ignored] = load_dicom(tmp_path / "upload").source.ignored_series
    assert (ignored.images, ignored.reason) == (1, "not an image: a structured report (SR)")
    report.PatientID = "SOMEONE-ELSE"
    report.save_as(tmp_path / "upload" / "SR0001")
    with pytest.raises(InvalidVolumeError, match="mixes 2 patients") as raised:
        load_dicom(tmp_path / "upload")
    assert "SOMEONE-ELSE" not in str(raised.value)


def test_the_source_report_is_json_and_holds_no_patient_data(tmp_path: Path):
    data, affine = template(6)
    spec = SeriesSpec()
    write_series(tmp_path / "upload" / "t1", data, affine, spec)
    localizer(tmp_path / "upload", spec)
    volume = load_dicom(tmp_path / "upload")
    report = volume.source.as_dict()
    assert set(report) == {"format", "series_uid", "modality", "images", "ignored_series"}
    assert (report["format"], report["modality"], report["images"]) == ("dicom", "MR", 32)
    shown = json.dumps(report) + repr(volume) + repr(volume.source) + volume.name
    assert not any(identifier in shown for identifier in PHI)


def test_a_nifti_volume_reports_nifti_as_its_source():
    volume = Volume(np.zeros((4, 4, 4), np.float32), np.eye(4), None, (4, 4, 4))  # type: ignore[arg-type]
    assert volume.source.as_dict() == {
        "format": "nifti",
        "series_uid": None,
        "modality": None,
        "images": None,
        "ignored_series": [],
    }


def test_looks_like_dicom_tells_series_from_nifti(tmp_path: Path, volume_path: Path):
    from unet3d.dicom import looks_like_dicom

    data, affine = template(6)
    files = write_series(tmp_path / "series", data, affine)
    archive = zip_folder(tmp_path / "series", tmp_path / "renamed.bin")
    assert looks_like_dicom(tmp_path / "series") and looks_like_dicom(archive) and looks_like_dicom(files)
    assert looks_like_dicom(files[0])  # IM0001: no suffix, the DICM marker
    assert not looks_like_dicom(volume_path) and not looks_like_dicom(tmp_path / "missing.nii.gz")


def test_importing_unet3d_leaves_highdicom_unloaded():
    import subprocess
    import sys

    code = "import sys, unet3d, unet3d.dicom; print('highdicom' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
