"""NIfTI I/O: header checks before any data is read, float32 loading, masks written on the input's exact grid."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from .errors import InvalidVolumeError, UnreadableVolumeError, UnsupportedFormatError, VolumeTooLargeError
from .memory import describe, load_bytes, require_memory
from .metrics import label_problem
from .provenance import NIFTI_SOURCE, SourceInfo
from .validation import (
    READ_ERRORS,
    NiftiHeader,
    check_file_size,
    check_header,
    other_format,
    reason_for,
    sniff_header,
)

NIFTI_SUFFIXES = (".nii", ".nii.gz")
# Affines this close (in mm) describe one voxel grid: a mask and its image written by different tools differ by less.
GRID_TOLERANCE_MM = 1e-3
_RAS = np.array([[0, 1], [1, 1], [2, 1]], dtype=float)


@dataclass
class Volume:
    """A 3D image in nibabel voxel order `(I, J, K)`, float32, with the header it came with.

    Attributes:
        data: voxel values, float32, scaling (scl_slope/inter) applied.
        affine: voxel → world (mm) matrix nibabel chose (sform if set, else qform).
        header: a copy of the input header (qform, sform, their codes, units, NIfTI-1 or -2).
        stored_shape: the shape in the file, e.g. `(I, J, K, 1)` for a 4D volume with one frame.
        name: file name, for display and output names; never used as a path.
        source: what was read (NIfTI, or which DICOM series and which were left out).
    """

    data: np.ndarray
    affine: np.ndarray
    header: NiftiHeader
    stored_shape: tuple[int, ...]
    name: str = "volume.nii.gz"
    source: SourceInfo = NIFTI_SOURCE

    def __repr__(self) -> str:  # the dataclass default would print every voxel and the whole header
        spacing = "×".join(f"{s:g}" for s in self.spacing_mm)
        return f"Volume({self.name!r}, shape={self.shape}, spacing_mm={spacing}, orientation={self.orientation})"

    @property
    def shape(self) -> tuple[int, int, int]:
        """The voxel grid `(I, J, K)` (a stored 4th axis of one frame dropped)."""
        i, j, k = self.data.shape
        return int(i), int(j), int(k)

    @property
    def spacing_mm(self) -> tuple[float, float, float]:
        """Voxel edge lengths from the affine's columns (mm), along I, J, K."""
        norms = np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0))
        return float(norms[0]), float(norms[1]), float(norms[2])

    @property
    def voxel_volume_ml(self) -> float:
        """The volume of one voxel in millilitres (from the affine's determinant)."""
        return float(abs(np.linalg.det(self.affine[:3, :3])) / 1000.0)

    @property
    def orientation(self) -> str:
        """Axis codes of the voxel axes, e.g. "RAS" or "LPS"."""
        return "".join(nib.orientations.aff2axcodes(self.affine))

    @property
    def stem(self) -> str:
        """The name without .nii/.nii.gz: `t1.nii.gz` → `t1` (output names are `<stem>_mask.nii.gz`)."""
        return stem_of(self.name)

    def geometry(self) -> dict[str, Any]:
        """Shape, spacing, orientation and header codes, as plain JSON-able values."""
        return {
            "input_shape": list(self.stored_shape),
            "spacing_mm": [round(s, 6) for s in self.spacing_mm],
            "orientation": self.orientation,
            "qform_code": int(self.header["qform_code"]),
            "sform_code": int(self.header["sform_code"]),
        }


def same_grid(a: Volume, b: Volume) -> bool:
    """Whether two volumes lie on one voxel grid: the same shape, and affines within GRID_TOLERANCE_MM."""
    return a.shape == b.shape and bool(np.allclose(a.affine, b.affine, atol=GRID_TOLERANCE_MM))


