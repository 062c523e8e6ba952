"""`python -m train calibrate-qc`: choose a model's QC limits and prior on a dataset's validation scans and synthetic
negatives made from them (train/qc_cases.py; never the test split), and write them into its model.yaml as `qc:`.

Per limit, from the values `unet3d.qc` measures on every case:
- `ok` is the worst value among the scans the check must pass (the skull-stripped validation scans, and the full
  heads for the checks that do not concern skull-stripping; for every check but the skull-stripping one when the
  model takes full heads, `skull_stripped_input: false`);
- `warn` lies halfway between `ok` and the nearest negative built for that check beyond `ok` (geometrically for the
  field-of-view share); negatives on the passing side of `ok` slip through, and the figures say how many (where none
  lies beyond, `warn` is just beyond `ok`: no validation scan is warned about). Which side of `ok` is bad is the
  check's own (that of its default limits, `unet3d.card.DEFAULT_QC_LIMITS`), never where the negatives happen to lie.
The prior is the mean grey/white map of the skull-stripped validation scans. The brain-volume limits are anatomy,
not this model: they keep their values (the card's or the defaults), and the figures show the validation brains and the
wrong-voxel-size negatives against them. `skull_stripped_input` is measured: true when the model labels more than
OUTSIDE_LIMIT of its grey/white matter outside the brain mask on a full-head validation scan.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from unet3d import Segmenter, load_volume
from unet3d.card import DEFAULT_QC_LIMITS, QCLimit, QCSpec
from unet3d.errors import InvalidVolumeError
from unet3d.qc import Measures, tissue_classes
from unet3d.qc.checks import values_of

from .data import read_dataset
from .export import read_card, write_card
from .qc_cases import QCCase, calibration_cases

logger = logging.getLogger(__name__)

# limit → (kinds that must pass besides the skull-stripped scans, kinds it must catch)
EVIDENCE: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "air_fraction": (("full_head",), ("ct",)),
    "structure": (("full_head",), ("noise",)),
    "t1_contrast": (("full_head",), ("t2_like",)),
    "enclosed_background": ((), ("full_head",)),
    "flip_margin": (("full_head",), ("flip_si", "flip_ap")),
    "cut_fraction": ((), ("cut",)),
    "fov_fraction": ((), ("large_fov",)),
    "uncertainty": ((), ("ct", "noise", "t2_like", "full_head")),
}
ANATOMY = {"brain_ml_min": ("spacing_x0.5",), "brain_ml_max": ("spacing_x1.5",)}
GEOMETRIC = {"fov_fraction"}
OUTSIDE_LIMIT = 0.05


@dataclass(frozen=True)
class Measured:
    """One case's measures, and for a full head the share of its labelled tissue outside the brain mask."""

    case: QCCase
    measures: Measures
    outside_brain: float | None


def calibrate_model(model: Path, data: Path, *, device: str = "auto") -> dict[str, Any]:
    """Calibrate and write the model's `qc` section (model.yaml and README.md); returns the section."""
    card = read_card(model)
    command = f"python -m train calibrate-qc --model {model} --data {data}"
    section = calibrate(model, data, device=device, command=command)
    card["qc"] = section
    write_card(card, model)
    return section


