"""NIfTI I/O and the geometry conformance suite: the mask always lands on the input's exact grid."""

import gzip
import tracemalloc

import nibabel as nib
import numpy as np
import pytest
from helpers import PROC_IO, FileReads, sphere_volume, write_nifti

from unet3d import Segmenter
from unet3d.errors import InvalidVolumeError, UnreadableVolumeError, UnsupportedFormatError, VolumeTooLargeError
from unet3d.io import load_volume, save_mask, stem_of


def _rotation(degrees: float) -> np.ndarray:
    t = np.deg2rad(degrees)
    return np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]])


def _affine(linear: np.ndarray, origin=(-10.0, 20.0, 5.5)) -> np.ndarray:
    affine = np.eye(4)
    affine[:3, :3] = linear
    affine[:3, 3] = origin
    return affine


GEOMETRIES = {
    "ras": _affine(np.eye(3)),
    "lps": _affine(np.diag([-1.0, -1.0, 1.0])),
    "las": _affine(np.diag([-1.0, 1.0, 1.0])),
    "permuted": _affine(np.array([[0, 0, 1.0], [-1.0, 0, 0], [0, 1.0, 0]])),
    "oblique": _affine(_rotation(17) @ np.diag([1.0, 1.2, 1.0])),
    "anisotropic": _affine(np.diag([0.9, 0.9, 3.0])),
}


def _image(geometry: str, *, qform: int = 1, sform: int = 2, version: int = 1) -> nib.Nifti1Image:
    klass = nib.Nifti2Image if version == 2 else nib.Nifti1Image
    image = klass(sphere_volume((24, 20, 16)), None)
    affine = GEOMETRIES[geometry]
    image.set_qform(affine, code=qform)
    image.set_sform(affine if sform else np.eye(4) * 2, code=sform)
    image.header.set_xyzt_units("mm", "sec")
    return image


def _assert_same_grid(mask_path, input_image):
    mask = nib.load(mask_path)
    header, reference = mask.header, input_image.header
    assert mask.shape == input_image.shape
    assert mask.get_data_dtype() == np.uint8
    assert type(mask) is type(input_image)
    assert np.array_equal(mask.affine, input_image.affine)
    for field in (
        "qform_code",
        "sform_code",
        "xyzt_units",
        "pixdim",
        "quatern_b",
        "quatern_c",
        "quatern_d",
        "qoffset_x",
        "qoffset_y",
        "qoffset_z",
        "srow_x",
        "srow_y",
        "srow_z",
    ):
        assert np.array_equal(header[field], reference[field]), field
    data = np.asanyarray(mask.dataobj)
    assert data.dtype == np.uint8 and set(np.unique(data)) <= {0, 1, 2}


@pytest.fixture(scope="module")
def segmenter(tiny_model_dir):
    return Segmenter.from_pretrained(tiny_model_dir, device="cpu")


@pytest.mark.parametrize("geometry", sorted(GEOMETRIES))
@pytest.mark.parametrize(("qform", "sform"), [(1, 2), (1, 0), (0, 2)], ids=["both", "qform-only", "sform-only"])
def test_mask_geometry_equals_input_geometry(tmp_path, segmenter, geometry, qform, sform):
    image = _image(geometry, qform=qform, sform=sform)
    source = tmp_path / "in.nii.gz"
    nib.save(image, source)
    image = nib.load(source)
    out = segmenter.predict(source).save(tmp_path / "in_mask.nii.gz")
    _assert_same_grid(out, image)


def test_nifti2_and_uncompressed_inputs_keep_their_format(tmp_path, segmenter):
    source = tmp_path / "v2.nii"
    nib.save(_image("lps", version=2), source)
    out = segmenter.predict(source).save(tmp_path / "v2_mask.nii")
    _assert_same_grid(out, nib.load(source))
    assert isinstance(nib.load(out), nib.Nifti2Image)


def test_4d_volume_with_one_frame_keeps_its_singleton_axis(tmp_path, segmenter):
    source = write_nifti(tmp_path / "four.nii.gz", sphere_volume()[..., None], GEOMETRIES["oblique"])
    out = segmenter.predict(source).save(tmp_path / "four_mask.nii.gz")
    assert nib.load(out).shape == (24, 20, 16, 1)
    _assert_same_grid(out, nib.load(source))


