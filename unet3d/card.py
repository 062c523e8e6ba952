"""The model card (model.yaml): classes, input contract and inference defaults that travel with the weights."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import yaml

from .errors import CardError

Blending = Literal["gaussian", "constant"]
DEFAULT_COLORS = ["#000000", "#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#46f0f0", "#f032e6"]


@dataclass(frozen=True)
class ClassInfo:
    """One output class: its index in the mask, a name and an RGB display colour (`#rrggbb`)."""

    index: int
    name: str
    color: str


@dataclass(frozen=True)
class InputSpec:
    """How a volume must be prepared before the network sees it."""

    channels: int = 1
    normalization: Literal["minmax"] = "minmax"
    clip_percentiles: tuple[float, float] | None = (1.0, 99.0)
    pad_to_multiple: int = 16
    spacing_mm: tuple[float, float, float] | None = None


@dataclass(frozen=True)
class InferenceSpec:
    """Inference defaults; every field can be overridden per call."""

    patch_size: tuple[int, int, int] = (128, 128, 128)
    overlap: float = 0.25
    blending: Blending = "gaussian"
    crop_foreground: bool = True
    crop_margin: int = 16
    memory_budget_mb: int = 1024


@dataclass(frozen=True)
class PostprocessSpec:
    """Optional clean-up: classes to reduce to their largest component / to fill holes in."""

    largest_component: tuple[int, ...] = ()
    fill_holes: tuple[int, ...] = ()


@dataclass(frozen=True)
class ModelCard:
    """Typed view of model.yaml; `raw` keeps every field (training summary, metrics, licence) as written."""

    name: str
    version: str
    classes: tuple[ClassInfo, ...]
    input: InputSpec = InputSpec()
    inference: InferenceSpec = InferenceSpec()
    postprocess: PostprocessSpec = PostprocessSpec()
    raw: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def num_classes(self) -> int:
        """Output classes, background (index 0) included."""
        return len(self.classes)

    def class_names(self) -> list[str]:
        """Class names in index order."""
        return [c.name for c in self.classes]

    def check_network(self, num_classes: int, in_channels: int, pad_multiple: int) -> None:
        """Raise `CardError` unless the card describes a network with these outputs and inputs."""
        expected = num_classes if num_classes > 1 else 2
        if self.num_classes != expected:
            raise CardError(f"model.yaml lists {self.num_classes} classes but the network has {num_classes} outputs")
        if in_channels != 1 or self.input.channels != 1:
            raise CardError("only single-channel models are supported (in_channels = input.channels = 1)")
        if self.input.pad_to_multiple % pad_multiple:
            raise CardError(
                f"input.pad_to_multiple ({self.input.pad_to_multiple}) must be a multiple of 2**depth = {pad_multiple}"
            )

    def to_dict(self) -> dict[str, Any]:
        """The card as JSON-able data (what model.yaml holds)."""
        return copy.deepcopy(self.raw)

    def with_overrides(
        self,
        *,
        clip_percentiles: tuple[float, float] | Literal["card"] | None = "card",
        pad_to_multiple: int | None = None,
    ) -> ModelCard:
        """A copy with deployment overrides applied (e.g. UNET3D_CLIP_PERCENTILES)."""
        spec = self.input
        if clip_percentiles != "card":
            spec = replace(spec, clip_percentiles=_percentiles(clip_percentiles))
        if pad_to_multiple is not None:
            spec = replace(spec, pad_to_multiple=_positive_int("input.pad_to_multiple", pad_to_multiple))
        return replace(self, input=spec)


def load_card(path: str | Path) -> ModelCard:
    """Parse a model.yaml file.

    Raises:
        CardError: the file is missing, not YAML, or a field is invalid (the message names it).
    """
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise CardError(f"model card not found: {path.name} is missing from the model directory") from e
    except yaml.YAMLError as e:
        raise CardError(f"{path.name} is not valid YAML: {e}") from e
    return card_from_dict(raw)


def card_from_dict(raw: Any) -> ModelCard:
    """Validate a parsed model card mapping (see `load_card`)."""
    if not isinstance(raw, dict):
        raise CardError("model card must be a YAML mapping")
    for key in ("name", "version", "classes"):
        if key not in raw:
            raise CardError(f"model card lacks the required field '{key}'")
    return ModelCard(
        name=str(raw["name"]),
        version=str(raw["version"]),
        classes=_classes(raw["classes"]),
        input=_input_spec(raw.get("input") or {}),
        inference=_inference_spec(raw.get("inference") or {}),
        postprocess=_postprocess_spec(raw.get("postprocess") or {}),
        raw=copy.deepcopy(raw),
    )


def _classes(value: Any) -> tuple[ClassInfo, ...]:
    if not isinstance(value, list) or not value:
        raise CardError("classes must be a non-empty list of {index, name, color}")
    classes = []
    for position, item in enumerate(value):
        if not isinstance(item, dict) or "name" not in item:
            raise CardError(f"classes[{position}] must be a mapping with at least a name")
        index = item.get("index", position)
        if index != position:
            raise CardError(f"classes[{position}] has index {index}: list classes in index order from 0")
        color = str(item.get("color", DEFAULT_COLORS[position % len(DEFAULT_COLORS)]))
        if len(color) != 7 or not color.startswith("#"):
            raise CardError(f"classes[{position}].color must look like '#rrggbb', got {color!r}")
        classes.append(ClassInfo(index=position, name=str(item["name"]), color=color))
    return tuple(classes)


def _input_spec(value: dict[str, Any]) -> InputSpec:
    _only(value, "input", {"channels", "normalization", "clip_percentiles", "pad_to_multiple", "spacing_mm"})
    normalization = value.get("normalization", "minmax")
    if normalization != "minmax":
        raise CardError(f"input.normalization must be 'minmax', got {normalization!r}")
    spacing = value.get("spacing_mm")
    return InputSpec(
        channels=_positive_int("input.channels", value.get("channels", 1)),
        clip_percentiles=_percentiles(value.get("clip_percentiles", (1.0, 99.0))),
        pad_to_multiple=_positive_int("input.pad_to_multiple", value.get("pad_to_multiple", 16)),
        spacing_mm=None if spacing is None else _triple("input.spacing_mm", spacing, float),  # type: ignore[arg-type]
    )


def _inference_spec(value: dict[str, Any]) -> InferenceSpec:
    _only(
        value,
        "inference",
        {"patch_size", "overlap", "blending", "crop_foreground", "crop_margin", "memory_budget_mb"},
    )
    defaults = InferenceSpec()
    overlap = float(value.get("overlap", defaults.overlap))
    if not 0.0 <= overlap < 1.0:
        raise CardError(f"inference.overlap must be in [0, 1), got {overlap}")
    blending = value.get("blending", defaults.blending)
    if blending not in ("gaussian", "constant"):
        raise CardError(f"inference.blending must be 'gaussian' or 'constant', got {blending!r}")
    return InferenceSpec(
        patch_size=_triple("inference.patch_size", value.get("patch_size", defaults.patch_size), int),  # type: ignore[arg-type]
        overlap=overlap,
        blending=blending,
        crop_foreground=bool(value.get("crop_foreground", defaults.crop_foreground)),
        crop_margin=int(value.get("crop_margin", defaults.crop_margin)),
        memory_budget_mb=_positive_int("inference.memory_budget_mb", value.get("memory_budget_mb", 1024)),
    )


def _postprocess_spec(value: dict[str, Any]) -> PostprocessSpec:
    _only(value, "postprocess", {"largest_component", "fill_holes"})
    return PostprocessSpec(
        largest_component=tuple(int(c) for c in value.get("largest_component") or ()),
        fill_holes=tuple(int(c) for c in value.get("fill_holes") or ()),
    )


def _only(value: dict[str, Any], section: str, allowed: set[str]) -> None:
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise CardError(f"unknown field(s) in {section}: {', '.join(unknown)} (allowed: {', '.join(sorted(allowed))})")


def _percentiles(value: Any) -> tuple[float, float] | None:
    if value is None:
        return None
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError) as e:
        raise CardError(f"clip_percentiles must be two numbers like [1, 99] or null, got {value!r}") from e
    if not 0.0 <= low < high <= 100.0:
        raise CardError(f"clip_percentiles must satisfy 0 <= low < high <= 100, got {value!r}")
    return low, high


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise CardError(f"{name} must be a positive integer, got {value!r}")
    return value


def _triple(name: str, value: Any, kind: type) -> tuple[Any, Any, Any]:
    items = [value] * 3 if isinstance(value, int | float) else list(value)
    if len(items) != 3 or any(float(v) <= 0 for v in items):
        raise CardError(f"{name} must be three positive numbers, got {value!r}")
    return tuple(kind(v) for v in items)  # type: ignore[return-value]
