"""Typed training configuration parsed from commented YAML; unknown keys are errors."""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

import yaml

from unet3d.errors import ParameterError
from unet3d.options import Norm, check_clip_percentiles, check_patch_size


class ConfigError(ValueError):
    """A training config key is unknown or a value has the wrong type/range."""


@dataclass
class ModelConfig:
    base_channels: int = 16
    depth: int = 4
    norm: Norm = "batch"
    dropout: float = 0.0
    # Start from these weights instead of random ones (fine-tuning): a model directory or Hub repo id, e.g.
    # models/unet3d-brain-tissue, whose network has this section's shape and card.classes' count.
    init: str | None = None

    def architecture(self) -> dict[str, Any]:
        """The UNet3D keyword arguments this section sets (all but `init`)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "init"}


@dataclass
class DataConfig:
    root: str = "data/mni152"
    patch_size: list[int] = field(default_factory=lambda: [128, 128, 128])
    batch_size: int = 2
    foreground_fraction: float = 0.5
    clip_percentiles: list[float] = field(default_factory=lambda: [1.0, 99.0])
    spacing_mm: list[float] | None = field(default_factory=lambda: [1.0, 1.0, 1.0])
    max_validation_cases: int = 0


@dataclass
class AugmentConfig:
    flip_axes: list[int] = field(default_factory=lambda: [0])
    flip_probability: float = 0.5
    rotation_degrees: float = 20.0
    scale_range: list[float] = field(default_factory=lambda: [0.85, 1.2])
    anisotropic_scale: float = 0.1
    elastic_probability: float = 0.2
    elastic_magnitude: float = 3.0
    gamma_range: list[float] = field(default_factory=lambda: [0.6, 1.6])
    intensity_curve_probability: float = 0.5
    contrast_range: list[float] = field(default_factory=lambda: [0.75, 1.25])
    noise_probability: float = 0.5
    noise_std: list[float] = field(default_factory=lambda: [0.0, 0.06])
    bias_probability: float = 0.6
    bias_amplitude: float = 0.5
    blur_probability: float = 0.3
    blur_sigma: list[float] = field(default_factory=lambda: [0.3, 1.2])
    lowres_probability: float = 0.35
    lowres_factor: list[float] = field(default_factory=lambda: [1.5, 3.5])


@dataclass
class SynthConfig:
    """Full-head training samples synthesised from generated heads (train/synth.py); off: the plain sampler."""

    enabled: bool = False
    # Relative weights of the three kinds of sample: the real brain in a generated head, the real skull-stripped
    # template, random contrast from the tissue map.
    head_weight: float = 0.45
    stripped_weight: float = 0.3
    synthetic_weight: float = 0.25
    synthetic_stripped_probability: float = 0.25
    # How often a generated head (the real brain inside) comes skull-stripped instead, and where the stripping mask
    # runs: [low, high] mm beyond the brain's edge (negative: inside it), drawn per sample and varying along the
    # surface, as real tools keep more or less CSF and dura. The random-contrast samples are stripped the same way.
    head_stripped_probability: float = 0.0
    strip_margin_mm: list[float] = field(default_factory=lambda: [0.0, 0.0])
    # A stripped sample's labels: "cut" (the labels inside the mask) or, for target brain only, "mask" (the brain is
    # all the mask kept, CSF and dura included: a brain stage then trusts the stripping it is given).
    strip_labels: str = "cut"
    fov_probability: float = 0.7
    texture_std: list[float] = field(default_factory=lambda: [0.0, 0.08])
    # What the network learns: "tissue" (the template's grey/white labels) or "brain" (the brain mask: a
    # brain-extraction model with classes background + brain, validated on the full heads' brain masks).
    target: str = "tissue"

    @property
    def brain_mask(self) -> bool:
        """Whether the run trains a brain-extraction model (synthesised samples labelled with the brain mask)."""
        return self.enabled and self.target == "brain"


@dataclass
class OptimConfig:
    lr: float = 2e-3
    weight_decay: float = 3e-5
    warmup_steps: int = 100
    schedule: Literal["cosine", "poly"] = "cosine"
    grad_clip: float = 12.0
    amp: Literal["auto", "bf16", "fp16", "off"] = "auto"
    dice_weight: float = 1.0
    ce_weight: float = 1.0


@dataclass
class LoopConfig:
    epochs: int = 40
    steps_per_epoch: int = 100
    validate_every: int = 1
    monitor: Literal["mIoU", "mDice", "loss"] = "mIoU"
    patience: int = 10
    min_delta: float = 0.0
    target: float | None = None
    time_limit_min: float | None = None
    seed: int = 0
    device: str = "auto"
    num_threads: int | None = None
    log_every: int = 10


@dataclass
class CardConfig:
    name: str = "unet3d-model"
    version: str = "0.1.0"
    classes: list[dict[str, Any]] = field(
        default_factory=lambda: [
            {"name": "background", "color": "#000000"},
            {"name": "foreground", "color": "#e6194b"},
        ]
    )
    description: str = ""
    license: str = "mit"
    intended_use: str = "research/demo, not for clinical use"
    inference: dict[str, Any] = field(default_factory=dict)
    postprocess: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    synth: SynthConfig = field(default_factory=SynthConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loop: LoopConfig = field(default_factory=LoopConfig)
    card: CardConfig = field(default_factory=CardConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def load_config(path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
    """Parse a YAML config, apply `section.key=value` overrides (values parsed as YAML; `card.inference.overlap=0.5`
    reaches into a mapping) and check every value's range."""
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except FileNotFoundError as e:
        raise ConfigError(f"config file not found: {path}") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {' '.join(str(e).split())}") from e
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold a mapping of sections (model, data, augment, synth, optim, loop, card)")
    for item in overrides or []:
        _apply_override(raw, item)
    return checked(from_dict(TrainConfig, raw, "config"))