@pytest.mark.parametrize("target", ["lps", "permuted", "las"])
def test_reorienting_the_input_reorients_the_mask_identically(tmp_path, segmenter, target):
    base = _image("ras")
    to_target = nib.orientations.io_orientation(GEOMETRIES[target])
    # The same voxels, stored in another axis order / direction: world geometry is unchanged.
    moved = base.as_reoriented(nib.orientations.ornt_transform(nib.orientations.io_orientation(base.affine), to_target))
    base_mask = segmenter.predict(load_volume(_save(base, tmp_path / "base.nii.gz"))).mask
    moved_volume = load_volume(_save(moved, tmp_path / "moved.nii.gz"))
    moved_mask = segmenter.predict(moved_volume).mask
    back = nib.Nifti1Image(moved_mask, moved.affine).as_reoriented(
        nib.orientations.ornt_transform(nib.orientations.io_orientation(moved.affine), [[0, 1], [1, 1], [2, 1]])
    )
    assert np.array_equal(np.asanyarray(back.dataobj), base_mask)
    assert len(np.unique(base_mask)) > 1


def _save(image, path):
    nib.save(image, path)
    return path


def _with_scaling_on_disk(path, slope: float, inter: float):
    """nibabel recomputes scl_slope/inter on save: patch them in the written header (bytes 112–119)."""
    raw = bytearray(path.read_bytes())
    raw[112:120] = np.array([slope, inter], dtype="<f4").tobytes()
    path.write_bytes(bytes(raw))
    return path


def test_scaled_integers_load_as_float32_with_slope_and_intercept(tmp_path):
    raw = (np.arange(8 * 8 * 8).reshape(8, 8, 8) % 300).astype(np.int16)
    path = _with_scaling_on_disk(write_nifti(tmp_path / "scaled.nii", raw), 2.0, 10.0)
    volume = load_volume(path)
    assert volume.data.dtype == np.float32
    assert np.array_equal(volume.data, raw.astype(np.float32) * 2 + 10)


@pytest.mark.parametrize("slope", [0.0, np.nan])
def test_zero_or_nan_slope_means_unscaled_as_the_nifti_standard_says(tmp_path, slope):
    raw = np.arange(8 * 8 * 8, dtype=np.int16).reshape(8, 8, 8)
    path = _with_scaling_on_disk(write_nifti(tmp_path / "s.nii", raw), slope, 5.0)
    assert np.array_equal(load_volume(path).data, raw.astype(np.float32))


def test_loading_never_makes_a_float64_copy(tmp_path):
    raw = np.random.default_rng(0).integers(0, 1000, (96, 96, 96), dtype=np.int16)
    path = write_nifti(tmp_path / "big.nii", raw)
    tracemalloc.start()
    volume = load_volume(path)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    float32_bytes = volume.data.nbytes
    # raw int16 read (0.5×) + the float32 result (1×); a float64 detour would add 2×.
    assert peak < 1.9 * float32_bytes


def test_header_caps_are_checked_before_any_data_is_read(tmp_path):
    header = nib.Nifti1Header()
    header.set_data_shape((2000, 2000, 2000))
    header.set_data_dtype(np.float32)
    path = tmp_path / "liar.nii.gz"
    with gzip.open(path, "wb") as handle:
        handle.write(header.binaryblock + b"\0" * 4)  # header only: no voxel data at all
    expected = r"8000000000 voxels \(2000×2000×2000\), more than the limit of 1000000: crop it .* or raise the limit"
    with pytest.raises(VolumeTooLargeError, match=expected):
        load_volume(path, max_voxels=1_000_000)
    with pytest.raises(VolumeTooLargeError, match="uncompressed"):
        load_volume(path, max_decompressed_bytes=10 * 2**20)


@pytest.mark.parametrize(
    ("name", "shape"),
    [
        ("lie.nii", (200, 200, 200)),
        ("lie.nii.gz", (200, 200, 200)),
        ("lie.nii.gz", (10_000, 10_000, 10_000)),  # 4 TB: more than can be reserved for the inflated bytes
    ],
)
def test_a_header_that_promises_missing_data_is_reported_as_truncated(tmp_path, name, shape):
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(np.float32)
    header["vox_offset"] = 352
    content = header.binaryblock + b"\0" * 4 + b"\0" * 1000
    path = tmp_path / name
    path.write_bytes(gzip.compress(content) if name.endswith(".gz") else content)
    with pytest.raises(UnreadableVolumeError, match="truncated"):
        load_volume(path)


