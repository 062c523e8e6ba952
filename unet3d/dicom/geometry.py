"""Geometry of a DICOM series as the standard defines it: frames sorted along the slice normal, a RAS affine.

Never from file names or InstanceNumber: each frame's ImagePositionPatient (IPP) is projected on the normal of its
ImageOrientationPatient (IOP, row and column direction cosines), the frames are sorted by that distance, and the
affine is built from IOP, PixelSpacing and the measured step between the first and last frame, in DICOM's LPS
patient coordinates, then flipped to NIfTI's RAS. Voxel order `(I, J, K)` = (column, row, slice): the axes of
the DICOM pixel matrix, so a mask row is a DICOM row.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import nibabel as nib
import numpy as np
from pydicom.dataset import Dataset

from ..errors import InvalidVolumeError
from ..validation import MIN_AXIS_VOXELS
from .attributes import Attributes

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
ORIENTATION_TOLERANCE = 1e-3  # direction cosines are written with ~6 decimals
SPACING_TOLERANCE = 0.01  # of the slice step: positions are rounded to 16-character decimal strings
TILT_TOLERANCE = 1e-3  # in-plane drift per mm along the normal (0.06°)
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


@dataclass(frozen=True)
class Stack:
    """Frames that form one regular 3D grid, sorted along the slice normal, and that grid's RAS affine."""

    frames: tuple[Frame, ...]
    affine: np.ndarray

    @property
    def shape(self) -> tuple[int, int, int]:
        """`(I, J, K)` = (Columns, Rows, frames)."""
        rows, columns = self.frames[0].size
        return columns, rows, len(self.frames)


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
        return [_frame(attributes.position, attributes.orientation, attributes.spacing, attributes.rescale_slope,
                       attributes.rescale_intercept, instance, 0, size)]  # fmt: skip
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
        frames.append(_frame(groups.get("ImagePositionPatient"), groups.get("ImageOrientationPatient"),
                             groups.get("PixelSpacing"), slope, intercept, instance, index, size))  # fmt: skip
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


def _frame(position: Any, orientation: Any, spacing: Any, slope: Any, intercept: Any, instance: int, index: int,
           size: tuple[int, int]) -> Frame:  # fmt: skip
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


def stack_frames(frames: Sequence[Frame]) -> Stack:
    """Sort frames along their normal and check they form one regular grid; build its RAS affine.

    Raises:
        InvalidVolumeError: too few slices, mixed sizes or orientations, frames at one position, uneven spacing
            or a gap, or slices sheared off the normal (gantry tilt).
    """
    if len(frames) < MIN_AXIS_VOXELS:
        raise InvalidVolumeError(
            f"the series holds {len(frames)} image{'s' if len(frames) != 1 else ''}: a volume needs at least "
            f"{MIN_AXIS_VOXELS} slices, so export the whole series (not a single slice or a localizer)"
        )
    _check_uniform(frames)
    row, column = _directions(frames[0].orientation)
    normal = np.cross(row, column)
    positions = np.array([frame.position for frame in frames])
    distances = positions @ normal
    order = np.argsort(distances, kind="stable")
    positions, distances = positions[order], distances[order]
    step = _check_spacing(distances)
    _check_line(positions, distances, normal, step)
    lps = np.eye(4)
    rows_mm, columns_mm = frames[0].spacing
    lps[:3, 0], lps[:3, 1] = row * columns_mm, column * rows_mm
    lps[:3, 2] = (positions[-1] - positions[0]) / (len(frames) - 1)
    lps[:3, 3] = positions[0]
    return Stack(tuple(frames[int(i)] for i in order), LPS_TO_RAS @ lps)


