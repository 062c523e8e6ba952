"""`load_dicom` against the truth (the array and affine each series was written from) and against dcm2niix."""

import shutil
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest
from dicom_series import (
    SeriesSpec,
    assert_same_world,
    dcm2niix,
    expected_values,
    reoriented,
    rotated,
    slice_datasets,
    template,
    write_files,
    write_series,
    zip_folder,
)
from pydicom.data import get_testdata_file
from pydicom.uid import JPEG2000Lossless, JPEGLSLossless, RLELossless, generate_uid

from unet3d.dicom import load_dicom
from unet3d.io import load_volume, save_mask

# (voxel axis codes of the stored grid, world rotation in degrees about x then z)
ORIENTATIONS = {
    "axial": ("LPS", None),
    "axial-descending": ("LAI", None),
    "coronal": ("LIP", None),
    "sagittal": ("PIR", None),
    "oblique-axial": ("LPS", (20.0, 15.0)),
    "oblique-sagittal": ("PIR", (-10.0, 25.0)),
}


def grid(codes: str, rotation: tuple[float, float] | None, step: int = 4) -> tuple[np.ndarray, np.ndarray]:
    data, affine = reoriented(*template(step), codes)
    return data * 4.0, rotated(affine, *rotation) if rotation else affine


@pytest.mark.parametrize("orientation", ORIENTATIONS, ids=list(ORIENTATIONS))
def test_each_orientation_equals_the_truth_and_dcm2niix(orientation: str, tmp_path: Path):
    data, affine = grid(*ORIENTATIONS[orientation])
    write_series(tmp_path / "series", data, affine, shuffle=7)
    volume = load_dicom(tmp_path / "series")
    assert_same_world(volume.data, volume.affine, data, affine)
    reference = dcm2niix(tmp_path / "series", tmp_path / "dcm2niix")
    assert_same_world(volume.data, volume.affine, reference.get_fdata(), reference.affine)
    # The voxel order is the DICOM pixel matrix's: I along a row (columns), J down the rows, K along the normal.
    assert volume.shape == (data.shape[0], data.shape[1], data.shape[2])
    assert volume.data.dtype == np.float32


def test_slice_order_comes_from_positions_not_names_or_instance_numbers(tmp_path: Path):
    data, affine = grid("LPS", None)
    write_series(tmp_path / "ordered", data, affine)
    scrambled = SeriesSpec(instance_numbers=list(np.random.default_rng(3).permutation(data.shape[2]) + 1))
    write_series(tmp_path / "scrambled", data, affine, scrambled, shuffle=11)
    ordered, shuffled = load_dicom(tmp_path / "ordered"), load_dicom(tmp_path / "scrambled")
    np.testing.assert_array_equal(ordered.data, shuffled.data)
    np.testing.assert_array_equal(ordered.affine, shuffled.affine)


@pytest.mark.parametrize(
    ("dtype", "slope", "intercept", "modality"),
    [
        (np.int16, 0.5, -1024.0, "CT"),
        (np.uint16, 1.0, 0.0, "MR"),
        (np.uint8, 1.0, 0.0, "MR"),
        (np.int32, 3.0, 7.0, "MR"),
    ],
    ids=["int16-rescaled-ct", "uint16", "uint8", "int32-rescaled"],
)
def test_pixel_types_and_rescale(dtype: type, slope: float, intercept: float, modality: str, tmp_path: Path):
    data, affine = grid("LPS", None)
    spec = SeriesSpec(dtype=dtype, slope=slope, intercept=intercept, modality=modality)
    values = data * 2.5 + (-800 if modality == "CT" else 0)  # CT: negative HU, stored as signed integers
    if dtype == np.uint8:
        values = data
    write_series(tmp_path / "series", values, affine, spec)
    volume = load_dicom(tmp_path / "series")
    assert_same_world(volume.data, volume.affine, expected_values(values, spec), affine)
    reference = dcm2niix(tmp_path / "series", tmp_path / "dcm2niix")
    assert_same_world(volume.data, volume.affine, reference.get_fdata(), reference.affine)
    assert volume.source.modality == modality