@pytest.mark.parametrize(
    ("content", "name", "error", "message"),
    [
        (b"", "empty.nii.gz", UnreadableVolumeError, "the file is empty"),
        (b"hello world, not nifti", "text.nii.gz", UnsupportedFormatError, "not gzip-compressed"),
        (b"\x89PNG\r\n\x1a\n" + b"\0" * 400, "image.nii", UnsupportedFormatError, "does not start with a NIfTI header"),
        (gzip.compress(b"\0" * 10, mtime=0), "short.nii.gz", UnreadableVolumeError, "cannot read the NIfTI header"),
        (b"\x1f\x8b\x08\x00garbage-gzip-stream" * 5, "corrupt.nii.gz", UnreadableVolumeError, "NIfTI header"),
    ],
)
def test_unreadable_files_raise_a_clear_error(tmp_path, content, name, error, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(error, match=message):
        load_volume(path)


def test_wrong_suffix_is_refused_before_reading(tmp_path):
    path = write_nifti(tmp_path / "x.nii.gz", sphere_volume())
    renamed = path.rename(tmp_path / "x.png")
    with pytest.raises(UnsupportedFormatError, match=r"expected a \.nii or \.nii\.gz file; it looks like a 2D picture"):
        load_volume(renamed)


@pytest.mark.parametrize(
    ("name", "advice"),
    [
        ("IM0001.ima", "a DICOM file: send the whole series instead, as the folder holding its files or a .zip"),
        ("brain.mgz", "a FreeSurfer volume: convert it first with `mri_convert scan.mgz scan.nii.gz`"),
        ("ct.nrrd", "an NRRD file: convert it to NIfTI first"),
        ("ct.MHA", "a MetaImage file"),
    ],
)
def test_a_known_other_format_is_named_with_how_to_convert_it(tmp_path, name, advice):
    path = tmp_path / name
    path.write_bytes(b"\0" * 600)
    expected = f"'{name}' is not a NIfTI file: expected a .nii or .nii.gz file; it looks like {advice}"
    with pytest.raises(UnsupportedFormatError) as refused:
        load_volume(path)
    assert str(refused.value).startswith(expected)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (np.zeros((8, 8), np.float32), r"got a 2D image of shape \(8, 8\): .* as one 3D NIfTI"),
        (np.zeros((8, 8, 8, 2), np.float32), "expected a 3D volume .* split 4D series into one file per frame"),
        (np.zeros((8, 8, 8, 1, 3), np.float32), "expected a 3D volume"),
        (np.zeros((8, 8, 1), np.float32), "too small"),
        (np.zeros((8, 8, 8), np.complex64), "unsupported voxel type complex64"),
    ],
)
def test_invalid_dimensions_and_types_are_refused(tmp_path, data, message):
    path = write_nifti(tmp_path / "bad.nii.gz", data)
    with pytest.raises(InvalidVolumeError, match=message):
        load_volume(path)


def test_rgb_volumes_are_refused(tmp_path):
    rgb = np.zeros((8, 8, 8), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    path = write_nifti(tmp_path / "rgb.nii.gz", rgb)
    with pytest.raises(InvalidVolumeError, match="unsupported voxel type"):
        load_volume(path)


def test_nan_or_infinite_voxels_are_refused_with_the_count(tmp_path):
    data = sphere_volume()
    data[0, 0, :3] = [np.nan, np.inf, -np.inf]
    with pytest.raises(InvalidVolumeError, match="3 voxels are NaN or infinite"):
        load_volume(write_nifti(tmp_path / "nan.nii.gz", data))


def test_save_mask_refuses_a_mask_of_another_shape(tmp_path):
    volume = load_volume(write_nifti(tmp_path / "v.nii.gz", sphere_volume()))
    with pytest.raises(InvalidVolumeError, match="differs from the input shape"):
        save_mask(np.zeros((3, 3, 3), np.uint8), volume, tmp_path / "m.nii.gz")


@pytest.mark.parametrize(
    ("mask", "message"),
    [
        (300, "labels from 300 to 300, outside 0 .. 255: round or relabel"),
        (-1, "labels from -1 to -1, outside"),
        (0.7, "non-integer values \\(e.g. 0.7\\)"),
    ],
)
def test_save_mask_refuses_values_uint8_cannot_hold_instead_of_wrapping_them(tmp_path, mask, message):
    volume = load_volume(write_nifti(tmp_path / "v.nii.gz", sphere_volume()))
    with pytest.raises(InvalidVolumeError, match=message):
        save_mask(np.full(volume.shape, mask), volume, tmp_path / "m.nii.gz")
    assert not (tmp_path / "m.nii.gz").exists()


def test_save_mask_writes_into_a_folder_and_refuses_other_formats(tmp_path):
    volume = load_volume(write_nifti(tmp_path / "scan.nii.gz", sphere_volume()))
    mask = (volume.data > 0.5).astype(np.int64)
    (tmp_path / "masks").mkdir()
    assert save_mask(mask, volume, tmp_path / "masks") == tmp_path / "masks" / "scan_mask.nii.gz"
    assert save_mask(mask, volume, f"{tmp_path}/new/") == tmp_path / "new" / "scan_mask.nii.gz"
    assert np.array_equal(load_volume(tmp_path / "new" / "scan_mask.nii.gz").data, mask)
    for name in ("m.mgz", "m", "m.gz"):
        with pytest.raises(UnsupportedFormatError, match=f"cannot save to '{name}': give a .nii.gz"):
            save_mask(mask, volume, tmp_path / name)


@pytest.mark.parametrize(
    ("name", "stem"),
    [("t1.nii.gz", "t1"), ("a/b/../c.nii", "c"), ("C:\\x\\scan.NII.GZ", "scan"), (".nii.gz", "volume")],
)
def test_stem_uses_only_the_last_path_component(name, stem):
    assert stem_of(name) == stem


def test_a_stream_inflating_past_the_cap_is_refused_in_constant_memory(tmp_path):
    # 64 MiB of zeros after a valid 8 kB volume: ~64 kB on disk. nibabel alone would read the 8 kB and stop.
    path = write_nifti(tmp_path / "bomb.nii", sphere_volume((16, 16, 8)))
    bomb = tmp_path / "bomb.nii.gz"
    bomb.write_bytes(gzip.compress(path.read_bytes() + bytes(64 * 2**20)))
    tracemalloc.start()
    with pytest.raises(VolumeTooLargeError, match=r"inflates to more than the limit of 16\.0 MiB"):
        load_volume(bomb, max_decompressed_bytes=16 * 2**20)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 8 * 2**20  # a few 1 MiB chunks, not the 64 MiB it inflates to
    assert load_volume(bomb).shape == (16, 16, 8)  # without a cap: the declared data, in constant memory too


@pytest.mark.parametrize("dtype", ["<u1", "<i2", ">i2", "<f4", ">f8", "<i4"])
@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_voxels_read_as_nibabel_reads_them_for_every_byte_order_and_type(tmp_path, dtype, suffix):
    data = np.random.default_rng(1).integers(0, 200, (9, 7, 5, 1)).astype(dtype)
    image = nib.Nifti1Image(data, np.eye(4))
    image.header.set_data_dtype(dtype)
    image.header.set_slope_inter(0.5, -3.0)
    path = tmp_path / f"v{suffix}"
    nib.save(image, path)
    # Trailing bytes after the image (allowed, ignored): the voxels come from the declared range only.
    if suffix == ".nii.gz":
        path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes()) + b"trailing"))
    volume = load_volume(path)
    expected = nib.load(path).get_fdata()[..., 0]
    assert volume.data.dtype == np.float32 and volume.stored_shape == (9, 7, 5, 1)
    assert np.allclose(volume.data, expected, rtol=1e-6)