def _apply_override(raw: dict[str, Any], item: str) -> None:
    key, sep, text = item.partition("=")
    if not sep or "." not in key:
        raise ConfigError(f"override must look like section.key=value, got {item!r}")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"the value of override {item!r} is not valid YAML: {' '.join(str(e).split())}") from e
    *parents, name = key.split(".")
    target = raw
    for depth, part in enumerate(parents):
        target = target.setdefault(part, {})
        if not isinstance(target, dict):
            raise ConfigError(f"override {item!r}: {'.'.join(parents[: depth + 1])} is not a mapping")
    target[name] = value


def from_dict(cls: type, raw: Any, where: str) -> Any:
    """Build dataclass `cls` from a mapping, rejecting unknown keys and wrong types."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a mapping, got {type(raw).__name__}")
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise ConfigError(f"unknown key(s) in {where}: {', '.join(unknown)} (known: {', '.join(sorted(names))})")
    values = {name: _coerce(hints[name], raw[name], f"{where}.{name}") for name in raw}
    return cls(**values)


def _coerce(hint: Any, value: Any, where: str) -> Any:
    origin = get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, where)  # type: ignore[arg-type]
    if origin in (typing.Union, types.UnionType):
        options = get_args(hint)
        if value is None and type(None) in options:
            return None
        return _coerce(next(o for o in options if o is not type(None)), value, where)
    if origin is Literal:
        if value is False and "off" in get_args(hint):
            return "off"  # YAML 1.1 reads a bare `off` as false
        if value not in get_args(hint):
            raise ConfigError(f"{where} must be one of {', '.join(map(str, get_args(hint)))}, got {value!r}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        (item,) = get_args(hint) or (Any,)
        return [_coerce(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict or hint is Any:
        return value
    if hint is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if hint in (int, str, bool) and type(value) is hint:
        return value
    raise ConfigError(f"{where} must be {getattr(hint, '__name__', hint)}, got {value!r}")


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
        _require(len(names) == 2, "card.classes", names, "must be [background, brain] for synth.target=brain")
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


SYNTH_TARGETS = ("tissue", "brain")
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
        synth.strip_labels == "cut" or (synth.strip_labels == "mask" and synth.target == "brain"),
        "synth.strip_labels",
        synth.strip_labels,
        'must be "cut", or "mask" with synth.target=brain',
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