def calibrate(model: Path, data: Path, *, device: str = "auto", command: str = "") -> dict[str, Any]:
    """Measure every calibration case with the model and choose the `qc` section (see the module docstring)."""
    segmenter = Segmenter.from_pretrained(model, device=device)
    if tissue_classes(segmenter.card) is None:
        raise ValueError("QC calibration needs a model with grey_matter and white_matter classes")
    measured, refused = [], []
    for case in calibration_cases(data):
        try:
            measured.append(_measure(segmenter, case))
        except InvalidVolumeError as e:  # a clean refusal (a chain that finds no brain in noise): caught, not measured
            if case.kind in ("stripped", "full_head"):
                raise ValueError(f"{case.name}: the model refuses a validation scan ({e})") from e
            logger.info("QC case %s (%s) refused: %s", case.name, case.kind, e)
            refused.append(case)
    prior = _prior([m.measures for m in measured if m.case.kind == "stripped"])
    grid = prior.shape[-1]
    spec = QCSpec(skull_stripped_input=True, prior=_flat(prior), prior_grid=grid)
    values = [(m.case, values_of(m.measures, spec)) for m in measured]
    outside = [m.outside_brain for m in measured if m.outside_brain is not None]
    stripped_only = bool(outside) and max(outside) > OUTSIDE_LIMIT
    limits, figures = {}, {}
    for name, (passes, negatives) in evidence(stripped_only).items():
        caught = sum(1 for case in refused if case.kind in negatives)
        limits[name], figures[name] = _choose(name, values, passes, negatives, refused=caught)
    for name, negatives in ANATOMY.items():
        limits[name], figures[name] = _keep(name, segmenter.card.qc.limits[name], values, negatives)
    return {
        "skull_stripped_input": stripped_only,
        "limits": {name: {"ok": limit.ok, "warn": limit.warn} for name, limit in limits.items()},
        "prior": {"grid": grid, "grey_matter": _rows(prior[0]), "white_matter": _rows(prior[1])},
        "calibration": {
            "command": command,
            "date": dt.date.today().isoformat(),
            "data": f"{read_dataset(data).get('name', data.name)}, validation split (never test)",
            "validation": sorted(m.case.name for m in measured if m.case.kind in ("stripped", "full_head")),
            "negatives": _counts(measured),
            "refused": sorted(case.name for case in refused),
            "full_heads_outside_brain": [round(v, 4) for v in outside],
            "figures": figures,
        },
    }


def evidence(stripped_only: bool) -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]:
    """Per limit, the kinds of case it must pass and the kinds it must catch. A model that takes full heads
    (`stripped_only` false) must pass them on every check but the skull-stripping one."""
    chosen = {}
    for name, (also, negatives) in EVIDENCE.items():
        if not stripped_only and name != "enclosed_background":
            also = also if "full_head" in also else (*also, "full_head")
            negatives = tuple(kind for kind in negatives if kind != "full_head")
        chosen[name] = (("stripped", *also), negatives)
    return chosen


def _measure(segmenter: Segmenter, case: QCCase) -> Measured:
    prediction = segmenter.predict(case.build(), name=case.name)
    if prediction.qc is None or prediction.qc.measures is None:  # predict always assesses: a broken invariant
        raise RuntimeError(f"{case.name}: the prediction carries no QC measures")
    outside = None
    if case.brain is not None:
        brain = load_volume(case.brain).data > 0.5
        tissue = prediction.mask > 0
        outside = float(np.count_nonzero(tissue & ~brain)) / max(int(np.count_nonzero(tissue)), 1)
    logger.info("QC case %s (%s): %s", case.name, case.kind, prediction.qc.values)
    return Measured(case, prediction.qc.measures, outside)


def _prior(measures: list[Measures]) -> np.ndarray:
    """Mean grey/white maps of the skull-stripped scans, as whole percentages (what the card stores)."""
    maps = [m.maps[:2] for m in measures if m.maps is not None]
    return np.rint(np.mean(maps, axis=0) * 100.0) / 100.0


