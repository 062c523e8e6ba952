"""A chained model: a brain-extraction model's directory placed in a tissue model's as its first stage.

`Segmenter` then restricts each input to the brain the first stage finds, runs the tissue model on it and keeps its
labels inside that brain (unet3d/segmenter.py); the folder and the card's `inference.brain_mask: true` say so
(unet3d/hub.py). The tissue model's metrics and QC limits were measured without the first stage, so the chained
card drops them: `python -m train evaluate` and `python -m train calibrate-qc` measure them again.

The first stage's threshold decides how much cortex at a brain's edge survives it, and it is the recipe's least
stable part (a second seed wanted 0.3 where the first kept 0.5: docs/training.md): given several, `choose_threshold`
keeps the one whose validation heads agree best with and without their skull.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from unet3d.errors import ParameterError
from unet3d.hub import BRAIN_MASK_DIR, BRAIN_MASK_FILES, CARD_NAME, MODEL_FILES, check_model_dir
from unet3d.options import check_threshold

from .config import ConfigError
from .consistency import HeadCase, dataset_heads, evaluate_heads
from .export import read_card, write_card

__all__ = ["chain_models", "check_thresholds", "choose_threshold", "validation_heads"]


def chain_models(
    tissue: str | Path,
    brain_mask: str | Path,
    out: str | Path,
    *,
    version: str,
    description: str | None = None,
    threshold: float | None = None,
) -> Path:
    """Write `out`: the tissue model with `brain_mask` as its first stage, which keeps the voxels whose brain
    probability is at least `threshold` (None: 0.5, the card's default); returns `out`.

    Raises:
        ConfigError: `out` already exists, the brain-extraction model does not have 2 classes, or the threshold is
            not in (0, 1).
        ModelLoadError: either model directory is incomplete or inconsistent.
    """
    tissue, brain_mask, out = Path(tissue), Path(brain_mask), Path(out)
    check_thresholds([threshold])
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
    card["inference"] = {**card.get("inference", {}), "brain_mask": True}
    if threshold is not None:
        card["inference"]["brain_mask_threshold"] = threshold
    card["metrics"] = {}
    card.pop("qc", None)
    write_card(card, out)
    check_model_dir(out)
    return out


def check_thresholds(thresholds: list[float | None]) -> None:
    """Raises ConfigError for a threshold outside (0, 1) (None: the card's default)."""
    for threshold in thresholds:
        try:
            check_threshold(threshold, "the brain mask threshold")
        except ParameterError as e:
            raise ConfigError(str(e)) from e


def validation_heads(data: str | Path) -> list[HeadCase]:
    """The dataset's full-head validation cases, on which `choose_threshold` decides.

    Raises:
        ConfigError: the dataset lists none.
    """
    cases = dataset_heads(data, "validation")
    if not cases:
        raise ConfigError(
            f"{Path(data) / 'dataset.json'} lists no full-head validation cases ('fullhead' / 'validation'), on which "
            "the brain mask threshold is chosen: name a dataset made by python -m train prepare-mni152"
        )
    return cases


def choose_threshold(
    chained: str | Path, thresholds: list[float], cases: list[HeadCase], *, device: str = "auto"
) -> dict[str, Any]:
    """Measure the chained model's full-head consistency on `cases` at each threshold and keep, in its card, the one
    whose worst case agrees best in its worst class (Dice between the result with and without the skull; the
    first listed on a tie). Returns the chosen threshold and each threshold's figure."""
    chained = Path(chained)
    worst: dict[float, float] = {}
    for threshold in thresholds:
        _set_threshold(chained, threshold)
        summary = evaluate_heads(chained, cases, device=device)
        lowest = [figures["min"] for figures in summary["agreement_dice"].values()]
        worst[threshold] = min((value for value in lowest if value is not None), default=0.0)
    chosen = max(thresholds, key=lambda threshold: worst[threshold])
    _set_threshold(chained, chosen)
    return {"chosen": chosen, "validation_worst_agreement_dice": {str(t): worst[t] for t in thresholds}}


def _set_threshold(chained: Path, threshold: float) -> None:
    card = read_card(chained)
    card["inference"]["brain_mask_threshold"] = threshold
    write_card(card, chained)
