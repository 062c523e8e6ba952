"""unet3d: 3D medical image segmentation with masks on the exact voxel grid of the input."""

from .card import ClassInfo, ModelCard, load_card
from .errors import (
    AmbiguousSeriesError,
    CardError,
    InferenceError,
    InvalidVolumeError,
    LabelMaskError,
    ModelLoadError,
    ParameterError,
    Unet3dError,
    UnreadableVolumeError,
    UnsupportedFormatError,
    VolumeTooLargeError,
)
from .hub import ModelSource, push_model, resolve_source
from .io import Volume, inspect_volume, load_mask, load_volume, save_mask, volume_from_array
from .model import UNet3D
from .prediction import Prediction
from .segmenter import Segmenter
from .stats import mask_statistics

__version__ = "0.1.0"

__all__ = [
    "AmbiguousSeriesError",
    "CardError",
    "ClassInfo",
    "InferenceError",
    "InvalidVolumeError",
    "LabelMaskError",
    "ModelCard",
    "ModelLoadError",
    "ModelSource",
    "ParameterError",
    "Prediction",
    "Segmenter",
    "UNet3D",
    "Unet3dError",
    "UnreadableVolumeError",
    "UnsupportedFormatError",
    "Volume",
    "VolumeTooLargeError",
    "__version__",
    "inspect_volume",
    "load_card",
    "load_mask",
    "load_volume",
    "mask_statistics",
    "push_model",
    "resolve_source",
    "save_mask",
    "volume_from_array",
]
