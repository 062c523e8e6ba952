"""Exceptions raised by unet3d; each also inherits the builtin a caller would expect."""

from __future__ import annotations

__all__ = [
    "AmbiguousSeriesError",
    "CardError",
    "InferenceError",
    "InvalidVolumeError",
    "LabelMaskError",
    "ModelLoadError",
    "ParameterError",
    "Unet3dError",
    "UnreadableVolumeError",
    "UnsupportedFormatError",
    "VolumeTooLargeError",
]


class Unet3dError(Exception):
    """Base class: every error unet3d raises on purpose is one of these."""


class InvalidVolumeError(Unet3dError, ValueError):
    """The input is NIfTI, but its content cannot be segmented (dimensions, dtype, values)."""


class LabelMaskError(InvalidVolumeError):
    """A file given as a label mask is not one (an image, probabilities), or its labels do not fit its classes."""


class UnreadableVolumeError(Unet3dError, ValueError):
    """The input file is corrupt, truncated or not parseable as NIfTI."""


class UnsupportedFormatError(Unet3dError, ValueError):
    """The input is not a NIfTI file (.nii / .nii.gz)."""


class VolumeTooLargeError(Unet3dError, ValueError):
    """The input exceeds a size cap (bytes, decompressed bytes or voxels)."""


class ModelLoadError(Unet3dError, RuntimeError):
    """A model could not be resolved, downloaded or loaded."""


class CardError(Unet3dError, ValueError):
    """A model card (model.yaml) is missing a field or holds an invalid value."""


class InferenceError(Unet3dError, RuntimeError):
    """Inference failed for a reason the caller can act on (e.g. out of memory on every device)."""


class ParameterError(Unet3dError, ValueError):
    """A call option is out of range (threshold, overlap, mode, patch size, ...)."""


class AmbiguousSeriesError(InvalidVolumeError):
    """A DICOM upload holds more than one volumetric series; the message lists them and how to pick one."""
