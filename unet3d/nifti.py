"""Reading NIfTI files in one pass from the first byte: sniff → header checks → capped inflate → parse.

The header is read and checked before any voxel is, and compressed data is streamed in fixed-size chunks, so a
hostile file (a decompression bomb, a header declaring 10^36 voxels) is refused in constant memory however large it
claims to be. A .nii.gz is inflated once: the stream that read its header goes on to its end (which verifies the
size and the gzip checksum) and keeps the declared bytes, from which the voxels are parsed.
"""

from __future__ import annotations

import gzip
import io
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, cast

import nibabel as nib
import numpy as np
from nibabel.filebasedimages import ImageFileError
from nibabel.fileholders import FileHolder
from nibabel.spatialimages import HeaderDataError

from .compression import DEFLATE_ERRORS, STREAM_ERRORS, reading
from .errors import InvalidVolumeError, UnreadableVolumeError, UnsupportedFormatError, VolumeTooLargeError
from .formats import GZIP_MAGIC, check_suffix, other_format, sniff_nifti
from .memory import describe, require_memory
from .planning import load_bytes

MIN_AXIS_VOXELS = 4
NiftiHeader = nib.Nifti1Header | nib.Nifti2Header
NiftiImage = nib.Nifti1Image | nib.Nifti2Image
READ_ERRORS: tuple[type[Exception], ...] = (ImageFileError, HeaderDataError, *STREAM_ERRORS, ValueError, OverflowError)
_HEAD_BYTES = 552  # a NIfTI-2 header (540 bytes) plus the extension flag
_CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class NiftiContent:
    """What `read_nifti` read.

    Attributes:
        data: `(I, J, K)` voxel values, float32, scaling (scl_slope/inter) applied.
        affine: voxel → world (mm) matrix nibabel chooses (sform if set, else qform).
        header: the header as nibabel's image holds it (scaling moved to the data, extensions kept).
        stored_shape: the shape in the file, e.g. `(I, J, K, 1)`.
    """

    data: np.ndarray
    affine: np.ndarray
    header: NiftiHeader
    stored_shape: tuple[int, ...]


def read_nifti(path: Path, *, max_voxels: int | None = None, max_decompressed_bytes: int | None = None) -> NiftiContent:
    """Read a .nii/.nii.gz (NIfTI-1 or -2) as float32 in one pass, validating the header before the data.

    Raises:
        UnsupportedFormatError: the name or the content is not single-file NIfTI-1/NIfTI-2.
        UnreadableVolumeError: the header cannot be parsed, or the file is truncated or corrupt.
        InvalidVolumeError: wrong dimensionality, empty axes, an unsupported data type, NaN or infinite voxels.
        VolumeTooLargeError: more voxels or decompressed bytes than the caps allow, or than memory holds.
    """
    check_suffix(path.name)
    with _open(path) as source:
        header, offset = _read_header(source)
        check_header(header, offset, max_voxels=max_voxels, max_decompressed_bytes=max_decompressed_bytes)
        end = _end_of_data(header, offset)
        _require_memory_to_read(source, header, end, max_decompressed_bytes)
        body = _keep_body(source, end, max_decompressed_bytes)
    image = _image_from(body[:offset], header)
    data = _voxels(body, image)
    del body  # the float32 copy is all that is kept
    bad = data.size - int(np.count_nonzero(np.isfinite(data)))
    if bad:
        raise InvalidVolumeError(
            f"{bad} voxels are NaN or infinite: replace them (e.g. with the background value) and retry"
        )
    return NiftiContent(data, image.affine.copy(), image.header.copy(), tuple(int(n) for n in image.shape))


def check_nifti(
    path: Path, *, max_voxels: int | None = None, max_decompressed_bytes: int | None = None, verify_data: bool = True
) -> NiftiHeader:
    """Validate a NIfTI file as `read_nifti` would, keeping no voxel data; returns its header.

    With `verify_data` a .gz file is inflated once, in 1 MiB chunks, to check that it holds the data its header
    declares and that its checksum is right (stopping as soon as `max_decompressed_bytes` is passed); without it
    only the header is read (a quick early check: `read_nifti` verifies the data when it reads it).

    Raises:
        as `read_nifti`, except for the voxel values and memory.
    """
    check_suffix(path.name)
    with _open(path, whole=verify_data) as source:
        header, offset = _read_header(source)
        check_header(header, offset, max_voxels=max_voxels, max_decompressed_bytes=max_decompressed_bytes)
        if verify_data:
            _verify_body(source, _end_of_data(header, offset), max_decompressed_bytes)
    return header


def verify_stored_data(path: Path) -> NiftiHeader:
    """The header of a NIfTI file whose data was streamed to its end (size and gzip checksum verified), whatever its
    dimensions: e.g. a 4D probabilities file, which `check_nifti` (for 3D volumes) refuses."""
    check_suffix(path.name)
    with _open(path) as source:
        header, offset = _read_header(source)
        _verify_body(source, _end_of_data(header, offset), None)
    return header


