"""Volumes in and out: `load_volume` (the one entry point from a path to a `Volume`), masks written on the input's
exact grid. Reading a NIfTI file itself is `unet3d.nifti`'s one pass; a DICOM series is `unet3d.dicom`'s (imported
when one is read: it imports this module)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import nibabel as nib
import numpy as np

from .archive import is_zip
from .atomic import replacing
from .compression import writing
from .errors import InvalidVolumeError, ParameterError, UnsupportedFormatError
from .formats import NIFTI_SUFFIXES, looks_like_dicom
from .nifti import NiftiHeader, NiftiImage, check_header, check_nifti, open_nifti, read_nifti
from .provenance import NIFTI_SOURCE, SourceInfo
from .shapes import Shape3, Spacing3
from .stats import label_problem, voxel_volume_ml

__all__ = [
    "Volume",
    "VolumeSource",
    "check_volume",
    "inspect_volume",
    "load_mask",
    "load_volume",
    "mask_image",
    "save_mask",
    "save_probabilities",
    "stem_of",
    "volume_from_array",
]

# The header description of the files unet3d writes: how a resumed batch run knows a mask as its own.
MASK_DESCRIPTION = b"unet3d mask"
PROBABILITIES_DESCRIPTION = b"unet3d class probabilities"


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
    def shape(self) -> Shape3:
        """The voxel grid `(I, J, K)` (a stored 4th axis of one frame dropped)."""
        i, j, k = self.data.shape
        return int(i), int(j), int(k)

    @property
    def spacing_mm(self) -> Spacing3:
        """Voxel edge lengths from the affine's columns (mm), along I, J, K."""
        norms = np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0))
        return float(norms[0]), float(norms[1]), float(norms[2])

    @property
    def voxel_volume_ml(self) -> float:
        """The volume of one voxel in millilitres (from the affine's determinant: `unet3d.stats.voxel_volume_ml`)."""
        return voxel_volume_ml(self.affine)

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


