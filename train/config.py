"""Typed training configuration parsed from commented YAML; unknown keys are errors."""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

import yaml

from unet3d.options import Norm

from .config_checks import BRAIN_TARGETS, checked
from .errors import ConfigError


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
    # A stripped sample's labels: "cut" (the labels inside the mask) or, for a brain stage only, "mask" (the brain is
    # all the mask kept, CSF and dura included: a brain stage then trusts the stripping it is given).
    strip_labels: str = "cut"
    fov_probability: float = 0.7
    texture_std: list[float] = field(default_factory=lambda: [0.0, 0.08])
    # What the network learns: "tissue" (the template's grey/white labels), "brain" (the brain mask: a
    # brain-extraction model with classes background + brain, validated on the full heads' brain masks) or
    # "brain_csf" (the same, the brain with the CSF around it, as BET's and ROBEX's masks draw it).
    target: str = "tissue"

    @property
    def brain_mask(self) -> bool:
        """Whether the run trains a brain-extraction model (synthesised samples labelled with a brain mask)."""
        return self.enabled and self.target in BRAIN_TARGETS


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
