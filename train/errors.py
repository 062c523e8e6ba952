"""Errors of the training package that its entry point reports in one line (beside config, data and checkpoint)."""

from __future__ import annotations


class ComparisonError(ValueError):
    """`--compare` cannot line the two evaluations up (the message says what is missing)."""
