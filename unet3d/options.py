"""Options: each literal defined once, and the one rule per numeric option, with the message a user sees.

Every caller (the Segmenter, the model card, the service settings, the training config) checks an option through
these functions; a caller that reports its own error type (the card's CardError, pydantic's ValidationError) wraps
the ParameterError raised here, keeping its message. `name` is how the caller's user spells the option
("threshold", "inference.overlap", "config.data.patch_size").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, TypeGuard, TypeVar, get_args

import numpy as np

from .errors import ParameterError
from .shapes import Shape3, shape3

__all__ = [
    "BLENDINGS",
    "DEFAULT_THRESHOLD",
    "MODES",
    "PRECISIONS",
    "Blending",
    "Mode",
    "Norm",
    "Precision",
    "check_clip_percentiles",
    "check_pad_multiple",
    "check_patch_size",
    "check_threshold",
    "resolve_threshold",
]

Mode = Literal["auto", "whole", "sliding"]
ResolvedMode = Literal["whole", "sliding"]
Precision = Literal["auto", "fp32", "bf16", "fp16"]
ResolvedPrecision = Literal["fp32", "bf16", "fp16"]
Blending = Literal["gaussian", "constant"]
Norm = Literal["batch", "instance", "none"]
Normalization = Literal["minmax"]

MODES: tuple[Mode, ...] = get_args(Mode)
PRECISIONS: tuple[Precision, ...] = get_args(Precision)
BLENDINGS: tuple[Blending, ...] = get_args(Blending)
NORMS: tuple[Norm, ...] = get_args(Norm)
NORMALIZATIONS: tuple[Normalization, ...] = get_args(Normalization)

_Choice = TypeVar("_Choice", bound=str)

# Binary models label a voxel foreground when its probability reaches this, unless the caller gives a threshold.
DEFAULT_THRESHOLD = 0.5


def is_number(value: object) -> TypeGuard[int | float | np.integer | np.floating]:
    """A real number (int, float or a numpy scalar), not a bool."""
    return isinstance(value, int | float | np.floating | np.integer) and not isinstance(value, bool)


def check_choice(value: object, choices: Sequence[_Choice], name: str) -> _Choice:
    """`value` if it is one of `choices` (e.g. MODES), else ParameterError listing them."""
    for choice in choices:
        if isinstance(value, str) and value == choice:
            return choice
    raise ParameterError(f"{name} must be one of {', '.join(choices)}, got {value!r}")


def check_threshold(value: object, name: str = "threshold") -> float | None:
    """A foreground probability cut-off in (0, 1) as a float; None (no threshold given) stays None."""
    if value is None:
        return None
    if not is_number(value):
        raise ParameterError(f"{name} must be a number in (0, 1), got {value!r}")
    if not 0.0 < float(value) < 1.0:
        raise ParameterError(f"{name} must be in (0, 1), got {value}")
    return float(value)


def resolve_threshold(value: object, num_classes: int, name: str = "threshold", *, remedy: str = "") -> float | None:
    """The threshold a model with `num_classes` outputs applies: `value` (checked) or DEFAULT_THRESHOLD for a binary
    model (one or two outputs); None for a multi-class model, which labels each voxel with its most probable class.
    `remedy` is how the caller's user drops the option (default: "leave <name> out").

    Raises:
        ParameterError: the value is out of range, or given to a multi-class model.
    """
    threshold = check_threshold(value, name)
    if num_classes > 2:
        if threshold is not None:
            raise ParameterError(
                f"{name} applies to binary models only; this model has {num_classes} classes and labels each voxel "
                f"with its most probable class: {remedy or f'leave {name} out'}"
            )
        return None
    return DEFAULT_THRESHOLD if threshold is None else threshold


def check_overlap(value: object, name: str = "overlap") -> float | None:
    """A sliding-window overlap fraction in [0, 1) as a float; None (the default) stays None."""
    if value is None:
        return None
    if not is_number(value) or not 0.0 <= float(value) < 1.0:
        raise ParameterError(f"{name} must be a number in [0, 1), got {value!r}")
    return float(value)


def check_clip_percentiles(
    value: object, name: str = "clip_percentiles", *, optional: bool = True
) -> tuple[float, float] | None:
    """Intensity percentiles `(low, high)` with 0 <= low < high <= 100; with `optional`, None (no clipping) stays
    None."""
    if value is None and optional:
        return None
    items = list(value) if isinstance(value, list | tuple) else []
    if len(items) != 2 or not all(is_number(v) for v in items):
        alternative = " or null (no clipping)" if optional else ""
        raise ParameterError(f"{name} must be two numbers like [1, 99]{alternative}, got {value!r}")
    low, high = float(items[0]), float(items[1])
    if not 0.0 <= low < high <= 100.0:
        raise ParameterError(f"{name} must satisfy 0 <= low < high <= 100, got {value!r}")
    return low, high


def check_pad_multiple(value: object, network_multiple: int | None = None, name: str = "pad_multiple") -> int:
    """A positive whole number of voxels to pad each axis to; given the network's own multiple (2**depth), a
    multiple of it."""
    if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < 1:
        raise ParameterError(f"{name} must be a positive integer, got {value!r}")
    if network_multiple is not None and value % network_multiple:
        raise ParameterError(f"{name} ({value}) must be a multiple of 2**depth = {network_multiple}")
    return int(value)


def check_patch_size(
    value: object, multiple: int, *, name: str = "patch_size", multiple_name: str = "", cube: bool = True
) -> Shape3:
    """A sliding-window size: three sizes (or, with `cube`, one for all three axes), each a positive multiple of
    `multiple` (the pad multiple; `multiple_name` says where it comes from, e.g. "2**model.depth")."""
    sizes: Any = (value,) * 3 if cube and is_number(value) else value
    if not (
        isinstance(sizes, tuple | list)
        and len(sizes) == 3
        and all(is_number(n) and float(n).is_integer() and n >= multiple and n % multiple == 0 for n in sizes)
    ):
        shape = "one size or three" if cube else "three sizes"
        of = f"{multiple_name} = {multiple}" if multiple_name else str(multiple)
        raise ParameterError(f"{name} must be {shape}, each a multiple of {of}, got {value!r}")
    return shape3(int(n) for n in sizes)


def check_window(
    mode: object, patch_size: object, overlap: object, multiple: int
) -> tuple[Shape3 | None, float | None]:
    """A call's window options, checked: `(patch_size as three ints, overlap)`; None stays None (the default).

    mode is one of MODES, overlap a number in [0, 1), patch_size one size or three, each a multiple of `multiple`
    (the padding multiple). Checked before a volume is loaded, and again by `plan_inference` for direct callers.

    Raises:
        ParameterError: an option is out of range, with what is allowed.
    """
    check_choice(mode, MODES, "mode")
    checked_overlap = check_overlap(overlap)
    if patch_size is None:
        return None, checked_overlap
    return check_patch_size(patch_size, multiple), checked_overlap
