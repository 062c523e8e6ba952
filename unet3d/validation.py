"""Validation of NIfTI files before their voxel data is read: format, header fields, sizes and gzip integrity.

Everything here reads at most the header and streams compressed data in fixed-size chunks, so a hostile file
(a decompression bomb, a header declaring 10^36 voxels) costs constant memory however large it claims to be.
"""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path
from typing import Literal

import nibabel as nib
import numpy as np
from nibabel.filebasedimages import ImageFileError
from nibabel.spatialimages import HeaderDataError

from .errors import InvalidVolumeError, UnreadableVolumeError, UnsupportedFormatError, VolumeTooLargeError

MIN_AXIS_VOXELS = 4
NiftiHeader = nib.Nifti1Header | nib.Nifti2Header
READ_ERRORS = (ImageFileError, HeaderDataError, OSError, EOFError, zlib.error, ValueError, OverflowError)
GZIP_MAGIC = b"\x1f\x8b"  # the first two bytes of every gzip stream
_HEAD_BYTES = 552  # a NIfTI-2 header (540 bytes) plus the extension flag
_CHUNK_BYTES = 1 << 20
# NIfTI datatype codes that are not one real-valued intensity per voxel.
_UNSUPPORTED_TYPES = {
    1: "binary (1 bit)",
    32: "complex64",
    128: "RGB24",
    1792: "complex128",
    2048: "complex256",
    2304: "RGBA32",
}


# What gets mistaken for NIfTI, by its first bytes (offset, magic) and by its name, with the way to convert it.
_DICOM = "a DICOM file: convert the series to one NIfTI volume first, e.g. `dcm2niix -z y <series folder>`"
_NRRD = "an NRRD file: convert it to NIfTI first, e.g. with 3D Slicer or SimpleITK"
_META = "a MetaImage file: convert it to NIfTI first, e.g. with 3D Slicer or SimpleITK"
_PICTURE = "a 2D picture: unet3d segments 3D volumes, so export the scan itself as NIfTI"
_MAGIC = ((128, b"DICM", _DICOM), (0, b"NRRD", _NRRD), (0, b"ObjectType", _META), (0, b"\x89PNG", _PICTURE),
          (0, b"\xff\xd8\xff", _PICTURE))  # fmt: skip
_SUFFIXES = {
    ".dcm": _DICOM, ".ima": _DICOM, ".nrrd": _NRRD, ".nhdr": _NRRD, ".mha": _META, ".mhd": _META,
    ".mgz": "a FreeSurfer volume: convert it first with `mri_convert scan.mgz scan.nii.gz`",
    ".mgh": "a FreeSurfer volume: convert it first with `mri_convert scan.mgh scan.nii.gz`",
    ".png": _PICTURE, ".jpg": _PICTURE, ".jpeg": _PICTURE, ".tif": _PICTURE, ".tiff": _PICTURE,
}  # fmt: skip


def other_format(head: bytes = b"", name: str = "") -> str | None:
    """What a non-NIfTI file looks like from its first bytes or, failing that, its name, and how to convert it."""
    for offset, magic, description in _MAGIC:
        if head[offset : offset + len(magic)] == magic:
            return description
    suffix = name.lower().rsplit(".", 1)[-1] if "." in name else ""
    return _SUFFIXES.get(f".{suffix}")