def stem_of(name: str) -> str:
    """`"t1.nii.gz"` → `"t1"`, `"series.zip"` → `"series"`; only the final path component of `name` is used."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    for suffix in (".nii.gz", ".nii", ".gz", ".zip"):
        if base.lower().endswith(suffix):
            return base[: -len(suffix)] or "volume"
    return base or "volume"


def check_suffix(name: str) -> None:
    """Raise `UnsupportedFormatError` unless `name` ends in .nii or .nii.gz."""
    if not name.lower().endswith(NIFTI_SUFFIXES):
        base = name.replace("\\", "/").rsplit("/", 1)[-1]
        shown = base if len(base) <= 60 else f"{base[:57]}…"
        known = other_format(name=base)
        advice = f"; it looks like {known}" if known else ""
        raise UnsupportedFormatError(f"'{shown}' is not a NIfTI file: expected a .nii or .nii.gz file{advice}")


def inspect_volume(
    path: str | Path,
    *,
    max_voxels: int | None = None,
    max_decompressed_bytes: int | None = None,
    verify_data: bool = True,
) -> nib.Nifti1Image | nib.Nifti2Image:
    """Open a NIfTI file lazily and validate it; no voxel data is kept.

    A .gz file is inflated once, in 1 MiB chunks, to check that it holds the data its header declares and that its
    checksum is right; inflating stops as soon as `max_decompressed_bytes` is passed. With `verify_data=False` only
    the header is read (a quick early check: `load_volume` verifies the data when it reads it).

    Raises:
        UnsupportedFormatError: the name or the content is not single-file NIfTI-1/NIfTI-2.
        UnreadableVolumeError: the header cannot be parsed, or the file is truncated or corrupt.
        InvalidVolumeError: wrong dimensionality, empty axes or an unsupported data type.
        VolumeTooLargeError: more voxels or decompressed bytes than the caps allow.
    """
    image, _ = _open_checked(Path(path), max_voxels, max_decompressed_bytes, verify_data=verify_data, keep=False)
    return image


def _open_checked(
    path: Path, max_voxels: int | None, max_decompressed_bytes: int | None, *, verify_data: bool, keep: bool
) -> tuple[nib.Nifti1Image | nib.Nifti2Image, bytearray | None]:
    """The lazily opened image and, with `keep`, a .gz file's inflated bytes (see `check_file_size`)."""
    check_suffix(path.name)
    sniff_header(path)
    try:
        image = nib.load(path)
    except READ_ERRORS as e:
        raise UnreadableVolumeError(f"cannot read the NIfTI header: {reason_for(e)}; is the file complete?") from e
    if not isinstance(image, nib.Nifti1Image | nib.Nifti2Image):
        raise UnsupportedFormatError("not a single-file NIfTI image: convert it to .nii or .nii.gz")
    # The data offset lives in the proxy: nibabel zeroes vox_offset in the image's copy of the header.
    offset = int(image.dataobj.offset)  # type: ignore[attr-defined]
    check_header(image.header, offset, max_voxels=max_voxels, max_decompressed_bytes=max_decompressed_bytes)
    if keep:  # the caller reads the voxels next: refuse now what could not fit, before the kernel kills the process
        _require_memory_to_read(path, image.header, offset, max_decompressed_bytes)
    inflated = check_file_size(path, image.header, offset, max_decompressed_bytes, keep=keep) if verify_data else None
    return image, inflated


def _require_memory_to_read(path: Path, header: NiftiHeader, offset: int, max_decompressed_bytes: int | None) -> None:
    shape = tuple(int(n) for n in header.get_data_shape()[:3])
    stored = header.get_data_dtype()
    try:
        require_memory(load_bytes(math.prod(shape), stored.itemsize), f"reading {describe(shape)} of {stored}")
    except VolumeTooLargeError:
        # A header alone can declare anything: a truncated or corrupt file says so rather than asking for memory.
        # Streamed without keeping the bytes, so this costs time, not memory, and only on the way to a refusal.
        check_file_size(path, header, offset, max_decompressed_bytes)
        raise


