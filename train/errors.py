"""Errors of the training package that its entry point reports in one line (beside data errors)."""

from __future__ import annotations


class ComparisonError(ValueError):
    """`--compare` cannot line the two evaluations up (the message says what is missing)."""


class ConfigError(ValueError):
    """A training config key is unknown or a value has the wrong type/range."""


class CheckpointError(ValueError):
    """`--resume` found a checkpoint it cannot continue from (the message says what to do)."""
