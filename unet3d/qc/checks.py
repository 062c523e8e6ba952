"""The QC verdict: each check compares one measure with the card's limits (`card.QCSpec`), scores it, and words a
warning that says what looks wrong and what to do.

A check's score is 1 at its `ok` limit or better, 0.5 at its `warn` limit and falls to 0 as far again beyond it; the
prediction's score is its worst check's, so a score below 0.5 always comes with a warning. Warnings that follow from
another are not repeated: an image that does not look like a T1 MRI (a CT, noise, another contrast) is reported alone,
and a CT or noise not also as another contrast;
a full head given to a skull-stripped model does not also get the volume, cut-off, field-of-view and uncertainty
warnings that the skull and scalp labelled as tissue cause; a brain cut off by the field of view does not also get
the orientation warning (its tissue map is cut too); and high uncertainty is reported only when no other warning
explains it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from ..card import QCLimit, QCSpec
from . import messages
from .measures import Measures
from .prior import flip_margin, prior_array, prior_fits, t1_contrast

__all__ = ["values_of"]

Values = Mapping[str, float | None]
_IMAGE_KIND = ("ct", "noise", "contrast")  # reported alone
_FULL_HEAD_FOLLOWS = ("volume", "cut_off", "field_of_view", "uncertainty")


@dataclass(frozen=True)
class QC:
    """How far a prediction can be trusted.

    Attributes:
        score: in [0, 1]: 1 nothing looked unusual, below 0.5 at least one warning.
        warnings: plain-language warnings, each saying what looks wrong and what to do; empty: nothing looked wrong.
        checks: the score of every check that ran, by name.
        values: every value judged, by limit name (None: not measurable here), for calibration and debugging.
        measures: the measurements the values came from.
    """

    score: float
    warnings: tuple[str, ...]
    checks: Mapping[str, float]
    values: Mapping[str, float | None]
    measures: Measures | None = None

    def as_dict(self) -> dict[str, object]:
        """The summary's `qc` field: `{score, warnings}`."""
        return {"score": round(self.score, 3), "warnings": list(self.warnings)}


@dataclass(frozen=True)
class _Check:
    name: str
    limits: tuple[str, ...]  # the limits judged; the check fails when any value is beyond its warn limit
    message: Callable[[Measures, Values, QCSpec], str]


def limit_score(value: float, limit: QCLimit) -> float:
    """1 at `ok` or better, 0.5 at `warn`, 0 as far again beyond it (linear in between; the card parser makes sure
    that ok and warn differ)."""
    beyond = (value - limit.ok) / (limit.warn - limit.ok)  # 0 at ok, 1 at warn
    return float(np.clip(1.0 - 0.5 * beyond, 0.0, 1.0))


def values_of(measures: Measures, spec: QCSpec) -> dict[str, float | None]:
    """Every limit's value for this prediction; None where it cannot be measured (no brain classes, no prior, ...)."""
    brain = measures.brain_ml is not None
    prior, maps = prior_array(spec), measures.maps
    contrast = margin = None
    if prior is not None and maps is not None:
        contrast, margin = t1_contrast(maps, prior), flip_margin(prior_fits(maps, prior))
    return {
        "air_fraction": measures.air_fraction if brain else None,
        "structure": measures.structure,
        "t1_contrast": contrast,
        "enclosed_background": measures.enclosed_background if spec.skull_stripped_input and brain else None,
        "flip_margin": margin,
        "cut_fraction": measures.cut_fraction if measures.foreground_ml > 0 else None,
        "fov_fraction": measures.fov_fraction if brain else None,
        "brain_ml_min": measures.brain_ml,
        "brain_ml_max": measures.brain_ml,
        "uncertainty": measures.uncertainty,
    }


def judge(measures: Measures, spec: QCSpec) -> QC:
    """Score every check that applies and word the warnings of those that fail (see the module docstring)."""
    values = values_of(measures, spec)
    scores: dict[str, float] = {}
    failed: list[_Check] = []
    for check in CHECKS:
        judged = [limit_score(value, spec.limits[name]) for name in check.limits if (value := values[name]) is not None]
        if not judged:
            continue
        scores[check.name] = min(judged)
        if scores[check.name] < 0.5:
            failed.append(check)
    if measures.foreground_ml == 0:
        scores["empty"] = 0.0
    shown = _not_repeated([check.name for check in failed])
    warnings = [check.message(measures, values, spec) for check in failed if check.name in shown]
    if measures.foreground_ml == 0 and not set(shown) & set(_IMAGE_KIND):
        warnings.append(messages.EMPTY)
    return QC(min(scores.values(), default=1.0), tuple(warnings), scores, values, measures)


CHECKS = (
    _Check("ct", ("air_fraction",), messages.ct),
    _Check("noise", ("structure",), messages.noise),
    _Check("contrast", ("t1_contrast",), messages.contrast),
    _Check("skull_stripped", ("enclosed_background",), messages.skull_stripped),
    _Check("orientation", ("flip_margin",), messages.orientation),
    _Check("cut_off", ("cut_fraction",), messages.cut_off),
    _Check("field_of_view", ("fov_fraction",), messages.field_of_view),
    _Check("volume", ("brain_ml_min", "brain_ml_max"), messages.volume),
    _Check("uncertainty", ("uncertainty",), messages.uncertainty),
)


def _not_repeated(failed: list[str]) -> list[str]:
    """The failed checks worth reporting: those that do not follow from another (see the module docstring)."""
    if set(failed) & set(_IMAGE_KIND):
        # A CT's or noise's intensities are also unlike a T1's contrast: naming what the image is says it.
        explained = "contrast" if {"ct", "noise"} & set(failed) else None
        return [name for name in failed if name in _IMAGE_KIND and name != explained]
    if "skull_stripped" in failed:
        failed = [name for name in failed if name not in _FULL_HEAD_FOLLOWS]
    if "cut_off" in failed:
        failed = [name for name in failed if name != "orientation"]
    if len(failed) > 1:
        failed = [name for name in failed if name != "uncertainty"]
    return failed