def load_volume(
    path: str | Path,
    *,
    max_voxels: int | None = None,
    max_decompressed_bytes: int | None = None,
    name: str | None = None,
) -> Volume:
    """Read a .nii/.nii.gz (NIfTI-1 or -2) as float32, validating the header before the data.

    A .gz file is inflated exactly once: the pass that checks its size and checksum keeps the bytes it inflated.

    Args:
        path: the file to read.
        max_voxels: refuse volumes with more voxels than this.
        max_decompressed_bytes: refuse volumes whose data would inflate past this.
        name: display name (e.g. an uploaded file's name); defaults to the file name.

    Returns:
        The volume in its stored voxel order, never reoriented.
    """
    image, inflated = _open_checked(Path(path), max_voxels, max_decompressed_bytes, verify_data=True, keep=True)
    header = image.header.copy()
    proxy: Any = image.dataobj  # nibabel's ArrayProxy (typed as ArrayLike)
    try:
        if inflated is None:
            raw = np.asarray(proxy.get_unscaled())
        else:  # what nibabel's proxy would read, without inflating the file again (NIfTI stores voxels Fortran-order)
            raw = np.ndarray(proxy.shape, proxy.dtype, buffer=inflated, offset=int(proxy.offset), order="F")
    except READ_ERRORS as e:
        raise UnreadableVolumeError(f"cannot read the voxel data: {reason_for(e)}; is the file truncated?") from e
    except MemoryError as e:
        shape = header.get_data_shape()
        raise VolumeTooLargeError(f"not enough memory to read a volume of shape {tuple(shape)}") from e
    # nibabel moves scl_slope/scl_inter from the header to the proxy (0 or NaN slope → 1, 0: unscaled).
    data = _to_float32(raw, float(proxy.slope), float(proxy.inter)).reshape(header.get_data_shape()[:3])
    del raw, inflated  # the float32 copy is all that is kept
    bad = data.size - int(np.count_nonzero(np.isfinite(data)))
    if bad:
        raise InvalidVolumeError(
            f"{bad} voxels are NaN or infinite: replace them (e.g. with the background value) and retry"
        )
    return Volume(
        data=data,
        affine=image.affine.copy(),
        header=header,
        stored_shape=tuple(int(n) for n in header.get_data_shape()),
        name=name or Path(path).name,
    )


def _to_float32(raw: np.ndarray, slope: float, inter: float) -> np.ndarray:
    # Scale in float32 ourselves: nibabel's get_fdata would build a float64 copy of the volume first.
    data = raw.astype(np.float32, copy=True)
    if slope != 1.0:
        data *= np.float32(slope)
    if inter != 0.0:
        data += np.float32(inter)
    return data


def volume_from_array(
    data: np.ndarray,
    affine: np.ndarray | None = None,
    *,
    name: str = "array.nii.gz",
    max_voxels: int | None = None,
) -> Volume:
    """Wrap an in-memory `(I, J, K)` array as a Volume.

    Args:
        data: real numbers (integers or floats) in voxel order.
        affine: the 4×4 voxel-to-world (RAS+ mm) matrix, e.g. a nibabel image's `.affine`; default identity
            (1 mm voxels, RAS), which is wrong for any other geometry: spacing sets the resampling and the mL.
        name: display name (summaries, output file names).
        max_voxels: refuse arrays with more voxels than this.
    """
    array = np.asarray(data)
    if array.ndim != 3:
        raise InvalidVolumeError(f"expected a 3D array (I, J, K), got shape {array.shape}")
    if array.dtype.kind not in "iuf":
        raise InvalidVolumeError(f"expected an array of real numbers (integers or floats), got {array.dtype}")
    if affine is not None and np.shape(affine) != (4, 4):
        raise InvalidVolumeError(f"affine must be a 4×4 matrix, got shape {np.shape(affine)}")
    values = array.astype(np.float32)
    image = nib.Nifti1Image(values, np.eye(4) if affine is None else np.asarray(affine))
    check_header(image.header, max_voxels=max_voxels, max_decompressed_bytes=None)
    if not np.isfinite(values).all():
        raise InvalidVolumeError("the array holds NaN or infinite values: replace them and retry")
    return Volume(values, image.affine.copy(), image.header.copy(), array.shape, name)


def save_mask(mask: np.ndarray, reference: Volume, path: str | Path) -> Path:
    """Write a uint8 label mask on the reference volume's exact grid.

    Shape (including a singleton 4th axis), qform and sform with their codes, units and the
    NIfTI version are copied from the reference header; only the data type, scaling and intent change.

    Args:
        mask: `(I, J, K)` class indices 0-255 (whole numbers, any numeric type), the reference's shape.
        reference: the volume the mask was computed from.
        path: output .nii or .nii.gz path, or an existing folder (then `<folder>/<stem>_mask.nii.gz`); missing
            parent folders are created.

    Returns:
        The path written.

    Raises:
        InvalidVolumeError: the shape differs, or a value is not a whole number in 0-255 (uint8 stores no other).
        UnsupportedFormatError: the path names another format.
    """
    if mask.shape != reference.shape:
        raise InvalidVolumeError(f"mask shape {mask.shape} differs from the input shape {reference.shape}")
    if mask.dtype != np.uint8:
        _check_labels(mask)
    return _write(mask_image(mask, reference), output_path(path, reference, "_mask"))