def stem_of(name: str) -> str:
    """`"t1.nii.gz"` → `"t1"`, `"series.zip"` → `"series"`; only the final path component of `name` is used."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    for suffix in (".nii.gz", ".nii", ".gz", ".zip"):
        if base.lower().endswith(suffix):
            return base[: -len(suffix)] or "volume"
    return base or "volume"


def inspect_volume(
    path: str | Path,
    *,
    max_voxels: int | None = None,
    max_decompressed_bytes: int | None = None,
    verify_data: bool = True,
) -> NiftiImage:
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
    return open_nifti(
        Path(path), max_voxels=max_voxels, max_decompressed_bytes=max_decompressed_bytes, verify_data=verify_data
    )


VolumeSource = str | Path | Sequence[str | Path]
"""What `load_volume` reads: a NIfTI file, a DICOM series (a folder, a .zip, a .dcm file) or a list of DICOM files."""


def check_volume(
    path: VolumeSource, *, max_voxels: int | None = None, max_decompressed_bytes: int | None = None
) -> None:
    """Refuse, from its header alone, a file `load_volume` would refuse for its format, shape, type or size.

    A quick check before work is queued (the header is read, nothing more); `load_volume` checks it all again, and
    the data, as it reads it. Raises as `inspect_volume`. For a DICOM source (see `load_volume`) what can be known
    before any file is read is checked: the file count, the sizes a zip declares, its entry names
    (`unet3d.dicom.check_dicom`).
    """
    if not isinstance(path, str | Path) or looks_like_dicom(path):
        from .dicom import check_dicom

        check_dicom(path, max_decompressed_bytes=max_decompressed_bytes)
        return
    check_nifti(Path(path), max_voxels=max_voxels, max_decompressed_bytes=max_decompressed_bytes, verify_data=False)


def load_volume(
    path: VolumeSource,
    *,
    max_voxels: int | None = None,
    max_decompressed_bytes: int | None = None,
    name: str | None = None,
    series: str | None = None,
) -> Volume:
    """Read a .nii/.nii.gz (NIfTI-1 or -2) or a DICOM series as float32, validating the header before the data.

    A NIfTI file is read in one pass (`unet3d.nifti.read_nifti`): a .gz file is inflated exactly once. A folder, a
    .zip (recognised by content, whatever its name), a .dcm file, a file carrying the DICOM marker, or a list of
    files is a DICOM series, read by `unet3d.dicom.load_dicom` (see docs/dicom.md).

    Args:
        path: the file, folder or list of files to read.
        max_voxels: refuse volumes with more voxels than this.
        max_decompressed_bytes: refuse volumes whose data would inflate past this (for DICOM: also the upload's
            files once inflated).
        name: display name (e.g. an uploaded file's name); defaults to the file, zip or folder name.
        series: DICOM only: the SeriesInstanceUID to read when the upload holds several volumetric series.

    Returns:
        The volume in its stored voxel order, never reoriented; `volume.source` says what was read.

    Raises:
        Unet3dError: as `inspect_volume` or `load_dicom`, and InvalidVolumeError for NaN or infinite voxels.
        ParameterError: `series` given for a NIfTI file.
    """
    if not isinstance(path, str | Path) or looks_like_dicom(path):
        from .dicom import load_dicom

        return load_dicom(
            path, series=series, max_voxels=max_voxels, max_decompressed_bytes=max_decompressed_bytes, name=name
        )
    if series is not None:
        raise ParameterError(
            f"a series UID picks one series of a DICOM upload, but '{Path(path).name}' is a NIfTI volume: leave "
            "the series out"
        )
    read = read_nifti(Path(path), max_voxels=max_voxels, max_decompressed_bytes=max_decompressed_bytes)
    return Volume(read.data, read.affine, read.header, read.stored_shape, name or Path(path).name)


def load_mask(
    path: str | Path,
    *,
    max_voxels: int | None = None,
    max_decompressed_bytes: int | None = None,
    name: str | None = None,
) -> Volume:
    """Read a label mask: a NIfTI file as `load_volume` reads it, or a DICOM SEG (one DICOM file; its segment numbers
    become the labels, on the grid its frames span: `unet3d.dicom.read_dicom_seg`).

    Raises:
        Unet3dError: as `load_volume`; UnsupportedFormatError for a DICOM file that is not a SEG.
    """
    if Path(path).is_file() and looks_like_dicom(path) and not is_zip(path):
        from .dicom import read_dicom_seg

        limits = {"max_voxels": max_voxels, "max_decompressed_bytes": max_decompressed_bytes}
        return read_dicom_seg(path, name=name or Path(path).name, **limits)
    return load_volume(path, max_voxels=max_voxels, max_decompressed_bytes=max_decompressed_bytes, name=name)


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
    """Write `image` to `path` atomically (see `replacing`): never a truncated file under the final name."""
    with replacing(path) as raw:
        if path.name.lower().endswith(".gz"):
            with writing(raw) as gz:
                image.to_file_map(image.make_file_map({"image": gz}))
        else:
            image.to_file_map(image.make_file_map({"image": raw}))  # type: ignore[dict-item]
    return path


def mask_image(mask: np.ndarray, reference: Volume) -> nib.Nifti1Image | nib.Nifti2Image:
    """The in-memory NIfTI image `save_mask` writes."""
    header = reference.header.copy()
    header.set_data_dtype(np.uint8)
    header.set_data_shape(reference.stored_shape)
    header.set_slope_inter(1.0, 0.0)
    header.set_intent("label")
    header["cal_min"], header["cal_max"] = 0, float(mask.max(initial=0))
    header["descrip"] = MASK_DESCRIPTION
    image_class = nib.Nifti2Image if isinstance(header, nib.Nifti2Header) else nib.Nifti1Image
    # NIfTI stores voxels in Fortran order: a mask that comes in that order (Segmenter's do) is written as it is.
    order: Literal["F", "C"] = "F" if mask.flags.f_contiguous else "C"
    data = np.asarray(mask, dtype=np.uint8).reshape(reference.stored_shape, order=order)
    # affine=None keeps the header's qform/sform (and codes) exactly instead of re-deriving them.
    return image_class(data, None, header=header)


def save_probabilities(probabilities: np.ndarray, reference: Volume, path: str | Path) -> Path:
    """Write class probabilities `(C, I, J, K)` as a float32 4D NIfTI `(I, J, K, C)` on the input grid; `path` as
    for `save_mask` (a folder gets `<stem>_probabilities.nii.gz`)."""
    header = reference.header.copy()
    header.set_data_dtype(np.float32)
    header.set_data_shape((*reference.shape, probabilities.shape[0]))
    header.set_slope_inter(1.0, 0.0)
    header["descrip"] = PROBABILITIES_DESCRIPTION
    image_class = nib.Nifti2Image if isinstance(header, nib.Nifti2Header) else nib.Nifti1Image
    image = image_class(np.moveaxis(probabilities.astype(np.float32), 0, -1), None, header=header)
    return _write(image, output_path(path, reference, "_probabilities"))