def _flat(prior: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    return tuple(float(v) for v in prior[0].ravel()), tuple(float(v) for v in prior[1].ravel())


def _rows(cells: np.ndarray) -> list[str]:
    """One line per first-axis slab: its grid² cells as whole percentages (C order)."""
    return [" ".join(str(round(float(v) * 100)) for v in slab.ravel()) for slab in cells]


def _counts(measured: list[Measured]) -> dict[str, int]:
    """How many negatives of each kind were measured (refused ones are listed apart)."""
    kinds = sorted({m.case.kind for m in measured} - {"stripped", "full_head"})
    return {kind: sum(1 for m in measured if m.case.kind == kind) for kind in kinds}


def _choose(
    name: str,
    values: list[tuple[QCCase, dict[str, float | None]]],
    passes: tuple[str, ...],
    catches: tuple[str, ...],
    *,
    refused: int = 0,
) -> tuple[QCLimit, dict[str, Any]]:
    good, bad = _of(values, name, passes), _of(values, name, catches)
    if not good or not (bad or refused):
        raise ValueError(f"no values to calibrate {name} on ({len(good)} to pass, {len(bad)} to catch)")
    # Which side is bad is the check's own (its default limits'), whichever side this model's negatives lie on: a
    # T2-like image the brain stage barely finds can measure more T1 contrast than a real T1, and must not teach the
    # contrast check to warn about strong T1 contrast.
    default = DEFAULT_QC_LIMITS[name]
    high_bad = default.warn > default.ok
    ok = max(good) if high_bad else min(good)
    if not bad:  # every negative was refused (a chain finds no brain in noise): warn as far from ok as the default
        limit = QCLimit(_round(ok), _round(ok + default.warn - default.ok))
        figures = {"ok": limit.ok, "warn": limit.warn, "passes": _line(good, passes)}
        return limit, {**figures, "catches": f"{refused} {'/'.join(catches)}: all refused"}
    # A negative on the passing side of ok cannot be caught without warning a validation scan: it slips through (the
    # figures count it), and warn lies halfway to the nearest negative that can be.
    beyond = [value for value in bad if (value > ok if high_bad else value < ok)]
    warn = ok
    if beyond:
        nearest = min(beyond) if high_bad else max(beyond)
        warn = float(np.sqrt(ok * nearest)) if name in GEOMETRIC and ok > 0 and nearest > 0 else (ok + nearest) / 2
    if _round(warn) == _round(ok):  # none beyond (or one at ok): warn about none of the validation scans
        warn = ok + (1 if high_bad else -1) * max(abs(ok) * 0.1, 0.01)
    limit = QCLimit(_round(ok), _round(warn))
    return limit, _figures(limit, good, passes, bad, catches)


def _keep(
    name: str, limit: QCLimit, values: list[tuple[QCCase, dict[str, float | None]]], catches: tuple[str, ...]
) -> tuple[QCLimit, dict[str, Any]]:
    good, bad = _of(values, name, ("stripped",)), _of(values, name, catches)
    figures = _figures(limit, good, ("stripped",), bad, catches)
    return limit, {**figures, "kept": "anatomy, not this model: not calibrated"}


def _of(values: list[tuple[QCCase, dict[str, float | None]]], name: str, kinds: tuple[str, ...]) -> list[float]:
    """The values of limit `name` measured on the cases of these kinds."""
    found = [v[name] for case, v in values if case.kind in kinds]
    return [float(value) for value in found if value is not None]


def _beyond(numbers: list[float], limit: QCLimit) -> int:
    """How many values are beyond the warn limit (would be warned about)."""
    if limit.warn > limit.ok:
        return sum(1 for v in numbers if v > limit.warn)
    return sum(1 for v in numbers if v < limit.warn)


def _figures(
    limit: QCLimit, good: list[float], passes: tuple[str, ...], bad: list[float], catches: tuple[str, ...]
) -> dict[str, Any]:
    """One limit's evidence, a line per side: how many values, of which kinds, from what to what."""

    caught = f"{_line(bad, catches)}, {_beyond(bad, limit)}/{len(bad)} beyond warn"
    return {"ok": limit.ok, "warn": limit.warn, "passes": _line(good, passes), "catches": caught}


def _line(numbers: list[float], kinds: tuple[str, ...]) -> str:
    return f"{len(numbers)} {'/'.join(kinds)}: {_round(min(numbers))} to {_round(max(numbers))}"


def _round(value: float) -> float:
    return float(f"{value:.4g}")