def test_enhanced_multi_frame_mr_equals_its_single_frame_series(tmp_path: Path):
    data, affine = grid("LIP", (12.0, -8.0))
    spec = SeriesSpec(slope=2.0, intercept=-50.0)
    frames = slice_datasets(data, affine, spec)
    multi = hd.legacy.LegacyConvertedEnhancedMRImage(
        frames, series_instance_uid=generate_uid(), series_number=5, sop_instance_uid=generate_uid(), instance_number=1
    )
    (tmp_path / "series").mkdir()
    multi.save_as(tmp_path / "series" / "enhanced.dcm")
    volume = load_dicom(tmp_path / "series")
    assert volume.source.images == 1
    assert_same_world(volume.data, volume.affine, expected_values(data, spec), affine)
    reference = dcm2niix(tmp_path / "series", tmp_path / "dcm2niix")
    assert_same_world(volume.data, volume.affine, reference.get_fdata(), reference.affine)


@pytest.mark.parametrize("syntax", [RLELossless, JPEGLSLossless, JPEG2000Lossless], ids=lambda uid: uid.name)
def test_compressed_series_decode(syntax: pydicom.uid.UID, tmp_path: Path):
    data, affine = grid("PIR", None, step=6)
    spec = SeriesSpec(transfer_syntax=syntax, dtype=np.int16, slope=1.0, intercept=-200.0)
    write_series(tmp_path / "series", data, affine, spec)
    assert pydicom.dcmread(next((tmp_path / "series").iterdir())).file_meta.TransferSyntaxUID == syntax
    volume = load_dicom(tmp_path / "series")
    assert_same_world(volume.data, volume.affine, expected_values(data, spec), affine)
    reference = dcm2niix(tmp_path / "series", tmp_path / "dcm2niix")
    assert_same_world(volume.data, volume.affine, reference.get_fdata(), reference.affine)


def stack_copies(name: str, folder: Path, count: int = 5, step_mm: float = 3.0) -> np.ndarray:
    """`count` copies of one of pydicom's test images, moved along their normal: a real encoder's pixel data in a
    valid series. Returns the stored pixels of one copy as pydicom decodes them."""
    source = pydicom.dcmread(get_testdata_file(name))
    orientation = np.array([float(v) for v in source.ImageOrientationPatient])
    normal = np.cross(orientation[:3], orientation[3:])
    datasets = []
    for k in range(count):
        copy = pydicom.dcmread(get_testdata_file(name))
        copy.SOPInstanceUID = copy.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        copy.ImagePositionPatient = [
            f"{v:.4f}" for v in np.array(source.ImagePositionPatient, float) + k * step_mm * normal
        ]
        copy.InstanceNumber = k + 1
        datasets.append(copy)
    for path, ds in zip(write_files(folder, datasets), datasets, strict=True):
        ds.save_as(path)  # as the test file was encoded (big endian, implicit VR, ...), not re-encoded
    return source.pixel_array


@pytest.mark.parametrize(
    "name",
    [
        "MR_small.dcm",
        "MR_small_RLE.dcm",
        "MR_small_jp2klossless.dcm",
        "MR_small_jpeg_ls_lossless.dcm",
        "MR_small_bigendian.dcm",
        "MR_small_implicit.dcm",
        "MR_small_padded.dcm",
    ],
)
@pytest.mark.filterwarnings("ignore:The pixel data is .* excess padding")  # pydicom on the padded original
def test_pydicoms_own_encodings_decode_to_the_same_pixels(name: str, tmp_path: Path):
    stored = stack_copies(name, tmp_path / "series")
    reference_pixels = pydicom.dcmread(get_testdata_file("MR_small.dcm")).pixel_array
    np.testing.assert_array_equal(stored, reference_pixels)
    volume = load_dicom(tmp_path / "series")
    for k in range(volume.shape[2]):
        np.testing.assert_array_equal(volume.data[:, :, k].T, reference_pixels.astype(np.float32))
    reference = dcm2niix(tmp_path / "series", tmp_path / "dcm2niix")
    assert_same_world(volume.data, volume.affine, reference.get_fdata(), reference.affine)