@pytest.mark.skipif(not PROC_IO.exists(), reason="counts the bytes read in /proc/self/io (Linux)")
def test_a_gzip_file_is_opened_and_inflated_once_in_its_own_size_plus_the_float32_result(tmp_path):
    raw = np.random.default_rng(0).integers(0, 1000, (96, 96, 96), dtype=np.int16)
    path = write_nifti(tmp_path / "big.nii.gz", raw)
    tracemalloc.start()
    with FileReads("big.nii.gz") as reads:
        volume = load_volume(path)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # The inflated int16 bytes (0.5×) + the float32 result (1×), as for an uncompressed file.
    assert peak < 1.9 * volume.data.nbytes
    # One pass: the file is opened once and its compressed bytes are read once (no second look at the header,
    # by unet3d or by nibabel); the one stream checks size and checksum and keeps the bytes.
    assert reads.opens == 1 and reads.bytes < path.stat().st_size + 64 * 1024
    assert np.array_equal(volume.data, raw.astype(np.float32))


def test_a_corrupt_gzip_stream_is_refused_even_when_it_inflates_to_plausible_voxels(tmp_path):
    data = np.random.default_rng(0).integers(0, 4000, (40, 40, 40)).astype(np.int16)
    stream = bytearray(gzip.compress(nib.Nifti1Image(data, np.eye(4)).to_bytes()))
    stream[len(stream) * 3 // 4 : len(stream) * 3 // 4 + 64] = bytes(64)
    path = tmp_path / "corrupt.nii.gz"
    path.write_bytes(bytes(stream))
    with pytest.raises(UnreadableVolumeError, match="truncated or corrupt"):
        load_volume(path)


@pytest.mark.parametrize(
    ("dims", "error", "message"),
    [
        ((3, 24, -5, 16), UnreadableVolumeError, "negative dimension"),
        ((3, 2**40, 2**40, 2**40), VolumeTooLargeError, "more than the limit"),  # overflows int64 when multiplied
    ],
)
def test_dimensions_are_checked_without_integer_overflow(tmp_path, dims, error, message):
    header = nib.Nifti2Header()
    header.set_data_shape((4, 4, 4))
    raw = bytearray(header.binaryblock + bytes(4) + bytes(256))
    raw[16 : 16 + 8 * len(dims)] = np.array(dims, dtype="<i8").tobytes()
    path = tmp_path / "dims.nii"
    path.write_bytes(bytes(raw))
    with pytest.raises(error, match=message):
        load_volume(path, max_voxels=10**6)
