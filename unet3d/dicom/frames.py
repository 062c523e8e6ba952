"""Where each 2D frame of a DICOM object lies: single-frame images from their own attributes, enhanced multi-frame
objects from their per-frame and shared functional groups. No judgement of the whole series here (see geometry.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

from pydicom.dataset import Dataset

from ..errors import InvalidVolumeError
from .attributes import Attributes

_MAX_RESCALE = 1e28  # × the largest 32-bit stored value stays below float32's maximum (3.4e38)


@dataclass(frozen=True)
class Frame:
    """One 2D frame of a series and where it lies.

    Attributes:
        instance: index of its object in the series' instance list.
        frame: its 0-based frame number inside that object (0 for single-frame images).
        position: ImagePositionPatient, the centre of the first pixel (LPS, mm).
        orientation: ImageOrientationPatient, row then column direction cosines.
        spacing: PixelSpacing: (between rows, between columns) in mm.
        size: (Rows, Columns).
        slope, intercept: RescaleSlope and RescaleIntercept (stored value → real value).
    """

    instance: int
    frame: int
    position: tuple[float, float, float]
    orientation: tuple[float, ...]
    spacing: tuple[float, float]
    size: tuple[int, int]
    slope: float = 1.0
    intercept: float = 0.0


def frames_of(header: Dataset, attributes: Attributes, instance: int) -> list[Frame]:
    """The frames of one object: one for a single-frame image, one per frame for an enhanced multi-frame image
    (positions, orientation, spacing and rescale read from its per-frame and shared functional groups).

    Raises:
        InvalidVolumeError: the position, orientation, spacing or image size is missing or malformed.
    """
    size = (_positive(attributes.rows, "Rows"), _positive(attributes.columns, "Columns"))
    count = attributes.frames
    if "PerFrameFunctionalGroupsSequence" not in header:
        if count > 1:
            raise InvalidVolumeError(
                f"a multi-frame image ({attributes.modality or '?'}, {count} frames) has no per-frame positions "
                "(it is not an enhanced CT/MR/PET object): unet3d cannot place its frames in space"
            )
        return [
            _frame(
                attributes.position,
                attributes.orientation,
                attributes.spacing,
                attributes.rescale_slope,
                attributes.rescale_intercept,
                instance,
                0,
                size,
            )
        ]
    per_frame = header.PerFrameFunctionalGroupsSequence
    shared = header.get("SharedFunctionalGroupsSequence", [Dataset()])[0]
    if len(per_frame) != count:
        raise InvalidVolumeError(
            f"the multi-frame image declares {count} frames but describes {len(per_frame)}: export it again"
        )
    frames = []
    for index, item in enumerate(per_frame):
        groups = _FunctionalGroups(item, shared)
        slope = groups.get("RescaleSlope", attributes.rescale_slope)
        intercept = groups.get("RescaleIntercept", attributes.rescale_intercept)
        frames.append(
            _frame(
                groups.get("ImagePositionPatient"),
                groups.get("ImageOrientationPatient"),
                groups.get("PixelSpacing"),
                slope,
                intercept,
                instance,
                index,
                size,
            )
        )
    return frames


class _FunctionalGroups:
    """Attribute look-up through an enhanced object's functional groups: per-frame first, then shared."""

    _GROUPS: ClassVar[dict[str, str]] = {
        "ImagePositionPatient": "PlanePositionSequence",
        "ImageOrientationPatient": "PlaneOrientationSequence",
        "PixelSpacing": "PixelMeasuresSequence",
        "RescaleSlope": "PixelValueTransformationSequence",
        "RescaleIntercept": "PixelValueTransformationSequence",
    }

    def __init__(self, per_frame: Dataset, shared: Dataset) -> None:
        self.sources = (per_frame, shared)

    def get(self, keyword: str, default: Any = None) -> Any:
        group = self._GROUPS[keyword]
        for source in self.sources:
            items = source.get(group)
            if items and keyword in items[0]:
                return items[0].get(keyword)
        return default


def _frame(
    position: Any,
    orientation: Any,
    spacing: Any,
    slope: Any,
    intercept: Any,
    instance: int,
    index: int,
    size: tuple[int, int],
) -> Frame:
    pixel_spacing = _numbers(spacing, 2, "PixelSpacing")
    if min(pixel_spacing) <= 0:
        raise InvalidVolumeError(
            f"PixelSpacing must be positive, got {list(pixel_spacing)}: the series' header is corrupt"
        )
    return Frame(
        instance,
        index,
        _numbers(position, 3, "ImagePositionPatient"),  # type: ignore[arg-type]
        _numbers(orientation, 6, "ImageOrientationPatient"),
        pixel_spacing,  # type: ignore[arg-type]
        size,
        _number(slope, 1.0, "RescaleSlope"),
        _number(intercept, 0.0, "RescaleIntercept"),
    )


def _numbers(value: Any, count: int, keyword: str) -> tuple[float, ...]:
    try:
        numbers = tuple(float(v) for v in (value if value is not None else ()))
    except (TypeError, ValueError):
        numbers = ()
    if len(numbers) != count or not all(math.isfinite(v) for v in numbers):
        what = "has no" if value is None else "has a malformed"
        raise InvalidVolumeError(
            f"an image {what} {keyword}: the series lacks the geometry a 3D volume needs (screenshots and secondary "
            "captures have none); export the original series"
        )
    return numbers


def _number(value: Any, default: float, keyword: str) -> float:
    if value is None or value == "":
        return default
    number = _numbers([value], 1, keyword)[0]
    if abs(number) > _MAX_RESCALE:
        raise InvalidVolumeError(f"{keyword} {number:g} would overflow float32: the series' header is corrupt")
    if keyword == "RescaleSlope" and number == 0:
        raise InvalidVolumeError("RescaleSlope is 0, which would erase the image: the series' header is corrupt")
    return number


def _positive(value: int | None, keyword: str) -> int:
    if value is None or value <= 0:
        raise InvalidVolumeError(f"an image has no valid {keyword}: the series' header is corrupt")
    return value
