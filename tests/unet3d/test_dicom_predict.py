"""A DICOM series wherever a NIfTI goes in Python: `load_volume`, `check_volume`, `load_mask`, `Segmenter.predict`
(folder, zip, file list, `series=`), the summary's `source`, and no patient data in any report or log line."""

import json
import logging
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
from dicom_series import Patient, SeriesSpec, template, write_series, zip_folder
from hostile_dicom import PHI, bomb, two_series, with_entry

from unet3d import AmbiguousSeriesError, Segmenter, load_mask, load_volume
from unet3d.dicom import inspect_dicom, load_dicom
from unet3d.errors import (
    InvalidVolumeError,
    ParameterError,
    UnreadableVolumeError,
    UnsupportedFormatError,
    VolumeTooLargeError,
)
from unet3d.geometry import same_grid
from unet3d.io import check_volume
from unet3d.provenance import NIFTI_SOURCE

SHAPE = (33, 39, 32)  # the template at 6 mm, in the series' (column, row, slice) order


@pytest.fixture(scope="module")
def series(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding one MR series of the template (shuffled file names), with its patient's identifiers."""
    folder = tmp_path_factory.mktemp("dicom") / "T1 export"
    write_series(folder, *template(6), shuffle=1)
    return folder


@pytest.fixture(scope="module")
def archive(series: Path) -> Path:
    """The series zipped under a folder, with a name that says nothing of its content (no .zip)."""
    return zip_folder(series, series.parent / "upload", prefix="export/DICOM/")


@pytest.fixture(scope="module")
def segmenter(tiny_model_dir: Path) -> Segmenter:
    return Segmenter.from_pretrained(tiny_model_dir, device="cpu")


def test_load_volume_reads_a_folder_a_zip_by_content_and_a_file_list_alike(series: Path, archive: Path):
    from_folder = load_volume(series)
    from_zip = load_volume(archive)
    from_files = load_volume(sorted(series.iterdir()))
    assert from_folder.shape == SHAPE and from_folder.source.format == "dicom"
    for other in (from_zip, from_files):
        assert same_grid(other, from_folder)
        np.testing.assert_array_equal(other.data, from_folder.data)
    assert (from_folder.name, from_zip.name, from_files.name) == ("T1 export", "upload", "T1 MPRAGE")


def test_a_single_slice_is_refused_with_what_to_send(series: Path):
    one = sorted(series.iterdir())[0]
    for source in (one, [one]):
        with pytest.raises(InvalidVolumeError, match=r"single DICOM image, one slice of a series: send the whole "
                           r"series, as the folder holding its files or a \.zip of it"):  # fmt: skip
            load_volume(source)


def test_a_dcm_name_or_the_dicom_marker_routes_a_file_to_the_dicom_reader(series: Path, tmp_path: Path):
    not_dicom = tmp_path / "notes.dcm"
    not_dicom.write_bytes(b"hello")
    with pytest.raises(UnsupportedFormatError, match="none of the 1 file is DICOM"):
        load_volume(not_dicom)
    unnamed = tmp_path / "IM0001"
    unnamed.write_bytes(sorted(series.iterdir())[0].read_bytes())
    with pytest.raises(InvalidVolumeError, match="single DICOM image"):
        load_volume(unnamed)


def test_series_is_refused_for_a_nifti_file_and_for_an_array(volume_path: Path, segmenter: Segmenter):
    with pytest.raises(ParameterError, match="is a NIfTI volume: leave the series out"):
        load_volume(volume_path, series="1.2.3")
    with pytest.raises(ParameterError, match="series= picks a series while reading a DICOM upload"):
        segmenter.predict(np.zeros((8, 8, 8), np.float32), series="1.2.3")


def test_predict_takes_a_series_and_picks_one_of_two_by_uid(segmenter: Segmenter, tmp_path: Path):
    upload = tmp_path / "two.zip"
    upload.write_bytes(two_series()())
    with pytest.raises(AmbiguousSeriesError, match="2 volumetric series") as refused:
        segmenter.predict(upload)
    uids = re.findall(r"UID ([0-9.]+)\)", str(refused.value))
    prediction = segmenter.predict(upload, series=uids[1])
    source = prediction.summary()["source"]
    assert source["format"] == "dicom" and source["series_uid"] == uids[1] and source["modality"] == "MR"
    assert source["images"] == SHAPE[2]
    assert source["ignored_series"] == [
        {"uid": uids[0], "description": "T1 MPRAGE", "images": SHAPE[2], "reason": "not selected"}
    ]
    assert prediction.mask.shape == SHAPE


def test_the_summary_source_of_a_nifti_input_is_the_nifti_source(segmenter: Segmenter, volume_path: Path):
    source = segmenter.predict(volume_path).summary()["source"]
    assert source == NIFTI_SOURCE.as_dict()
    assert source == {"format": "nifti", "series_uid": None, "modality": None, "images": None, "ignored_series": []}


def test_a_prediction_of_a_series_saves_a_seg_that_reads_back_as_its_mask(
    segmenter: Segmenter, archive: Path, tmp_path: Path
):
    prediction = segmenter.predict(archive)
    written = prediction.save_dicom_seg(tmp_path)
    assert written == tmp_path / "upload_seg.dcm"
    assert not list(tmp_path.glob("*.tmp-*"))
    back = load_mask(written)
    assert same_grid(back, prediction.volume)
    np.testing.assert_array_equal(back.data, prediction.mask)


def test_check_volume_refuses_what_the_zip_index_gives_away_without_inflating(tmp_path: Path):
    bombed = tmp_path / "bomb.zip"
    bombed.write_bytes(bomb(64))
    with pytest.raises(VolumeTooLargeError, match="times its compressed size"):
        check_volume(bombed)
    with pytest.raises(VolumeTooLargeError, match=r"more than the limit of 4\.0 MiB"):
        check_volume(bombed, max_decompressed_bytes=4 << 20)
    slip = tmp_path / "slip.zip"
    slip.write_bytes(with_entry("../../evil/IM9999", b"x")())
    with pytest.raises(UnreadableVolumeError, match="points outside the archive"):
        check_volume(slip)


def test_inspect_dicom_gives_load_dicoms_grid_without_decoding(archive: Path):
    grid = inspect_dicom(archive)
    volume = load_dicom(archive)
    assert grid.shape == volume.shape and grid.series_uid == volume.source.series_uid
    np.testing.assert_allclose(grid.affine, volume.affine)


def test_load_mask_applies_the_caps_to_a_seg_before_unpacking_it(segmenter: Segmenter, series: Path, tmp_path):
    seg = segmenter.predict(series).save_dicom_seg(tmp_path / "mask.dcm")
    with pytest.raises(VolumeTooLargeError, match=f"the SEG spans {np.prod(SHAPE)} voxels"):
        load_mask(seg, max_voxels=1000)
    with pytest.raises(UnsupportedFormatError, match="is not a readable DICOM Segmentation"):
        load_mask(sorted(series.iterdir())[0])


def test_no_patient_name_id_or_birth_date_in_the_summary_repr_errors_or_logs(
    segmenter: Segmenter, series: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.DEBUG)
    other = tmp_path / "other"
    patient = Patient("Roe^Richard", "PID-0002", "19800202", "M")
    write_series(other, *template(6), SeriesSpec(patient=patient, description="T2"))
    mixed = tmp_path / "mixed.zip"
    with zipfile.ZipFile(mixed, "w") as upload:
        for path in [*series.iterdir(), *other.iterdir()]:
            upload.write(path, f"{path.parent.name}/{path.name}")
    prediction = segmenter.predict(series)
    reports = [json.dumps(prediction.summary()), repr(prediction), repr(prediction.volume)]
    reports += [repr(prediction.volume.source), str(prediction.volume.source.as_dict())]
    with pytest.raises(InvalidVolumeError) as refused:
        segmenter.predict(mixed)
    reports += [str(refused.value), caplog.text]
    phi = [*PHI, patient.name, patient.id, patient.birth_date, "Roe"]
    assert [value for value in phi for report in reports if value in report] == []


def test_one_dcm_file_holding_the_whole_volume_is_read_on_its_own(series: Path, tmp_path: Path):
    import highdicom as hd
    from dicom_series import slice_datasets
    from pydicom.uid import generate_uid

    data, affine = template(6)
    enhanced = hd.legacy.LegacyConvertedEnhancedMRImage(
        slice_datasets(data, affine, SeriesSpec()), generate_uid(), 5, generate_uid(), 1
    )
    enhanced.save_as(tmp_path / "enhanced.dcm")
    volume, slices = load_volume(tmp_path / "enhanced.dcm"), load_volume(series)
    assert volume.source.format == "dicom" and volume.source.images == 1
    assert same_grid(volume, slices)
    np.testing.assert_array_equal(volume.data, slices.data)