def _check_uniform(frames: Sequence[Frame]) -> None:
    sizes = sorted({frame.size for frame in frames})
    if len(sizes) > 1:
        shown = " and ".join(f"{rows}×{columns}" for rows, columns in sizes[:3])
        raise InvalidVolumeError(f"the series mixes image sizes ({shown}): export one stack of equal-sized slices")
    first = np.array(frames[0].orientation)
    if any(np.abs(np.array(f.orientation) - first).max() > ORIENTATION_TOLERANCE for f in frames):
        raise InvalidVolumeError(
            "the series mixes slice orientations (a 3-plane localizer, or several stacks in one series): "
            "export one stack, or pick another series"
        )
    spacing = np.array(frames[0].spacing)
    if any(np.abs(np.array(f.spacing) - spacing).max() > ORIENTATION_TOLERANCE * spacing.max() for f in frames):
        raise InvalidVolumeError("the series mixes pixel spacings: export one stack of slices with equal spacing")


def _directions(orientation: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
    row, column = np.array(orientation[:3]), np.array(orientation[3:])
    lengths = np.linalg.norm(row), np.linalg.norm(column)
    if abs(lengths[0] - 1) > ORIENTATION_TOLERANCE or abs(lengths[1] - 1) > ORIENTATION_TOLERANCE or abs(
            row @ column) > ORIENTATION_TOLERANCE:  # fmt: skip
        raise InvalidVolumeError(
            "ImageOrientationPatient is not two perpendicular unit vectors: the series' geometry is corrupt"
        )
    return row / lengths[0], column / lengths[1]


def _check_spacing(distances: np.ndarray) -> float:
    """The mean slice step along the normal (mm); refuses repeated positions, gaps and uneven spacing."""
    steps = np.diff(distances)
    mean = float((distances[-1] - distances[0]) / (len(distances) - 1))
    repeated = int(np.count_nonzero(steps <= SPACING_TOLERANCE * max(mean, 1e-6)))
    if mean <= 0 or repeated:
        raise InvalidVolumeError(
            f"{repeated + 1} images share one slice position (several echoes, time points or stacks in one "
            "series?): unet3d reads one 3D volume, so export one echo/phase as its own series"
        )
    if np.abs(steps - mean).max() > SPACING_TOLERANCE * mean:
        gap = int(np.argmax(steps))
        raise InvalidVolumeError(
            f"the slices are unevenly spaced (steps from {steps.min():.3g} to {steps.max():.3g} mm; the largest "
            f"after slice {gap + 1} of {len(distances)}): a slice is missing or the series mixes stacks; "
            "export the complete series"
        )
    return mean


def _check_line(positions: np.ndarray, distances: np.ndarray, normal: np.ndarray, step: float) -> None:
    """Slices must advance along the normal: a steady drift in the slice plane is a gantry tilt."""
    drift = positions - positions[0] - np.outer(distances - distances[0], normal)
    shear = float(np.linalg.norm(drift[-1])) / float(distances[-1] - distances[0])
    if shear > TILT_TOLERANCE:
        degrees = math.degrees(math.atan(shear))
        raise InvalidVolumeError(
            f"the series was acquired with a gantry tilt of {degrees:.1f}°: its slices are sheared, not stacked "
            "along their normal; convert it with dcm2niix (which corrects the tilt) and send the NIfTI"
        )
    expected = np.outer(np.arange(len(positions)), drift[-1] / max(len(positions) - 1, 1))
    if np.linalg.norm(drift - expected, axis=1).max() > SPACING_TOLERANCE * step + 1e-3:
        raise InvalidVolumeError(
            "the slices are not stacked along one line (several stacks in one series?): export one stack"
        )


def grid_header(shape: tuple[int, int, int], affine: np.ndarray, dtype: np.dtype | type) -> nib.Nifti1Header:
    """A NIfTI-1 header for a grid (qform and sform code 1, mm), as if the series had been a NIfTI file."""
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(dtype)
    header.set_qform(affine, code=1)
    header.set_sform(affine, code=1)
    header.set_xyzt_units("mm")
    header["descrip"] = b"unet3d: read from DICOM"
    return header
