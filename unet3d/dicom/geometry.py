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

import nibabel as nib
import numpy as np

from ..errors import InvalidVolumeError
from ..nifti import MIN_AXIS_VOXELS
from .frames import Frame

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
ORIENTATION_TOLERANCE = 1e-3  # direction cosines are written with ~6 decimals
SPACING_TOLERANCE = 0.01  # of the slice step: positions are rounded to 16-character decimal strings
TILT_TOLERANCE = 1e-3  # in-plane drift per mm along the normal (0.06°)


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
    if (
        abs(lengths[0] - 1) > ORIENTATION_TOLERANCE
        or abs(lengths[1] - 1) > ORIENTATION_TOLERANCE
        or abs(row @ column) > ORIENTATION_TOLERANCE
    ):
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