def open_nifti(
    path: Path, *, max_voxels: int | None = None, max_decompressed_bytes: int | None = None, verify_data: bool = True
) -> NiftiImage:
    """`check_nifti`, then the file opened lazily by nibabel (its voxels are read only when asked for)."""
    header = check_nifti(
        path, max_voxels=max_voxels, max_decompressed_bytes=max_decompressed_bytes, verify_data=verify_data
    )
    try:
        return _image_class(header).from_filename(path)
    except READ_ERRORS as e:
        raise _header_error(e) from e


@dataclass
class _Source:
    """One file read front to back: `stream` gives its bytes, inflated on the way when it is gzip."""

    handle: BinaryIO
    stream: BinaryIO
    is_gzip: bool
    head: bytes = b""


@contextmanager
def _open(path: Path, *, whole: bool = True) -> Iterator[_Source]:
    """The file, its name and its compression agreeing (a .nii.gz must be gzip, a gzip stream a .nii.gz); `whole`:
    the stream will be read to its end (else only the header, see `unet3d.compression.reading`)."""
    try:
        handle = path.open("rb")
    except OSError as e:
        raise UnreadableVolumeError(f"cannot open the file: {e.strerror}") from e
    with handle:
        try:
            start = handle.read(len(GZIP_MAGIC))
            if not start:
                raise UnreadableVolumeError("the file is empty: expected a .nii or .nii.gz volume")
            is_gzip, named_gzip = start == GZIP_MAGIC, path.name.lower().endswith(".gz")
            if named_gzip and not is_gzip:
                known = other_format(start + handle.read(_HEAD_BYTES))
                what = f"it is {known}" if known else "is it really NIfTI?"
                raise UnsupportedFormatError(f"the file is named .nii.gz but is not gzip-compressed: {what}")
            if is_gzip and not named_gzip:
                raise UnsupportedFormatError("the file is gzip-compressed but named .nii: name it .nii.gz")
            handle.seek(0)
        except OSError as e:
            raise _header_error(e) from e
        if not is_gzip:
            yield _Source(handle, handle, is_gzip=False)
            return
        with reading(handle, whole=whole) as stream:
            yield _Source(handle, cast(BinaryIO, stream), is_gzip=True)


def _read_header(source: _Source) -> tuple[NiftiHeader, int]:
    """The header (without extensions) and the data offset, from the file's first bytes, as nib.load reads them."""
    try:
        source.head = source.stream.read(_HEAD_BYTES)
    except STREAM_ERRORS as e:
        raise _header_error(e) from e
    header_class = sniff_nifti(source.head)
    block = source.head[: header_class.template_dtype.itemsize]
    try:
        header = header_class.from_fileobj(io.BytesIO(block))
    except READ_ERRORS as e:
        raise _header_error(e) from e
    # What nib.load computes from a header (shape, type, offset, scaling, affine): a value it cannot compute (a NaN
    # vox_offset, a broken quaternion) is a header it cannot read.
    proxy: Any = _image_from(block, header).dataobj
    return header, int(proxy.offset)


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


def _end_of_data(header: NiftiHeader, offset: int) -> int:
    """Where the declared voxels end: the bytes a complete file holds at least."""
    return offset + math.prod(int(n) for n in header.get_data_shape()) * header.get_data_dtype().itemsize


def _require_memory_to_read(source: _Source, header: NiftiHeader, end: int, limit: int | None) -> None:
    """Refuse now what could not fit, before the kernel kills the process mid-read."""
    shape = tuple(int(n) for n in header.get_data_shape()[:3])
    stored = header.get_data_dtype()
    try:
        require_memory(load_bytes(math.prod(shape), stored.itemsize), f"reading {describe(shape)} of {stored}")
    except VolumeTooLargeError:
        # A header alone can declare anything: a truncated or corrupt file says so rather than asking for memory.
        # The same stream goes on to the end without keeping the bytes: time, not memory, on the way to a refusal.
        _verify_body(source, end, limit)
        raise


def _keep_body(source: _Source, end: int, limit: int | None) -> bytearray | np.memmap:
    """The file's first `end` bytes (header and voxels, not any trailing data), once it is known to hold them.

    A .nii file is measured on disk and mapped, not read. A .gz file's stream goes on from the header to its end
    (see `_inflate_rest`), keeping the declared bytes as they come: they grow with the stream, never ahead of it.
    """
    if not source.is_gzip:
        _check_size(os.fstat(source.handle.fileno()).st_size, end, is_gzip=False)
        return np.memmap(source.handle, np.uint8, mode="r", shape=(end,))
    kept = bytearray(source.head[:end])
    _inflate_rest(source, end, limit, kept)
    return kept


