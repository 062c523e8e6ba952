"""DICOM pixel data into a float32 volume: stored values, sign bits, RescaleSlope/Intercept, one frame at a time.

Uncompressed pixel data is viewed in place in the file's bytes (no copy, no per-frame decoder set-up: ~1 ms a frame
through pydicom's generic path); compressed transfer syntaxes go through pydicom's decoders (pylibjpeg, pyjpegls,
openjpeg plugins), which are checked for before anything is decoded so the error names the syntax.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
from pydicom.pixels import get_decoder, iter_pixels
from pydicom.uid import UID

from ..archive import shown
from ..errors import InvalidVolumeError, UnreadableVolumeError, UnsupportedFormatError
from .geometry import Stack
from .instances import Instance

logger = logging.getLogger(__name__)
_DECODE_ERRORS = (
    ValueError,
    RuntimeError,
    EOFError,
    OSError,
    KeyError,
    IndexError,
    TypeError,
    AttributeError,
    NotImplementedError,
)
_GREYSCALE = ("MONOCHROME1", "MONOCHROME2")


def check_pixel_format(instances: Sequence[Instance]) -> np.dtype:
    """The stored dtype shared by the series' images; refuses colour, odd bit depths and undecodable syntaxes.

    Raises:
        InvalidVolumeError: colour or palette images, bit depths other than 8/16/32, or images that disagree.
        UnsupportedFormatError: a transfer syntax no installed decoder reads (the message names it).
    """
    dtypes = {_stored_dtype(instance) for instance in instances}
    if len(dtypes) > 1:
        raise InvalidVolumeError(
            "the series mixes pixel formats (bits allocated or signedness differ between images): export it again"
        )
    for syntax in sorted({instance.transfer_syntax for instance in instances}):
        _check_decoder(syntax)
    return dtypes.pop()


def _stored_dtype(instance: Instance) -> np.dtype:
    attributes = instance.attributes
    samples, photometric = attributes.samples_per_pixel, attributes.photometric
    if samples != 1 or photometric not in _GREYSCALE:
        raise InvalidVolumeError(
            f"the images are in colour ({photometric}, {samples} samples per pixel): unet3d segments greyscale scans; "
            "a colour DICOM is usually a screenshot or secondary capture, so export the original series"
        )
    bits = attributes.bits_allocated
    if bits not in (8, 16, 32):
        raise InvalidVolumeError(f"unsupported BitsAllocated {bits}: expected 8, 16 or 32-bit greyscale images")
    kind = "i" if attributes.pixel_representation == 1 else "u"
    little = instance.header.original_encoding[1] is not False
    return np.dtype(f"{'<' if little else '>'}{kind}{bits // 8}")


def _check_decoder(syntax: UID) -> None:
    if not syntax:
        return  # no file meta: implicit VR little endian, uncompressed
    if not syntax.is_transfer_syntax:
        raise UnsupportedFormatError(
            f"the images declare transfer syntax {str(syntax)[:64]}, which is not a standard DICOM transfer syntax "
            "(a private or corrupt one), so their pixels cannot be interpreted: export the series again as "
            "standard DICOM (e.g. Explicit VR Little Endian)"
        )
    named = f"{syntax} ({syntax.name})"
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError as e:
        raise UnsupportedFormatError(
            f"the images use transfer syntax {named}, which unet3d cannot decode: export the series uncompressed "
            "(Explicit VR Little Endian), or with RLE, JPEG lossless, JPEG-LS or JPEG 2000 compression"
        ) from e
    if not decoder.is_available:
        raise UnsupportedFormatError(
            f"the images use transfer syntax {named}, and no decoder for it is installed: install pylibjpeg and its "
            "plugins (requirements.txt pins them), or export the series uncompressed"
        )


def decode_stack(stack: Stack, instances: Sequence[Instance], dtype: np.dtype) -> np.ndarray:
    """The stack's voxels as float32 `(I, J, K)` with the rescale applied; each object's bytes are released once
    its frames are copied, so the file bytes and the volume are never held twice over.

    Raises:
        UnreadableVolumeError: pixel data that is truncated, shorter than Rows × Columns × frames, or that the
            decoder cannot decompress (bytes after the image, which some exporters pad with, are ignored).
    """
    columns, rows, slices = stack.shape
    out = np.empty((slices, rows, columns), dtype=np.float32)  # C-order frames: each copy is contiguous
    slots: dict[int, list[tuple[int, int]]] = {}
    for k, frame in enumerate(stack.frames):
        slots.setdefault(frame.instance, []).append((frame.frame, k))
    for index, wanted in slots.items():
        instance, numbers = instances[index], sorted(wanted)
        if instance.data is None:
            raise UnreadableVolumeError(f"'{shown(instance.name)}' was already decoded: read the series again")
        if instance.pixels is not None:
            native = _native_frames(instance, instance.data, dtype, rows, columns)
            frames: Iterable[np.ndarray] = (native[number] for number, _ in numbers)
        else:
            frames = _decoded_frames(instance, instance.data, [number for number, _ in numbers], rows, columns)
        for (_, k), stored in zip(numbers, frames, strict=True):
            frame = stack.frames[k]
            _store(out[k], stored, instance, frame.slope, frame.intercept)
        instance.data = None
    return out.transpose(2, 1, 0)  # (I, J, K) = (column, row, slice), a view


def _native_frames(instance: Instance, data: bytes, dtype: np.dtype, rows: int, columns: int) -> np.ndarray:
    """All frames of uncompressed pixel data, viewed in the file's bytes: `(frames, rows, columns)`."""
    element = instance.pixels
    if element is None:
        raise UnreadableVolumeError(f"'{shown(instance.name)}' has no uncompressed pixel data")
    count = instance.attributes.frames
    expected = rows * columns * count * dtype.itemsize
    present = len(data) - element.offset
    if present < min(element.length, expected):
        raise UnreadableVolumeError(
            f"'{shown(instance.name)}' is truncated: its pixel data should hold {element.length} bytes, the file has "
            f"{max(present, 0)}; copy or export the series again"
        )
    if element.length > expected + 1:  # one padding byte keeps an odd length even; more is trailing padding
        logger.warning(
            "%s: pixel data has %d bytes after the image; ignored", shown(instance.name), element.length - expected
        )
    if element.length < expected:
        raise UnreadableVolumeError(
            f"'{shown(instance.name)}': the pixel data holds {element.length} bytes, but Rows × Columns × frames × "
            f"bytes per pixel = {rows} × {columns} × {count} × {dtype.itemsize} = {expected}: the header and the "
            "pixels disagree; export the series again"
        )
    frames = np.frombuffer(data, dtype=dtype, count=rows * columns * count, offset=element.offset)
    return frames.reshape(count, rows, columns)