def output_path(path: str | Path, reference: Volume, label: str) -> Path:
    """Where to write a result: `path` itself if it names a .nii/.nii.gz file, `<folder>/<stem><label>.nii.gz` for
    an existing folder (or a path written with a trailing slash)."""
    if Path(path).is_dir() or str(path).endswith(("/", "\\")):
        return Path(path) / f"{reference.stem}{label}.nii.gz"
    if not str(path).lower().endswith(NIFTI_SUFFIXES):
        raise UnsupportedFormatError(
            f"cannot save to '{Path(path).name}': give a .nii.gz (or .nii) file name, or a folder"
        )
    return Path(path)


def _check_labels(mask: np.ndarray) -> None:
    problem = label_problem(mask, num_classes=256)
    if problem is not None:
        raise InvalidVolumeError(
            f"a mask is saved as uint8 class indices (whole numbers 0-255); this one {problem}: round or relabel it"
        )


def _write(image: nib.Nifti1Image | nib.Nifti2Image, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.to_filename(path)
    return path


def mask_image(mask: np.ndarray, reference: Volume) -> nib.Nifti1Image | nib.Nifti2Image:
    """The in-memory NIfTI image `save_mask` writes."""
    header = reference.header.copy()
    header.set_data_dtype(np.uint8)
    header.set_data_shape(reference.stored_shape)
    header.set_slope_inter(1.0, 0.0)
    header.set_intent("label")
    header["cal_min"], header["cal_max"] = 0, float(mask.max(initial=0))
    header["descrip"] = b"unet3d mask"
    image_class = nib.Nifti2Image if isinstance(header, nib.Nifti2Header) else nib.Nifti1Image
    data = np.ascontiguousarray(mask, dtype=np.uint8).reshape(reference.stored_shape)
    # affine=None keeps the header's qform/sform (and codes) exactly instead of re-deriving them.
    return image_class(data, None, header=header)


def save_probabilities(probabilities: np.ndarray, reference: Volume, path: str | Path) -> Path:
    """Write class probabilities `(C, I, J, K)` as a float32 4D NIfTI `(I, J, K, C)` on the input grid; `path` as
    for `save_mask` (a folder gets `<stem>_probabilities.nii.gz`)."""
    header = reference.header.copy()
    header.set_data_dtype(np.float32)
    header.set_data_shape((*reference.shape, probabilities.shape[0]))
    header.set_slope_inter(1.0, 0.0)
    header["descrip"] = b"unet3d class probabilities"
    image_class = nib.Nifti2Image if isinstance(header, nib.Nifti2Header) else nib.Nifti1Image
    image = image_class(np.moveaxis(probabilities.astype(np.float32), 0, -1), None, header=header)
    return _write(image, output_path(path, reference, "_probabilities"))


def canonical_orientation(volume: Volume) -> np.ndarray:
    """nibabel orientation array mapping the volume's voxel axes to the closest RAS axes."""
    return nib.orientations.io_orientation(volume.affine)


def to_canonical(array: np.ndarray, orientation: np.ndarray) -> np.ndarray:
    """Permute/flip the last three axes of `array` into closest-RAS order (no resampling)."""
    leading = array.ndim - 3
    if not leading:
        return nib.orientations.apply_orientation(array, orientation)
    shifted = orientation + np.array([leading, 0])  # target axes move past the leading (channel) axes
    full = np.concatenate([[[i, 1] for i in range(leading)], shifted])
    return nib.orientations.apply_orientation(array, full)


def from_canonical(array: np.ndarray, orientation: np.ndarray) -> np.ndarray:
    """Inverse of `to_canonical`: back to the input's voxel order, exactly."""
    inverse = nib.orientations.ornt_transform(_RAS, orientation)
    return np.ascontiguousarray(to_canonical(array, inverse))


def canonical_spacing(volume: Volume, orientation: np.ndarray) -> tuple[float, float, float]:
    """Voxel spacing (mm) along the canonical axes."""
    spacing = np.empty(3)
    for source_axis, (target_axis, _) in enumerate(orientation):
        spacing[int(target_axis)] = volume.spacing_mm[source_axis]
    return float(spacing[0]), float(spacing[1]), float(spacing[2])
