"""DICOM objects of an upload: which files are DICOM, their headers (pixel data left unread) and what they hold."""

from __future__ import annotations

import io
import logging
import struct
from collections.abc import Iterable
from dataclasses import dataclass

import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.filereader import data_element_generator
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian

from ..archive import Member, shown
from ..errors import UnreadableVolumeError
from .attributes import Attributes, read_attributes

logger = logging.getLogger(__name__)

PIXEL_DATA = 0x7FE00010
UNDEFINED_LENGTH = 0xFFFFFFFF  # encapsulated (compressed) pixel data
DEFLATED = DeflatedExplicitVRLittleEndian
MEDIA_DIRECTORY = "1.2.840.10008.1.3.10"  # a DICOMDIR: an index of the files, not an image
_PREAMBLE = 128
_PARSE_ERRORS = (
    InvalidDicomError,
    ValueError,
    EOFError,
    OSError,
    KeyError,
    IndexError,
    struct.error,
    TypeError,
    NotImplementedError,
    AttributeError,
)
# Objects that share the image attributes (Rows, Columns) but are not a scan to segment.
_NOT_SCANS = {
    "SEG": "a segmentation (SEG)",
    "RTDOSE": "an RT dose grid",
    "RTSTRUCT": "an RT structure set",
    "RTPLAN": "an RT plan",
    "REG": "a registration",
    "SR": "a structured report (SR)",
    "DOC": "an encapsulated document (PDF)",
    "KO": "a key object selection",
    "PR": "a presentation state",
}


@dataclass(frozen=True)
class PixelElement:
    """Where uncompressed pixel data lies in a file's bytes: `length` bytes from `offset`."""

    offset: int
    length: int


@dataclass
class Instance:
    """One DICOM object (file) of an upload.

    Attributes:
        name: its name in the upload, for messages.
        header: the dataset without its pixel data.
        data: the file's bytes, until the pixels are decoded (then None).
        pixels: where uncompressed pixel data lies in `data`; None when it is compressed (or deflated) and must be
            decoded by pydicom, or when there is none.
        has_pixel_data: whether the object holds a pixel data element at all.
        attributes: the attributes the reader decides with, read once.
    """

    name: str
    header: Dataset
    data: bytes | None
    pixels: PixelElement | None
    has_pixel_data: bool
    attributes: Attributes

    @property
    def transfer_syntax(self) -> UID:
        """The file's transfer syntax ("" for a file without meta information)."""
        meta = getattr(self.header, "file_meta", None)
        return UID(str(meta.get("TransferSyntaxUID", ""))) if meta is not None else UID("")


def read_instances(members: Iterable[Member]) -> tuple[list[Instance], int]:
    """Parse the DICOM members of an upload; DICOMDIR files and anything that is not DICOM are skipped.

    Each member's bytes move into its `Instance` (the member keeps None), so they are held once.

    Returns:
        The DICOM objects, and how many files the upload held.

    Raises:
        UnreadableVolumeError: a file that declares itself DICOM (the `DICM` marker) cannot be parsed.
    """
    instances, skipped, files = [], 0, 0
    for member in members:
        files += 1
        data, member.data = member.data, None
        instance = _parse(member.name, data) if data is not None else None
        if instance is None:
            skipped += 1
            continue
        if _is_directory(instance):
            continue
        instances.append(instance)
    if skipped:
        logger.info("skipped %d files that are not DICOM", skipped)
    return instances, files


def _parse(name: str, data: bytes) -> Instance | None:
    """The instance in `data`, or None when `data` is not DICOM."""
    has_marker = data[_PREAMBLE : _PREAMBLE + 4] == b"DICM"
    # Files written without the preamble (old ACR-NEMA style exports) start with a group 0002 or 0008 tag.
    if not has_marker and data[:2] not in (b"\x02\x00", b"\x08\x00"):
        return None
    stream = io.BytesIO(data)
    try:
        header = pydicom.dcmread(stream, stop_before_pixels=True, force=not has_marker)
        pixels, has_pixel_data = _pixel_element(stream, header)
        attributes = read_attributes(header)
        header.buffer = None  # pydicom keeps the stream, and so the whole file, alive as long as the header
    except _PARSE_ERRORS as e:
        if not has_marker:
            return None
        raise UnreadableVolumeError(
            f"'{shown(name)}' is a damaged DICOM file ({type(e).__name__}): export the series again"
        ) from e
    if not has_marker and not attributes.sop_class:  # forced parses accept too much: demand an object identity
        return None
    if UID(attributes.sop_class).name.endswith("Image Storage") and not (attributes.rows and has_pixel_data):
        # pydicom reads what it can of a cut or corrupted header without complaint: an image without pixels is one
        raise UnreadableVolumeError(
            f"'{shown(name)}' is a damaged DICOM file ({UID(attributes.sop_class).name} without its image data): "
            "export the series again"
        )
    return Instance(name, header, data, pixels, has_pixel_data, attributes)


def _pixel_element(stream: io.BytesIO, header: Dataset) -> tuple[PixelElement | None, bool]:
    """Where the pixel data element that `stop_before_pixels` stopped at lies (pydicom rewinds to its tag); located
    only for the uncompressed syntaxes, whose bytes are the pixels themselves."""
    meta = getattr(header, "file_meta", None)
    syntax = UID(str(meta.get("TransferSyntaxUID", ""))) if meta is not None else UID("")
    implicit, little = header.original_encoding
    if implicit is None or little is None:
        return None, False
    element = next(data_element_generator(stream, implicit, little, defer_size=0), None)
    if not isinstance(element, RawDataElement) or element.tag != PIXEL_DATA:
        return None, element is not None and element.tag >> 16 == 0x7FE0  # float/double pixel data
    # Deflated data was inflated into another buffer (offsets here mean nothing); compressed and unknown syntaxes
    # go to pydicom's decoders, which name what they cannot read.
    native = not syntax or (syntax.is_transfer_syntax and not syntax.is_compressed and syntax != DEFLATED)
    if element.length == UNDEFINED_LENGTH or not native:
        return None, True
    return PixelElement(int(element.value_tell), int(element.length)), True


def _is_directory(instance: Instance) -> bool:
    meta = getattr(instance.header, "file_meta", None)
    sop_class = meta.get("MediaStorageSOPClassUID", "") if meta is not None else ""
    return sop_class == MEDIA_DIRECTORY or "DirectoryRecordSequence" in instance.header


def non_image_reason(instance: Instance) -> str | None:
    """What this object is when it is not an image to segment ("a structured report (SR)", ...), else None."""
    attributes = instance.attributes
    if attributes.modality in _NOT_SCANS:
        return _NOT_SCANS[attributes.modality]
    if not attributes.rows or not attributes.columns or not instance.has_pixel_data:
        uid = UID(attributes.sop_class)
        return f"an object without pixel data ({uid.name if uid else 'no SOP class'})"
    return None