def sniff_header(path: Path) -> None:
    """Refuse what is not single-file NIfTI (text, PNG, DICOM, Analyze 7.5, NIfTI pairs) from its first bytes."""
    head = _read_head(path)
    if len(head) < 348:
        raise UnreadableVolumeError(
            f"cannot read the NIfTI header: the file holds only {len(head)} bytes, less than a header: "
            "is it a complete .nii or .nii.gz volume?"
        )
    sizes = {int.from_bytes(head[:4], "little"), int.from_bytes(head[:4], "big")} & {348, 540}
    if not sizes:
        known = other_format(head)
        raise UnsupportedFormatError(
            f"the file does not start with a NIfTI header: it is {known}"
            if known
            else "the file does not start with a NIfTI header: expected a .nii or .nii.gz volume"
        )
    is_nifti1 = 348 in sizes
    magic = head[344:347] if is_nifti1 else head[4:7]
    if magic in (b"ni1", b"ni2"):
        raise UnsupportedFormatError("NIfTI pairs (.hdr + .img) are not supported: save the image as one .nii file")
    if magic not in (b"n+1", b"n+2"):
        raise UnsupportedFormatError(
            "the header lacks the NIfTI magic (an Analyze 7.5 .hdr/.img?): convert it to .nii or .nii.gz"
        )
    order: Literal["little", "big"] = "little" if int.from_bytes(head[:4], "little") in sizes else "big"
    code = int.from_bytes(head[70:72] if is_nifti1 else head[12:14], order)
    if code in _UNSUPPORTED_TYPES:
        raise InvalidVolumeError(
            f"unsupported voxel type {_UNSUPPORTED_TYPES[code]} (NIfTI datatype {code}): expected integer or "
            "floating-point intensities (convert colour or complex images to one real-valued channel)"
        )


def _read_head(path: Path) -> bytes:
    """The first bytes of the (decompressed) file."""
    try:
        handle = path.open("rb")
    except OSError as e:
        raise UnreadableVolumeError(f"cannot open the file: {e.strerror}") from e
    try:
        with handle:
            start = handle.read(2)
            if not start:
                raise UnreadableVolumeError("the file is empty: expected a .nii or .nii.gz volume")
            is_gzip = start == GZIP_MAGIC
            if path.name.lower().endswith(".gz") and not is_gzip:
                known = other_format(start + handle.read(_HEAD_BYTES))
                raise UnsupportedFormatError(
                    f"the file is named .nii.gz but is not gzip-compressed: it is {known}"
                    if known
                    else "the file is named .nii.gz but is not gzip-compressed: is it really NIfTI?"
                )
            if is_gzip and not path.name.lower().endswith(".gz"):
                raise UnsupportedFormatError("the file is gzip-compressed but named .nii: name it .nii.gz")
            handle.seek(0)
            return gzip.GzipFile(fileobj=handle).read(_HEAD_BYTES) if is_gzip else handle.read(_HEAD_BYTES)
    except (OSError, EOFError, zlib.error) as e:
        raise UnreadableVolumeError(f"cannot read the NIfTI header: {reason_for(e)}; is the file complete?") from e


def check_file_size(
    path: Path, header: NiftiHeader, offset: int, max_decompressed_bytes: int | None, *, keep: bool = False
) -> bytearray | None:
    """The file must hold the bytes its header declares; checked before any are allocated.

    A .gz file is inflated once in 1 MiB chunks to measure it. That also verifies its checksum, which nibabel
    never reaches (it stops after the declared bytes, so a corrupt stream would load as garbage), and refuses a
    stream that inflates past the cap whatever its header declares. With `keep`, the declared bytes (header and
    voxels, not any trailing data) are returned, so the caller reads the voxels without inflating the file again;
    they grow with the stream, never ahead of it. Returns None for .nii files and without `keep`.
    """
    shape, itemsize = header.get_data_shape(), header.get_data_dtype().itemsize
    needed = offset + math.prod(int(n) for n in shape) * itemsize
    is_gzip = path.name.lower().endswith(".gz")
    kept = bytearray() if keep and is_gzip else None
    size = _inflate(path, max_decompressed_bytes, kept, needed) if is_gzip else path.stat().st_size
    if size < needed:
        what = "inflates to" if is_gzip else "has"
        raise UnreadableVolumeError(
            f"the file is truncated: the header declares {needed} bytes, the file {what} {size}: "
            "the copy is incomplete, so copy or export it again"
        )
    return kept


