"""The shared rules a model card's fields are read by: each broken rule a CardError naming the field."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .errors import CardError, ParameterError


def number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise CardError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def only(value: dict[str, Any], section: str, allowed: set[str]) -> None:
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise CardError(f"unknown field(s) in {section}: {', '.join(unknown)} (allowed: {', '.join(sorted(allowed))})")


@contextmanager
def card_rule() -> Iterator[None]:
    """A shared option rule (options.py) broken by a card value: the same message, as a CardError."""
    try:
        yield
    except ParameterError as e:
        raise CardError(str(e)) from e


def flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise CardError(f"{name} must be true or false, got {value!r}")
    return value


def positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise CardError(f"{name} must be a positive integer, got {value!r}")
    return value


def triple(name: str, value: Any) -> list[float]:
    items = [value] * 3 if isinstance(value, int | float) else list(value)
    if len(items) != 3 or any(float(v) <= 0 for v in items):
        raise CardError(f"{name} must be three positive numbers, got {value!r}")
    return [float(v) for v in items]
