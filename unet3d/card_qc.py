"""The model card's `qc` section: the limits QC judges a prediction by, their defaults, and the brain prior."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .card_fields import flag, number, only, positive_int
from .errors import CardError


@dataclass(frozen=True)
class QCLimit:
    """One QC measure's limits: `ok` (at or beyond it the check is fully passed, score 1) and `warn` (beyond it the
    prediction gets the check's warning, score below 0.5); `warn` above `ok` means high values are bad."""

    ok: float
    warn: float


# The QC limits a card may set (docs/models.md#quality-control) and the documented defaults for cards without a `qc`
# section: the shipped model 1.0's calibration (python -m train calibrate-qc, 2026-12-04), rounded. The brain volume
# limits are anatomy (grey + white matter of a child to a large adult, MNI-normalised brains included), not calibrated.
DEFAULT_QC_LIMITS: Mapping[str, QCLimit] = {
    "air_fraction": QCLimit(0.0, 0.27),
    "structure": QCLimit(0.95, 0.48),
    "t1_contrast": QCLimit(0.09, -0.12),
    "enclosed_background": QCLimit(0.034, 0.104),
    "flip_margin": QCLimit(-0.083, 0.052),
    "cut_fraction": QCLimit(0.0, 0.29),
    "fov_fraction": QCLimit(0.147, 0.061),
    "brain_ml_min": QCLimit(900.0, 600.0),
    "brain_ml_max": QCLimit(1800.0, 2200.0),
    "uncertainty": QCLimit(0.1, 0.134),
}


@dataclass(frozen=True)
class QCSpec:
    """The card's `qc` section: the limits QC judges a prediction by, and what they rest on.

    Attributes:
        limits: every QC limit (the card's, the rest from DEFAULT_QC_LIMITS).
        skull_stripped_input: the model was trained on skull-stripped brains only (a full head gets a warning).
        prior: grey and white matter fractions on a `prior_grid`³ lattice over an upright brain's bounding box
            (closest-RAS), each `prior_grid`³ values in C order; None without one (the checks that need it are off).
        prior_grid: cells per axis of `prior`.
        calibrated: whether the limits came from a calibration (a `qc` section) rather than the defaults.
    """

    limits: Mapping[str, QCLimit] = field(default_factory=lambda: dict(DEFAULT_QC_LIMITS))
    skull_stripped_input: bool = False
    prior: tuple[tuple[float, ...], tuple[float, ...]] | None = None
    prior_grid: int = 0
    calibrated: bool = False


def qc_spec(value: Any) -> QCSpec:
    if not isinstance(value, dict):
        raise CardError("qc must be a mapping (limits, skull_stripped_input, prior, calibration)")
    only(value, "qc", {"limits", "skull_stripped_input", "prior", "calibration"})
    limits = dict(DEFAULT_QC_LIMITS)
    given = value.get("limits") or {}
    if not isinstance(given, dict):
        raise CardError("qc.limits must map a measure to {ok, warn}")
    only(given, "qc.limits", set(DEFAULT_QC_LIMITS))
    for name, limit in given.items():
        if not isinstance(limit, dict) or set(limit) != {"ok", "warn"}:
            raise CardError(f"qc.limits.{name} must be {{ok: number, warn: number}}, got {limit!r}")
        ok, warn = (number(f"qc.limits.{name}.{key}", limit[key]) for key in ("ok", "warn"))
        if ok == warn:
            raise CardError(f"qc.limits.{name}: ok and warn must differ (their order says which side is bad)")
        limits[name] = QCLimit(ok, warn)
    stripped = flag("qc.skull_stripped_input", value.get("skull_stripped_input", False))
    prior, grid = _qc_prior(value.get("prior"))
    return QCSpec(limits, stripped, prior, grid, calibrated=True)


def _qc_prior(value: Any) -> tuple[tuple[tuple[float, ...], tuple[float, ...]] | None, int]:
    """`prior: {grid: N, grey_matter: [N strings of N² percentages], white_matter: [...]}` → fractions, C order."""
    if value is None:
        return None, 0
    if not isinstance(value, dict):
        raise CardError("qc.prior must be a mapping {grid, grey_matter, white_matter}")
    only(value, "qc.prior", {"grid", "grey_matter", "white_matter"})
    grid = positive_int("qc.prior.grid", value.get("grid"))
    maps = []
    for tissue in ("grey_matter", "white_matter"):
        rows = value.get(tissue)
        try:
            numbers = [float(v) / 100.0 for row in rows or () for v in str(row).split()]
        except (TypeError, ValueError) as e:
            raise CardError(f"qc.prior.{tissue} must be {grid} lines of {grid * grid} percentages") from e
        if len(numbers) != grid**3 or not all(0.0 <= v <= 1.0 for v in numbers):
            raise CardError(f"qc.prior.{tissue} must hold {grid**3} percentages in [0, 100], got {len(numbers)}")
        maps.append(tuple(numbers))
    return (maps[0], maps[1]), grid
