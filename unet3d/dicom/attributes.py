"""The header attributes the reader decides with, read once per object straight from pydicom's raw elements.

pydicom converts an element on first access (~40 µs with its validation hooks); the ~20 attributes below, read for
each of hundreds of slices, cost as much as parsing the files. They are simple types (numbers as decimal strings,
unsigned shorts, ASCII codes and UIDs), decoded here in a few microseconds; anything pydicom already converted, or
that is not a plain raw value, goes through pydicom as usual.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset

Kind = Literal["text", "texts", "us"]
_TAGS: dict[str, tuple[int, Kind]] = {
    "SOPClassUID": (0x00080016, "text"),
    "ImageType": (0x00080008, "texts"),
    "Modality": (0x00080060, "text"),
    "SeriesDescription": (0x0008103E, "text"),
    "PatientName": (0x00100010, "text"),
    "PatientID": (0x00100020, "text"),
    "PatientBirthDate": (0x00100030, "text"),
    "SeriesInstanceUID": (0x0020000E, "text"),
    "SeriesNumber": (0x00200011, "text"),
    "ImagePositionPatient": (0x00200032, "texts"),
    "ImageOrientationPatient": (0x00200037, "texts"),
    "SamplesPerPixel": (0x00280002, "us"),
    "PhotometricInterpretation": (0x00280004, "text"),
    "NumberOfFrames": (0x00280008, "text"),
    "Rows": (0x00280010, "us"),
    "Columns": (0x00280011, "us"),
    "PixelSpacing": (0x00280030, "texts"),
    "BitsAllocated": (0x00280100, "us"),
    "BitsStored": (0x00280101, "us"),
    "PixelRepresentation": (0x00280103, "us"),
    "RescaleIntercept": (0x00281052, "text"),
    "RescaleSlope": (0x00281053, "text"),
}


@dataclass(frozen=True)
class Attributes:
    """One object's deciding attributes. Numbers stay the decimal strings DICOM stores (the geometry code parses
    and judges them); absent attributes are None (or empty)."""

    sop_class: str
    image_type: tuple[str, ...]
    modality: str
    series_description: str
    patient: tuple[str, str, str]  # ID, name, birth date: compared between objects, never shown
    series_uid: str
    series_number: str
    position: tuple[str, ...] | None
    orientation: tuple[str, ...] | None
    samples_per_pixel: int
    photometric: str
    frames: int
    rows: int | None
    columns: int | None
    spacing: tuple[str, ...] | None
    bits_allocated: int | None
    bits_stored: int | None
    pixel_representation: int
    rescale_intercept: str | None
    rescale_slope: str | None


def read_attributes(header: Dataset) -> Attributes:
    """The deciding attributes of `header` (see `Attributes`)."""
    little = header.original_encoding[1] is not False
    value = {keyword: _value(header, tag, kind, little) for keyword, (tag, kind) in _TAGS.items()}
    frames = str(value["NumberOfFrames"] or "1")
    return Attributes(
        sop_class=value["SOPClassUID"] or "",
        image_type=tuple(value["ImageType"] or ()),
        modality=(value["Modality"] or "").upper(),
        series_description=value["SeriesDescription"] or "",
        patient=(value["PatientID"] or "", value["PatientName"] or "", value["PatientBirthDate"] or ""),
        series_uid=value["SeriesInstanceUID"] or "",
        series_number=value["SeriesNumber"] or "",
        position=value["ImagePositionPatient"],
        orientation=value["ImageOrientationPatient"],
        samples_per_pixel=1 if value["SamplesPerPixel"] is None else value["SamplesPerPixel"],
        photometric=value["PhotometricInterpretation"] or "MONOCHROME2",
        frames=int(frames) if frames.isdigit() and int(frames) > 0 else 1,
        rows=value["Rows"],
        columns=value["Columns"],
        spacing=value["PixelSpacing"],
        bits_allocated=value["BitsAllocated"],
        bits_stored=value["BitsStored"],
        pixel_representation=value["PixelRepresentation"] or 0,
        rescale_intercept=value["RescaleIntercept"],
        rescale_slope=value["RescaleSlope"],
    )


def _value(header: Dataset, tag: int, kind: Kind, little: bool) -> Any:
    element = header.get_item(tag)
    if element is None:
        return None
    if isinstance(element, RawDataElement) and element.value is not None and element.VR not in ("SQ", "UN"):
        raw = element.value
        if kind == "us":
            return int.from_bytes(raw[:2], "little" if little else "big") if len(raw) >= 2 else None
        # Decimal strings, codes and UIDs are ASCII, padded with a space or NUL; names are only compared.
        text = raw.decode("latin-1").strip(" \x00")
        if kind == "texts":
            return tuple(part.strip() for part in text.split("\\")) if text else None
        return text
    converted = header[tag].value
    if converted is None or converted == "":
        return None
    if kind == "us":
        return int(converted) if isinstance(converted, int) else None
    if kind == "texts":
        items = [converted] if isinstance(converted, str | int | float) else list(converted)
        return tuple(str(v).strip() for v in items)
    return str(converted).strip()
