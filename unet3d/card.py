"""The model card (model.yaml): classes, input contract and inference defaults that travel with the weights."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import yaml

from .card_fields import card_rule, flag, only, positive_int, triple
from .card_qc import DEFAULT_QC_LIMITS, QCLimit, QCSpec, qc_spec
from .errors import CardError
from .options import (
    BLENDINGS,
    DEFAULT_THRESHOLD,
    NORMALIZATIONS,
    Blending,
    Normalization,
    check_choice,
    check_clip_percentiles,
    check_overlap,
    check_pad_multiple,
    check_threshold,
    is_number,
)
from .shapes import Shape3, Spacing3, shape3, spacing3

__all__ = [
    "DEFAULT_COLORS",
    "DEFAULT_QC_LIMITS",
    "BrainEdge",
    "ClassInfo",
    "InferenceSpec",
    "InputSpec",
    "ModelCard",
    "PostprocessSpec",
    "QCLimit",
    "QCSpec",
    "card_from_dict",
    "check_brain_edge",
    "load_card",
]

MAX_BRAIN_EDGE_MM = 10.0  # a brain edge is cortex: a few millimetres, not a second brain
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
    normalization: Normalization = "minmax"
    clip_percentiles: tuple[float, float] | None = (1.0, 99.0)
    pad_to_multiple: int = 16
    spacing_mm: Spacing3 | None = None


@dataclass(frozen=True)
class BrainEdge:
    """Where a chained model's brain goes on past its first stage's threshold: within `within_mm` of that brain,
    wherever the brain probability is at least `threshold` (hysteresis). A stage that works on a coarse grid is least
    sure at the brain's edge, which is cortex; a lower threshold everywhere would also let in what lies far from it."""

    threshold: float
    within_mm: float


@dataclass(frozen=True)
class InferenceSpec:
    """Inference defaults; every field can be overridden per call."""

    patch_size: Shape3 = (128, 128, 128)
    overlap: float = 0.25
    blending: Blending = "gaussian"
    crop_foreground: bool = True
    crop_margin: int = 16
    memory_budget_mb: int = 1024
    # Not per call: whether the model directory chains a brain-extraction stage (`brain_mask/`, hub.py) whose mask
    # the input is restricted to before this model runs, and the labels after; a voxel is brain where that stage's
    # brain probability is at least `brain_mask_threshold` (below 0.5 when a stripped brain must come back whole),
    # and, with `brain_mask_edge`, the less sure voxels close to that brain.
    brain_mask: bool = False
    brain_mask_threshold: float = DEFAULT_THRESHOLD
    brain_mask_edge: BrainEdge | None = None


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
    qc: QCSpec = field(default_factory=QCSpec)
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
        with card_rule():
            check_pad_multiple(self.input.pad_to_multiple, pad_multiple, "input.pad_to_multiple")

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
        with card_rule():
            if clip_percentiles != "card":
                spec = replace(spec, clip_percentiles=check_clip_percentiles(clip_percentiles))
            if pad_to_multiple is not None:
                spec = replace(spec, pad_to_multiple=check_pad_multiple(pad_to_multiple, None, "input.pad_to_multiple"))
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
        qc=QCSpec() if raw.get("qc") is None else qc_spec(raw["qc"]),
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
    only(value, "input", {"channels", "normalization", "clip_percentiles", "pad_to_multiple", "spacing_mm"})
    spacing = value.get("spacing_mm")
    with card_rule():
        return InputSpec(
            channels=positive_int("input.channels", value.get("channels", 1)),
            normalization=check_choice(value.get("normalization", "minmax"), NORMALIZATIONS, "input.normalization"),
            clip_percentiles=check_clip_percentiles(value.get("clip_percentiles", (1.0, 99.0))),
            pad_to_multiple=check_pad_multiple(value.get("pad_to_multiple", 16), None, "input.pad_to_multiple"),
            spacing_mm=None if spacing is None else spacing3(triple("input.spacing_mm", spacing)),
        )


def _inference_spec(value: dict[str, Any]) -> InferenceSpec:
    only(
        value,
        "inference",
        {
            "patch_size",
            "overlap",
            "blending",
            "crop_foreground",
            "crop_margin",
            "memory_budget_mb",
            "brain_mask",
            "brain_mask_threshold",
            "brain_mask_edge",
        },
    )
    defaults = InferenceSpec()
    patch_size = triple("inference.patch_size", value.get("patch_size", defaults.patch_size))
    brain_mask = flag("inference.brain_mask", value.get("brain_mask", defaults.brain_mask))
    for key in ("brain_mask_threshold", "brain_mask_edge"):
        if key in value and not brain_mask:
            raise CardError(f"inference.{key} applies to a chained model only: set brain_mask: true, or drop it")
    with card_rule():
        overlap = check_overlap(value.get("overlap", defaults.overlap), "inference.overlap")
        blending = check_choice(value.get("blending", defaults.blending), BLENDINGS, "inference.blending")
        threshold = check_threshold(value.get("brain_mask_threshold"), "inference.brain_mask_threshold")
    threshold = defaults.brain_mask_threshold if threshold is None else threshold
    return InferenceSpec(
        patch_size=shape3(int(v) for v in patch_size),
        overlap=defaults.overlap if overlap is None else overlap,
        blending=blending,
        crop_foreground=bool(value.get("crop_foreground", defaults.crop_foreground)),
        crop_margin=int(value.get("crop_margin", defaults.crop_margin)),
        memory_budget_mb=positive_int("inference.memory_budget_mb", value.get("memory_budget_mb", 1024)),
        brain_mask=brain_mask,
        brain_mask_threshold=threshold,
        brain_mask_edge=check_brain_edge(value.get("brain_mask_edge"), threshold),
    )


def check_brain_edge(value: object, threshold: float) -> BrainEdge | None:
    """The card's `inference.brain_mask_edge` (a mapping, or None) checked against the brain mask threshold.

    Raises:
        CardError: it is not a mapping of threshold and within_mm, or either is out of range.
    """
    name = "inference.brain_mask_edge"
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) != {"threshold", "within_mm"}:
        raise CardError(
            f"{name} must be a mapping of threshold (a brain probability below inference.brain_mask_threshold) and "
            f"within_mm (millimetres), e.g. {{threshold: 0.2, within_mm: 2.0}}; got {value!r}"
        )
    with card_rule():
        low = check_threshold(value["threshold"], f"{name}.threshold")
    within = value["within_mm"]
    if low is None or not low < threshold:
        raise CardError(f"{name}.threshold must be below inference.brain_mask_threshold ({threshold:g}), got {low}")
    if not is_number(within) or not 0 < float(within) <= MAX_BRAIN_EDGE_MM:
        limit = f"{MAX_BRAIN_EDGE_MM:g}"
        raise CardError(f"{name}.within_mm must be a number of millimetres in (0, {limit}], got {within!r}")
    return BrainEdge(threshold=low, within_mm=float(within))


def _postprocess_spec(value: dict[str, Any]) -> PostprocessSpec:
    only(value, "postprocess", {"largest_component", "fill_holes"})
    return PostprocessSpec(
        largest_component=tuple(int(c) for c in value.get("largest_component") or ()),
        fill_holes=tuple(int(c) for c in value.get("fill_holes") or ()),
    )
