"""A chained model: a brain-extraction model's directory placed in a tissue model's as its first stage.

`Segmenter` then restricts each input to the brain the first stage finds, runs the tissue model on it and keeps its
labels inside that brain (unet3d/segmenter.py); the folder and the card's `inference.brain_mask: true` say so
(unet3d/hub.py). The tissue model's metrics and QC limits were measured without the first stage, so the chained
card drops them: `python -m train evaluate` and `python -m train calibrate-qc` measure them again.

The first stage's threshold decides how much cortex at a brain's edge survives it, and it is the recipe's least
stable part (a second seed wanted 0.3 where the first kept 0.5: docs/training.md); a lower threshold near the brain
only (the card's `inference.brain_mask_edge`) keeps the cortex without letting in what lies far from it. Given several
settings, `choose_brain_mask` keeps the one whose validation heads (and a real head with surfaces, if given) agree best
with and without their skull, among those that label no more outside the brain than the goal allows.
"""

from __future__ import annotations

import datetime as dt
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from unet3d import Segmenter
from unet3d.card import check_brain_edge
from unet3d.errors import CardError, ParameterError
from unet3d.hub import BRAIN_MASK_DIR, BRAIN_MASK_FILES, CARD_NAME, MODEL_FILES, check_model_dir
from unet3d.options import DEFAULT_THRESHOLD, check_threshold

from .config import ConfigError
from .consistency import OUTSIDE_LIMIT, HeadCase, dataset_heads, measure_heads
from .export import read_card, write_card
from .surface_head import measure_surface_head

__all__ = [
    "BrainMaskSetting",
    "SurfaceHead",
    "chain_models",
    "check_settings",
    "choose_brain_mask",
    "validation_heads",
]


@dataclass(frozen=True)
class BrainMaskSetting:
    """One candidate for the chained card: `inference.brain_mask_threshold` (None: the default, 0.5) and
    `inference.brain_mask_edge` as (threshold, within_mm), or None for none."""

    threshold: float | None = None
    edge: tuple[float, float] | None = None

    def card_values(self) -> dict[str, Any]:
        """The card's inference fields for this setting."""
        values: dict[str, Any] = {"brain_mask_threshold": self.threshold or DEFAULT_THRESHOLD}
        if self.edge is not None:
            values["brain_mask_edge"] = {"threshold": self.edge[0], "within_mm": self.edge[1]}
        return values


@dataclass(frozen=True)
class SurfaceHead:
    """A real head with FreeSurfer surfaces (train/surface_head.py) that joins the choice, and its foramen magnum."""

    subject: Path
    foramen_magnum_z: float


def chain_models(
    tissue: str | Path,
    brain_mask: str | Path,
    out: str | Path,
    *,
    version: str,
    description: str | None = None,
    setting: BrainMaskSetting | None = None,
) -> Path:
    """Write `out`: the tissue model with `brain_mask` as its first stage, which keeps the voxels whose brain
    probability is at least the setting's threshold (and its edge; default: 0.5, no edge); returns `out`.

    Raises:
        ConfigError: `out` already exists, the brain-extraction model does not have 2 classes, or the setting is one
            the card would refuse.
        ModelLoadError: either model directory is incomplete or inconsistent.
    """
    tissue, brain_mask, out = Path(tissue), Path(brain_mask), Path(out)
    setting = setting or BrainMaskSetting()
    check_settings([setting])
    check_model_dir(tissue)
    check_model_dir(brain_mask)
    mask_card = read_card(brain_mask)
    if len(mask_card.get("classes") or []) != 2:
        raise ConfigError(
            f"{brain_mask / CARD_NAME} lists {len(mask_card.get('classes') or [])} classes: a brain "
            "mask has 2 (background, brain); train it with synth.target=brain"
        )
    if out.exists():
        raise ConfigError(f"{out} already exists: name a new folder for the chained model")
    out.mkdir(parents=True)
    for name in MODEL_FILES:
        shutil.copy2(tissue / name, out / name)
    (out / BRAIN_MASK_DIR).mkdir()
    for name in BRAIN_MASK_FILES:
        shutil.copy2(brain_mask / Path(name).name, out / name)
    card = read_card(tissue)
    card["version"] = version
    if description:
        card["description"] = description
    card["inference"] = {**card.get("inference", {}), "brain_mask": True, **setting.card_values()}
    card["metrics"] = {}
    card.pop("qc", None)
    write_card(card, out)
    check_model_dir(out)
    return out