def _verify_body(source: _Source, end: int, limit: int | None) -> None:
    """The file must hold the bytes its header declares (`_keep_body` without keeping them)."""
    if source.is_gzip:
        _inflate_rest(source, end, limit, None)
    else:
        _check_size(os.fstat(source.handle.fileno()).st_size, end, is_gzip=False)


def _inflate_rest(source: _Source, end: int, limit: int | None, kept: bytearray | None) -> None:
    """Inflate the stream to its end in 1 MiB chunks, appending to `kept` what lies before `end`.

    Reading to the end measures the stream, verifies its checksum (which nibabel never reaches: it stops after the
    declared bytes, so a corrupt stream would load as garbage) and refuses one that inflates past `limit`,
    whatever its header declares.
    """
    size = len(source.head)
    try:
        while True:
            if limit is not None and size > limit:
                raise VolumeTooLargeError(
                    f"the file inflates to more than the limit of {limit / 2**20:.1f} MiB, whatever its header "
                    "declares: remove the data after the image (or raise the decompressed-size limit)"
                )
            chunk = source.stream.read(_CHUNK_BYTES)
            if not chunk:
                break
            if kept is not None and size < end:
                kept += chunk[: end - size]
            size += len(chunk)
    except STREAM_ERRORS as e:
        raise UnreadableVolumeError(
            f"the file is truncated or corrupt ({reason_for(e)}): re-export or re-compress it"
        ) from e
    _check_size(size, end, is_gzip=True)


def _check_size(size: int, end: int, *, is_gzip: bool) -> None:
    if size < end:
        what = "inflates to" if is_gzip else "has"
        raise UnreadableVolumeError(
            f"the file is truncated: the header declares {end} bytes, the file {what} {size}: "
            "the copy is incomplete, so copy or export it again"
        )


def _image_from(header_bytes: bytes | bytearray | np.ndarray, header: NiftiHeader) -> NiftiImage:
    """nibabel's own image made from the header and extensions alone: its affine, header and scaling, exactly as
    `nib.load` gives them (its proxy's file holds no voxels: `_voxels` reads them from the bytes kept)."""
    try:
        return _image_class(header).from_file_map({"image": FileHolder(fileobj=io.BytesIO(bytes(header_bytes)))})
    except READ_ERRORS as e:
        raise _header_error(e) from e


def _voxels(body: bytearray | np.ndarray, image: NiftiImage) -> np.ndarray:
    """The `(I, J, K)` voxels as float32, scaled; NIfTI stores them Fortran-order from the data offset."""
    proxy: Any = image.dataobj  # nibabel's ArrayProxy (typed as ArrayLike)
    shape = tuple(int(n) for n in proxy.shape)
    try:
        raw = np.ndarray(shape, proxy.dtype, buffer=body, offset=int(proxy.offset), order="F")
        # nibabel moves scl_slope/scl_inter from the header to the proxy (0 or NaN slope → 1, 0: unscaled).
        return _to_float32(raw, float(proxy.slope), float(proxy.inter)).reshape(shape[:3])
    except MemoryError as e:
        raise VolumeTooLargeError(f"not enough memory to read a volume of shape {shape}") from e


def _image_class(header: NiftiHeader) -> type[nib.Nifti1Image] | type[nib.Nifti2Image]:
    return nib.Nifti2Image if isinstance(header, nib.Nifti2Header) else nib.Nifti1Image  # NIfTI-2 subclasses -1


def _to_float32(raw: np.ndarray, slope: float, inter: float) -> np.ndarray:
    # Scale in float32 ourselves: nibabel's get_fdata would build a float64 copy of the volume first.
    data = raw.astype(np.float32, copy=True)
    if slope != 1.0:
        data *= np.float32(slope)
    if inter != 0.0:
        data += np.float32(inter)
    return data


def _header_error(error: BaseException) -> UnreadableVolumeError:
    return UnreadableVolumeError(f"cannot read the NIfTI header: {reason_for(error)}; is the file complete?")


def reason_for(error: BaseException) -> str:
    """What went wrong, in words a user can act on: nibabel's header messages, never Python internals."""
    if isinstance(error, ImageFileError | HeaderDataError):
        return _short(error)
    if isinstance(error, EOFError):
        return "the compressed data ends too early"
    if isinstance(error, (*DEFLATE_ERRORS, gzip.BadGzipFile)):
        return "the compressed data is corrupt"
    if isinstance(error, OSError):
        return error.strerror or "a read error"
    return "the header holds invalid values"


def _short(error: BaseException) -> str:
    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    # nibabel messages sometimes quote the temp path; keep only the reason.
    return text.replace('"/', "'/").split("'/")[0].strip().rstrip(":")[:160] or type(error).__name__
