"""Stage clocks: time per stage of one prediction, and overall progress for a caller's callback."""

from __future__ import annotations

import time
from typing import ClassVar

import torch

from .device import synchronize
from .inference import Progress

__all__ = ["StageReporter"]


class StageReporter:
    """Tracks time per stage and forwards overall progress (stages weighted by their usual cost).

    On a GPU the end of a device stage waits for the device's queued work, so that a stage's time is its own, not
    the asynchronous tail of the one before. `pause` stops the clock (a cohort's case waiting between two threads).
    """

    WEIGHTS: ClassVar[dict[str, tuple[float, float]]] = {
        "load": (0.0, 0.05),
        "preprocess": (0.05, 0.1),
        "infer": (0.1, 0.9),
        "postprocess": (0.9, 1.0),
    }
    ON_DEVICE: ClassVar[frozenset[str]] = frozenset({"preprocess", "infer"})

    def __init__(self, callback: Progress | None, device: torch.device) -> None:
        self.callback = callback
        self.device = device
        self.stage: str | None = None
        self.started = time.perf_counter()
        self.elapsed: dict[str, float] = {}

    def __call__(self, stage: str, fraction: float) -> None:
        if stage != self.stage:
            self.pause()
            self.stage, self.started = stage, time.perf_counter()
        if self.callback is not None and stage in self.WEIGHTS:
            low, high = self.WEIGHTS[stage]
            self.callback(low + (high - low) * fraction, stage)

    def pause(self) -> None:
        """End the current stage's clock (the next call starts a stage again)."""
        if self.stage in self.ON_DEVICE:  # their work is queued on a GPU: it is done when the device says so
            synchronize(self.device)
        if self.stage is not None:
            elapsed = (time.perf_counter() - self.started) * 1000.0
            self.elapsed[self.stage] = self.elapsed.get(self.stage, 0.0) + elapsed
        self.stage = None

    def timings(self) -> dict[str, float]:
        self.pause()
        return {stage: self.elapsed.get(stage, 0.0) for stage in ("load", "preprocess", "infer", "postprocess")}