def _decoded_frames(
    instance: Instance, data: bytes, numbers: list[int], rows: int, columns: int
) -> Iterator[np.ndarray]:
    """The frames `numbers` (ascending) through pydicom's decoders (compressed or deflated data), parsed once."""
    frames = iter_pixels(io.BytesIO(data), indices=numbers)
    for _ in numbers:
        try:
            frame = next(frames)
        except (*_DECODE_ERRORS, StopIteration) as e:
            syntax = instance.transfer_syntax.name or "uncompressed"
            raise UnreadableVolumeError(
                f"cannot decode the pixels of '{shown(instance.name)}' ({syntax}): the data is damaged or truncated;"
                " export the series again"
            ) from e
        if frame.shape != (rows, columns):
            raise UnreadableVolumeError(
                f"'{shown(instance.name)}' decodes to a {'×'.join(map(str, frame.shape))} image, not the "
                f"{rows}×{columns} its header declares: export the series again"
            )
        yield frame


def _store(slot: np.ndarray, stored: np.ndarray, instance: Instance, slope: float, intercept: float) -> None:
    bits_stored, bits = instance.attributes.bits_stored or 0, stored.dtype.itemsize * 8
    if stored.dtype.kind == "i" and 0 < bits_stored < bits:  # sign bit at BitsStored - 1: extend it
        shift = bits - bits_stored
        stored = (stored << shift) >> shift
    slot[...] = stored
    if slope != 1.0:
        slot *= np.float32(slope)
    if intercept != 0.0:
        slot += np.float32(intercept)
