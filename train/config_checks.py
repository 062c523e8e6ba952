"""The value rules of a training config (train/config.py): ranges and combinations its types cannot express, each
refused with a ConfigError that names the key."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from unet3d.errors import ParameterError
from unet3d.options import check_clip_percentiles, check_patch_size

from .errors import ConfigError

if TYPE_CHECKING:
    from .config import AugmentConfig, DataConfig, LoopConfig, ModelConfig, OptimConfig, SynthConfig, TrainConfig


def checked(config: TrainConfig) -> TrainConfig:
    """Check value ranges the types cannot express, so a bad value stops the run before it starts, not in its
    first step (or after its last). Class names given as plain strings become `{name: ...}` mappings.

    Raises:
        ConfigError: the first value out of range, named by its key.
    """
    _check_model_and_data(config.model, config.data)
    _check_augment(config.augment)
    _check_optim(config.optim)
    _check_loop(config.loop)
    _check_synth(config.synth)
    config.card.classes = [_class_entry(i, c) for i, c in enumerate(config.card.classes)]
    _require(len(config.card.classes) >= 2, "card.classes", config.card.classes, "must list background + classes")
    spacing = config.data.spacing_mm
    if config.synth.enabled and spacing is not None:
        _require(
            len(set(spacing)) == 1 and float(spacing[0]).is_integer(),
            "data.spacing_mm",
            spacing,
            "must be 1, 2, 3 ... mm, the same on every axis, with synth.enabled (the heads' 1 mm grid, coarsened)",
        )
    if config.synth.brain_mask:
        names = [c["name"] for c in config.card.classes]
        _require(
            len(names) == 2,
            "card.classes",
            names,
            f"must be [background, brain] for synth.target={config.synth.target}",
        )
    return config


def _check_model_and_data(model: ModelConfig, data: DataConfig) -> None:
    _require(model.base_channels >= 1, "model.base_channels", model.base_channels, "must be at least 1")
    _require(model.depth >= 1, "model.depth", model.depth, "must be at least 1")
    _require(0.0 <= model.dropout < 1.0, "model.dropout", model.dropout, "must be in [0, 1)")
    _rule(
        check_patch_size,
        data.patch_size,
        2**model.depth,
        name="config.data.patch_size",
        multiple_name="2**model.depth",
        cube=False,
    )
    _require(data.batch_size >= 1, "data.batch_size", data.batch_size, "must be at least 1")
    _fraction("data.foreground_fraction", data.foreground_fraction)
    _rule(check_clip_percentiles, data.clip_percentiles, "config.data.clip_percentiles", optional=False)
    spacing = data.spacing_mm
    _require(
        spacing is None or (len(spacing) == 3 and min(spacing) > 0),
        "data.spacing_mm",
        spacing,
        "must be three positive millimetre sizes, or null (no resampling)",
    )
    _require(data.max_validation_cases >= 0, "data.max_validation_cases", data.max_validation_cases, "must be >= 0")


def _check_augment(augment: AugmentConfig) -> None:
    _require(
        set(augment.flip_axes) <= {0, 1, 2}, "augment.flip_axes", augment.flip_axes, "must list axes among 0, 1, 2"
    )
    for name, value in vars(augment).items():
        if name.endswith("_probability"):
            _fraction(f"augment.{name}", value)
        elif isinstance(value, float):
            _require(value >= 0, f"augment.{name}", value, "must be >= 0")
    for name, floor in _RANGES.items():
        value = getattr(augment, name)
        _require(
            len(value) == 2 and floor <= value[0] <= value[1],
            f"augment.{name}",
            value,
            f"must be [low, high] with {floor} <= low <= high",
        )


def _check_optim(optim: OptimConfig) -> None:
    for name in ("lr", "weight_decay", "dice_weight", "ce_weight"):
        _require(getattr(optim, name) >= 0, f"optim.{name}", getattr(optim, name), "must be >= 0")
    if optim.dice_weight + optim.ce_weight == 0:
        raise ConfigError("config.optim.dice_weight and config.optim.ce_weight are both 0: the loss would be zero")
    _require(optim.warmup_steps >= 0, "optim.warmup_steps", optim.warmup_steps, "must be >= 0")
    _require(optim.grad_clip > 0, "optim.grad_clip", optim.grad_clip, "must be > 0")


def _check_loop(loop: LoopConfig) -> None:
    for name in ("epochs", "steps_per_epoch", "validate_every", "patience", "log_every"):
        _require(getattr(loop, name) >= 1, f"loop.{name}", getattr(loop, name), "must be at least 1")
    _require(loop.min_delta >= 0, "loop.min_delta", loop.min_delta, "must be >= 0")
    _require(
        loop.monitor == "loss" or loop.validate_every <= loop.epochs,
        "loop.validate_every",
        loop.validate_every,
        f"exceeds loop.epochs ({loop.epochs}): no validation would measure loop.monitor={loop.monitor}",
    )
    limit = loop.time_limit_min
    _require(limit is None or limit > 0, "loop.time_limit_min", limit, "must be > 0, or null (no limit)")
    _require(loop.num_threads is None or loop.num_threads >= 1, "loop.num_threads", loop.num_threads, "must be >= 1")
    if loop.target is not None:
        _require(loop.monitor != "loss", "loop.target", loop.target, "applies to monitor mIoU or mDice, not loss")
        _fraction("loop.target", loop.target)


# The synth.target values that train a brain-extraction model (classes background + brain), each with the full
# heads' masks it is validated against (dataset.json roles): with the skull, and stripped (which shows the brain alone).
BRAIN_REFERENCES = {"brain": ("brain", "brain"), "brain_csf": ("brain_csf", "brain")}
BRAIN_TARGETS = tuple(BRAIN_REFERENCES)
SYNTH_TARGETS = ("tissue", *BRAIN_TARGETS)
# Augmentation ranges [low, high] and the smallest value each may take.
_RANGES = {
    "scale_range": 0.01,
    "gamma_range": 0.01,
    "contrast_range": 0.0,
    "noise_std": 0.0,
    "blur_sigma": 0.0,
    "lowres_factor": 1.0,
}


def _check_synth(synth: SynthConfig) -> None:
    weights = (synth.head_weight, synth.stripped_weight, synth.synthetic_weight)
    for name, value in zip(("head_weight", "stripped_weight", "synthetic_weight"), weights, strict=True):
        _require(value >= 0, f"synth.{name}", value, "must be >= 0")
    _require(sum(weights) > 0, "synth.head_weight", weights, "and the other two weights must not all be 0")
    _fraction("synth.synthetic_stripped_probability", synth.synthetic_stripped_probability)
    _fraction("synth.head_stripped_probability", synth.head_stripped_probability)
    margin = synth.strip_margin_mm
    _require(
        len(margin) == 2 and -10 <= margin[0] <= margin[1] <= 20,
        "synth.strip_margin_mm",
        margin,
        "must be [low, high] mm with -10 <= low <= high <= 20",
    )
    _fraction("synth.fov_probability", synth.fov_probability)
    _require(
        synth.strip_labels == "cut" or (synth.strip_labels == "mask" and synth.target in BRAIN_TARGETS),
        "synth.strip_labels",
        synth.strip_labels,
        'must be "cut", or "mask" with synth.target=brain or brain_csf',
    )
    _require(synth.target in SYNTH_TARGETS, "synth.target", synth.target, f"must be one of {', '.join(SYNTH_TARGETS)}")
    texture = synth.texture_std
    _require(
        len(texture) == 2 and 0 <= texture[0] <= texture[1] < 1,
        "synth.texture_std",
        texture,
        "must be [low, high] with 0 <= low <= high < 1",
    )


def _class_entry(position: int, entry: Any) -> dict[str, Any]:
    if isinstance(entry, str):
        return {"name": entry}
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
        raise ConfigError(
            f"config.card.classes[{position}] must be a name or a mapping like "
            f'{{name: grey_matter, color: "#e69f00"}}, got {entry!r}'
        )
    return entry


def _fraction(key: str, value: float) -> None:
    _require(0.0 <= value <= 1.0, key, value, "must be in [0, 1]")


def _rule(check: Callable[..., object], *args: Any, **kwargs: Any) -> None:
    """A rule the library owns (unet3d.options), applied to a config value: its message, as a ConfigError."""
    try:
        check(*args, **kwargs)
    except ParameterError as e:
        raise ConfigError(str(e)) from e


def _require(condition: bool, key: str, value: Any, rule: str) -> None:
    if not condition:
        raise ConfigError(f"config.{key} {rule}, got {value!r}")