def test_pydicoms_ct_study_reads_its_series_and_skips_scout_and_dicomdir(tmp_path: Path):
    tests = Path(get_testdata_file("CT_small.dcm")).parent / "dicomdirtests"
    study = shutil.copytree(tests / "98892001", tmp_path / "export" / "98892001")
    shutil.copy(tests / "DICOMDIR", tmp_path / "export" / "DICOMDIR")  # an index of 3 patients: not an image
    volume = load_dicom(tmp_path / "export")
    assert volume.shape == (16, 16, 5)
    [scout] = volume.source.ignored_series
    assert (scout.description, scout.images, scout.reason) == ("Scout", 2, "localizer (ImageType LOCALIZER)")
    reference = dcm2niix(study / "CT5N", tmp_path / "dcm2niix")
    assert_same_world(volume.data, volume.affine, reference.get_fdata(), reference.affine)


def test_folder_zip_at_any_depth_and_file_list_read_one_volume(tmp_path: Path):
    data, affine = grid("LIP", None, step=6)
    files = write_series(tmp_path / "case 07", data, affine, shuffle=5)
    (tmp_path / "case 07" / "DICOMDIR").write_bytes(b"not read")  # skipped by name... and by content
    archive = zip_folder(tmp_path / "case 07", tmp_path / "case 07.zip", prefix="export/PATIENT/STUDY/SERIES/")
    from_folder, from_zip, from_files = load_dicom(tmp_path / "case 07"), load_dicom(archive), load_dicom(files)
    for other in (from_zip, from_files):
        np.testing.assert_array_equal(other.data, from_folder.data)
        np.testing.assert_array_equal(other.affine, from_folder.affine)
    assert (from_folder.name, from_zip.name, from_files.name) == ("case 07", "case 07.zip", "T1 MPRAGE")
    assert (from_folder.stem, from_zip.stem) == ("case 07", "case 07")


def test_a_mask_of_a_dicom_volume_is_saved_on_the_dcm2niix_grid(tmp_path: Path):
    data, affine = grid("LPS", (20.0, 15.0), step=6)
    write_series(tmp_path / "series", data, affine)
    volume = load_dicom(tmp_path / "series")
    mask = (volume.data > 200).astype(np.uint8)
    saved = nib.load(save_mask(mask, volume, tmp_path / "mask.nii.gz"))
    assert (int(saved.header["qform_code"]), int(saved.header["sform_code"])) == (1, 1)
    np.testing.assert_allclose(saved.header.get_qform(), saved.header.get_sform(), atol=1e-4)
    reread = load_volume(tmp_path / "mask.nii.gz")
    np.testing.assert_array_equal(reread.affine, volume.affine)
    reference = dcm2niix(tmp_path / "series", tmp_path / "dcm2niix")
    assert_same_world(reread.data, reread.affine, (reference.get_fdata() > 200).astype(np.float32), reference.affine)


def test_once_read_the_volume_keeps_no_file_bytes_alive(tmp_path: Path):
    import gc
    import tracemalloc

    data = np.random.default_rng(0).integers(0, 1000, (256, 256, 8)).astype(np.float32)  # 128 kB of pixels a file
    write_series(tmp_path / "series", data, np.eye(4))
    tracemalloc.start()
    try:
        volume = load_dicom(tmp_path / "series")
        gc.collect()
        retained, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    headers = 8 * 25_000  # the parsed headers a SEG needs: ~20 kB of Python objects each
    assert retained < volume.data.nbytes + headers, (retained, volume.data.nbytes)