def _inflate(path: Path, limit: int | None, kept: bytearray | None, needed: int) -> int:
    """Bytes the gzip stream inflates to (checksum verified), refusing it once it passes `limit`; the first
    `needed` of them are appended to `kept` when one is given."""
    size = 0
    try:
        with gzip.open(path, "rb") as stream:
            while chunk := stream.read(_CHUNK_BYTES):
                if kept is not None and size < needed:
                    kept += chunk[: needed - size]
                size += len(chunk)
                if limit is not None and size > limit:
                    raise VolumeTooLargeError(
                        f"the file inflates to more than the limit of {limit / 2**20:.1f} MiB, whatever its header "
                        "declares: remove the data after the image (or raise the decompressed-size limit)"
                    )
    except (OSError, EOFError, zlib.error) as e:
        raise UnreadableVolumeError(
            f"the file is truncated or corrupt ({reason_for(e)}): re-export or re-compress it"
        ) from e
    return size


def check_header(
    header: NiftiHeader, offset: int = 0, *, max_voxels: int | None, max_decompressed_bytes: int | None
) -> None:
    """Dimensionality, axis sizes, data type, the caps (voxels; bytes from `offset` on) and the affine."""
    shape = tuple(int(n) for n in header.get_data_shape())
    if len(shape) < 3:
        raise InvalidVolumeError(
            f"expected a 3D volume, got a {len(shape)}D image of shape {shape}: "
            "unet3d segments whole volumes, so export the full stack of slices as one 3D NIfTI"
        )
    if len(shape) > 3 and any(n != 1 for n in shape[3:]):
        raise InvalidVolumeError(
            f"expected a 3D volume (or 4D with a single frame), got shape {shape}: "
            "split 4D series into one file per frame"
        )
    if any(n < 0 for n in shape):
        raise UnreadableVolumeError(f"the header is corrupt: it declares a negative dimension in shape {shape}")
    if any(n < MIN_AXIS_VOXELS for n in shape[:3]):
        raise InvalidVolumeError(
            f"volume shape {shape[:3]} is too small: each axis needs at least {MIN_AXIS_VOXELS} voxels"
        )
    dtype = header.get_data_dtype()
    if dtype.fields is not None or dtype.kind not in "iuf" or dtype == np.bool_:
        raise InvalidVolumeError(f"unsupported voxel type {dtype}: expected integer or floating-point intensities")
    voxels = math.prod(shape[:3])  # Python ints: NIfTI-2 dimensions can overflow int64
    if max_voxels is not None and voxels > max_voxels:
        raise VolumeTooLargeError(
            f"volume has {voxels} voxels ({'×'.join(map(str, shape[:3]))}), more than the limit of {max_voxels}: "
            "crop it to the region of interest or downsample it, or raise the limit"
        )
    decompressed = voxels * dtype.itemsize + offset
    if max_decompressed_bytes is not None and decompressed > max_decompressed_bytes:
        raise VolumeTooLargeError(
            f"volume data is {decompressed / 2**20:.1f} MiB uncompressed, "
            f"more than the limit of {max_decompressed_bytes / 2**20:.1f} MiB: "
            "crop it to the region of interest or downsample it, or raise the limit"
        )
    if not np.isfinite(header.get_best_affine()).all() or abs(np.linalg.det(header.get_best_affine()[:3, :3])) < 1e-12:
        raise InvalidVolumeError("the header's voxel-to-world matrix is degenerate: fix pixdim / qform / sform")


def reason_for(error: BaseException) -> str:
    """What went wrong, in words a user can act on: nibabel's header messages, never Python internals."""
    if isinstance(error, ImageFileError | HeaderDataError):
        return _short(error)
    if isinstance(error, EOFError):
        return "the compressed data ends too early"
    if isinstance(error, zlib.error | gzip.BadGzipFile):
        return "the compressed data is corrupt"
    if isinstance(error, OSError):
        return error.strerror or "a read error"
    return "the header holds invalid values"


def _short(error: BaseException) -> str:
    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    # nibabel messages sometimes quote the temp path; keep only the reason.
    return text.replace('"/', "'/").split("'/")[0].strip().rstrip(":")[:160] or type(error).__name__
