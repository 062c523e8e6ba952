"""Sliding-window geometry and blending: window positions, MONAI's Gaussian importance map, slab aggregation."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from .inference import InferencePlan


def labels_from_probabilities(probabilities: torch.Tensor, threshold: float | None) -> torch.Tensor:
    """`(C, ...)` probabilities → uint8 labels: argmax, or foreground ≥ threshold for binary models."""
    if probabilities.shape[0] == 1:
        return (probabilities[0] >= (0.5 if threshold is None else threshold)).to(torch.uint8)
    if probabilities.shape[0] == 2 and threshold is not None:
        return (probabilities[1] >= threshold).to(torch.uint8)
    return probabilities.argmax(dim=0).to(torch.uint8)


def window_starts(size: int, patch: int, overlap: float) -> list[int]:
    """Start offsets along one axis so that windows of `patch` cover `size` with at least `overlap`."""
    if size <= patch:
        return [0]
    step = max(1, int(patch * (1.0 - overlap)))
    starts = list(range(0, size - patch + 1, step))
    if starts[-1] != size - patch:
        starts.append(size - patch)
    return starts


def window_grid(
    shape: tuple[int, int, int], patch: tuple[int, int, int], overlap: float
) -> Iterator[tuple[int, int, int]]:
    """Window starts in row order along the first axis (the order SlabAggregator relies on)."""
    axes = [window_starts(s, p, overlap) for s, p in zip(shape, patch, strict=True)]
    for i in axes[0]:
        for j in axes[1]:
            for k in axes[2]:
                yield i, j, k


def gaussian_weight(patch: tuple[int, ...], sigma_scale: float = 0.125) -> torch.Tensor:
    """MONAI's importance map: a separable Gaussian with sigma = `sigma_scale`·patch, min clamped above 0."""
    weight = torch.ones(())
    for size in patch:
        centre = (size - 1) / 2.0
        sigma = max(size * sigma_scale, 1e-3)
        axis = torch.exp(-0.5 * ((torch.arange(size, dtype=torch.float32) - centre) / sigma) ** 2)
        weight = weight.unsqueeze(-1) * axis
    weight = weight / weight.max()
    return weight.clamp_min(max(float(weight[weight > 0].min()), 1e-3))


class SlabAggregator:
    """Blends window probabilities and turns each finished slab along axis 0 into labels.

    Windows must arrive in `window_grid` order. The buffer spans one patch along axis 0, so memory is
    `C × patch_i × J × K` floats however long the volume is.
    """

    def __init__(
        self, shape: tuple[int, int, int], patch: tuple[int, int, int], num_classes: int, plan: InferencePlan
    ) -> None:
        self.shape, self.patch, self.plan = shape, patch, plan
        depth = min(patch[0], shape[0])
        self.acc = torch.zeros((num_classes, depth, shape[1], shape[2]))
        self.weight_sum = torch.zeros((depth, shape[1], shape[2]))
        self.weight = gaussian_weight(patch) if plan.blending == "gaussian" else torch.ones(patch)
        self.base = 0
        self.labels = np.zeros(shape, dtype=np.uint8)
        self.probabilities = np.zeros((num_classes, *shape), dtype=np.float32) if plan.keep_probabilities else None

    def add(self, start: tuple[int, int, int], probabilities: torch.Tensor) -> None:
        if start[0] > self.base:
            self._flush(start[0])
        i = start[0] - self.base
        box = (
            slice(i, i + self.patch[0]),
            slice(start[1], start[1] + self.patch[1]),
            slice(start[2], start[2] + self.patch[2]),
        )
        self.acc[(slice(None), *box)] += probabilities * self.weight
        self.weight_sum[box] += self.weight

    def finish(self) -> tuple[np.ndarray, np.ndarray | None]:
        self._flush(self.shape[0])
        return self.labels, self.probabilities

    def _flush(self, upto: int) -> None:
        count = upto - self.base
        if count <= 0:
            return
        blended = self.acc[:, :count] / self.weight_sum[:count].clamp_min(1e-8)
        region = slice(self.base, upto)
        self.labels[region] = labels_from_probabilities(blended, self.plan.threshold).numpy()
        if self.probabilities is not None:
            self.probabilities[:, region] = blended.numpy()
        kept = self.acc.shape[1] - count
        if kept > 0:
            self.acc[:, :kept] = self.acc[:, count:].clone()
            self.weight_sum[:kept] = self.weight_sum[count:].clone()
        self.acc[:, max(kept, 0) :] = 0
        self.weight_sum[max(kept, 0) :] = 0
        self.base = upto
