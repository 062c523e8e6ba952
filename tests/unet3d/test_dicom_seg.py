"""DICOM SEG out: read back frame by frame with highdicom, equal to the mask; dciodvfy finds no error; the model and
classes are described; only the patient/study attributes the standard requires are copied."""

import shutil
import subprocess
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from dicom_series import Patient, SeriesSpec, reoriented, rotated, slice_datasets, template, write_series
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from unet3d import Segmenter, load_card, resolve_source
from unet3d.dicom import load_dicom, read_dicom_seg, write_dicom_seg
from unet3d.errors import InvalidVolumeError, UnsupportedFormatError
from unet3d.geometry import same_grid
from unet3d.io import Volume, load_volume

SHIPPED = Path(__file__).resolve().parents[2] / "models" / "unet3d-brain-tissue"
CASES = {"axial": ("LPS", None), "sagittal": ("PIR", None), "oblique": ("LIP", (15.0, -20.0)), "multi-frame": None}


@pytest.fixture(scope="module")
def model():
    source = resolve_source(SHIPPED)
    return source, load_card(source.directory / "model.yaml")


def series(folder: Path, case: str) -> Volume:
    codes, rotation = CASES[case] or ("LIP", (5.0, 5.0))
    data, affine = reoriented(*template(6), codes)
    affine = rotated(affine, *rotation) if rotation else affine
    if CASES[case] is None:
        multi = hd.legacy.LegacyConvertedEnhancedMRImage(
            slice_datasets(data, affine, SeriesSpec()), generate_uid(), 5, generate_uid(), 1
        )
        folder.mkdir()
        multi.save_as(folder / "enhanced.dcm")
    else:
        write_series(folder, data, affine, shuffle=3)
    return load_dicom(folder)


def labels(volume: Volume) -> np.ndarray:
    return np.digitize(volume.data, [60, 150]).astype(np.uint8)  # 0 background, 1 and 2 by intensity


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_the_seg_reads_back_frame_by_frame_equal_to_the_mask(case: str, model, tmp_path: Path):
    volume = series(tmp_path / "series", case)
    mask = labels(volume)
    path = write_dicom_seg(mask, volume, model[1], model[0], tmp_path / "mask.dcm")
    seg = hd.seg.segread(path)
    reference = volume.source.dicom
    for k, (instance, frame) in enumerate(reference.slices):
        uid = reference.headers[instance].SOPInstanceUID
        if len(reference.headers) == 1:
            pixels = seg.get_pixels_by_source_frame(uid, [frame + 1], combine_segments=True, relabel=False)
        else:
            pixels = seg.get_pixels_by_source_instance([uid], combine_segments=True, relabel=False)
        np.testing.assert_array_equal(pixels[0], mask[:, :, k].T)
    back = read_dicom_seg(path)
    assert same_grid(back, volume)
    np.testing.assert_array_equal(back.data, mask)


def test_dciodvfy_finds_no_error(model, tmp_path: Path):
    dciodvfy = shutil.which("dciodvfy")
    assert dciodvfy, "dciodvfy is missing: apt-get install dicom3tools (scripts/test.sh does)"
    volume = series(tmp_path / "series", "oblique")
    path = write_dicom_seg(labels(volume), volume, model[1], model[0], tmp_path / "mask.dcm")
    report = subprocess.run([dciodvfy, str(path)], capture_output=True, text=True, check=False)
    lines = (report.stdout + report.stderr).splitlines()
    assert "Segmentation" in lines[0]
    assert [line for line in lines if line.startswith("Error")] == []


def test_the_seg_describes_classes_and_model_and_copies_only_required_patient_data(model, tmp_path: Path):
    source, card = model
    volume = series(tmp_path / "series", "axial")
    path = write_dicom_seg(labels(volume), volume, card, source, tmp_path / "mask.dcm")
    seg = pydicom.dcmread(path)
    segments = seg.SegmentSequence
    assert [s.SegmentLabel for s in segments] == [c.name for c in card.classes[1:]]
    for segment, info in zip(segments, card.classes[1:], strict=True):
        rgb = hd.color.CIELabColor.from_dicom_value(segment.RecommendedDisplayCIELabValue).to_rgb()
        assert np.abs(np.array(rgb) - [int(info.color[i : i + 2], 16) for i in (1, 3, 5)]).max() <= 1
        algorithm = segment.SegmentationAlgorithmIdentificationSequence[0]
        assert (algorithm.AlgorithmName, algorithm.AlgorithmVersion) == ("unet3d-brain-tissue", source.revision)
        assert f"weights_sha256={source.sha256}" in algorithm.AlgorithmParameters
    header = volume.source.dicom.headers[0]
    assert seg.StudyInstanceUID == header.StudyInstanceUID
    assert seg.FrameOfReferenceUID == header.FrameOfReferenceUID
    referenced = seg.ReferencedSeriesSequence[0]
    assert referenced.SeriesInstanceUID == volume.source.series_uid
    assert {i.ReferencedSOPInstanceUID for i in referenced.ReferencedInstanceSequence} == {
        h.SOPInstanceUID for h in volume.source.dicom.headers
    }
    patient = Patient()
    assert (seg.PatientName, seg.PatientID, seg.PatientBirthDate) == (patient.name, patient.id, patient.birth_date)
    raw = path.read_bytes()
    for extra in (b"1 Hospital Road", b"OTHER-77", b"Test Hospital"):  # in every source file, in no SEG
        assert extra not in raw


def test_prediction_save_dicom_seg_end_to_end(tiny_model_dir: Path, tmp_path: Path):
    volume = series(tmp_path / "case 1", "oblique")
    prediction = Segmenter.from_pretrained(tiny_model_dir, device="cpu").predict(volume)
    (tmp_path / "out").mkdir()
    written = prediction.save_dicom_seg(tmp_path / "out")
    assert written == tmp_path / "out" / "case 1_seg.dcm"
    nifti = load_volume(prediction.save(tmp_path / "out"))
    back = read_dicom_seg(written)
    assert same_grid(back, nifti)
    np.testing.assert_array_equal(back.data, nifti.data)
    assert len(np.unique(prediction.mask)) > 1  # a mask with classes to compare, not an empty one


def test_save_dicom_seg_refuses_a_volume_that_did_not_come_from_dicom(tiny_model_dir: Path, volume_path: Path):
    prediction = Segmenter.from_pretrained(tiny_model_dir, device="cpu").predict(volume_path)
    with pytest.raises(UnsupportedFormatError, match="was not read from DICOM"):
        prediction.save_dicom_seg(volume_path.parent / "mask.dcm")


def test_write_refuses_labels_the_card_does_not_have(model, tmp_path: Path):
    volume = series(tmp_path / "series", "axial")
    mask = labels(volume)
    mask[0, 0, 0] = 5
    with pytest.raises(InvalidVolumeError, match="the card's 3 classes"):
        write_dicom_seg(mask, volume, model[1], model[0], tmp_path / "mask.dcm")


def test_another_tools_seg_reads_as_a_label_mask_and_a_scan_does_not():
    liver = read_dicom_seg(get_testdata_file("liver_1frame.dcm"))
    assert liver.shape == (512, 512, 1)
    assert int(liver.data.sum()) == int(hd.seg.segread(get_testdata_file("liver_1frame.dcm")).pixel_array.sum())
    with pytest.raises(UnsupportedFormatError, match="not a readable DICOM Segmentation"):
        read_dicom_seg(get_testdata_file("MR_small.dcm"))