def check_settings(settings: list[BrainMaskSetting]) -> None:
    """Raises ConfigError for a setting the card would refuse (a threshold outside (0, 1), an edge threshold not
    below it, an edge distance out of range), before anything is written."""
    for setting in settings:
        try:
            threshold = check_threshold(setting.threshold, "the brain mask threshold")
            check_brain_edge(setting.card_values().get("brain_mask_edge"), threshold or DEFAULT_THRESHOLD)
        except (ParameterError, CardError) as e:
            raise ConfigError(str(e)) from e


def validation_heads(data: str | Path) -> list[HeadCase]:
    """The dataset's full-head validation cases, on which `choose_brain_mask` decides.

    Raises:
        ConfigError: the dataset lists none.
    """
    cases = dataset_heads(data, "validation")
    if not cases:
        raise ConfigError(
            f"{Path(data) / 'dataset.json'} lists no full-head validation cases ('fullhead' / 'validation'), on which "
            "the brain mask settings are chosen: name a dataset made by python -m train prepare-mni152"
        )
    return cases


def choose_brain_mask(
    chained: str | Path,
    settings: list[BrainMaskSetting],
    cases: list[HeadCase],
    *,
    real: list[HeadCase] | None = None,
    surface: SurfaceHead | None = None,
    device: str = "auto",
    command: str = "",
) -> dict[str, Any]:
    """Measure the chained model's full-head consistency on `cases` (and the `real` heads with brain masks, and
    `surface`) with each setting and keep, in its card, the one whose worst case agrees best in its worst class (Dice
    between the result with and without the skull; the first listed on a tie), among those whose cases keep GM+WM
    outside the brain (below the foramen magnum) within the goal (all settings when none does). Returns the chosen
    setting and each setting's figures, which the card keeps too (`brain_mask_choice`, with the date and
    `command`); a real head's figures are kept under its name."""
    chained = Path(chained)
    figures = []
    for setting in settings:
        _set_brain_mask(chained, setting)
        segmenter = Segmenter.from_pretrained(chained, device=device)  # loaded once, for every head of this setting
        summary = measure_heads(segmenter, cases)
        lowest = [values["min"] for values in summary["agreement_dice"].values() if values["min"] is not None]
        outside = [summary["outside_fraction"]["max"] or 0.0]
        row: dict[str, Any] = {**setting.card_values(), "validation_heads": _brief(summary)}
        if real:
            measured = measure_heads(segmenter, real)["cases"]
            lowest += [value for case in measured for value in case["agreement_dice"].values() if value is not None]
            outside += [case["outside_fraction"] or 0.0 for case in measured]
            row["real_heads"] = {case["case"]: {key: case[key] for key in REAL_FIGURES} for case in measured}
        if surface is not None:
            head = measure_surface_head(segmenter, surface.subject, surface.foramen_magnum_z)
            lowest += list(head["cerebrum_agreement_dice"].values())
            outside.append(head["below_foramen_magnum_fraction"] or 0.0)
            row["surface_head"] = {key: head[key] for key in SURFACE_FIGURES}
        row["worst_agreement_dice"] = min(lowest, default=0.0)
        row["within_outside_goal"] = max(outside) <= OUTSIDE_LIMIT
        figures.append(row)
    eligible = [i for i, row in enumerate(figures) if row["within_outside_goal"]] or list(range(len(settings)))
    best = max(eligible, key=lambda i: figures[i]["worst_agreement_dice"])
    choice = {"chosen": settings[best].card_values(), "settings": figures}
    _set_brain_mask(chained, settings[best], {**choice, "date": dt.date.today().isoformat(), "command": command})
    return choice


SURFACE_FIGURES = ("below_foramen_magnum_fraction", "cerebrum_agreement_dice", "freesurfer_dice")
REAL_FIGURES = ("outside_fraction", "outside_ml", "agreement_dice")


def _brief(summary: dict[str, Any]) -> dict[str, Any]:
    return {"outside_fraction_max": summary["outside_fraction"]["max"], "agreement_dice": summary["agreement_dice"]}


def _set_brain_mask(chained: Path, setting: BrainMaskSetting, choice: dict[str, Any] | None = None) -> None:
    card = read_card(chained)
    inference = {k: v for k, v in card["inference"].items() if k not in ("brain_mask_threshold", "brain_mask_edge")}
    card["inference"] = {**inference, **setting.card_values()}
    if choice is not None:
        card["brain_mask_choice"] = choice
    write_card(card, chained)
