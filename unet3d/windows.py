"""Sliding-window geometry and blending: window positions, MONAI's Gaussian importance map, slab aggregation."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from .options import Blending
from .postprocess import labels_from_probabilities
from .shapes import Shape3
from .uncertainty import EntropyMeter


def window_starts(size: int, patch: int, overlap: float) -> list[int]:
    """Start offsets along one axis so that windows of `patch` cover `size` with at least `overlap`."""
    if size <= patch:
        return [0]
    step = max(1, int(patch * (1.0 - overlap)))
    starts = list(range(0, size - patch + 1, step))
    if starts[-1] != size - patch:
        starts.append(size - patch)
    return starts


def window_grid(shape: Shape3, patch: Shape3, overlap: float) -> Iterator[Shape3]:
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

    Args:
        shape: the padded volume's grid.
        patch: the window size.
        num_classes: probability channels.
        threshold: foreground cut-off for binary models (None: argmax), see `labels_from_probabilities`.
        blending: "gaussian" (MONAI's importance map) or "constant" weights.
        keep_probabilities: also keep the blended `(C, I, J, K)` probabilities.
        device: where the buffers and the results live (the network's device: nothing goes through the host).
        meter: measures the uncertainty of each finished slab, when given.
    """

    def __init__(
        self,
        shape: Shape3,
        patch: Shape3,
        num_classes: int,
        *,
        threshold: float | None,
        blending: Blending,
        keep_probabilities: bool,
        device: torch.device | None = None,
        meter: EntropyMeter | None = None,
    ) -> None:
        self.shape, self.patch, self.threshold, self.meter = shape, patch, threshold, meter
        depth = min(patch[0], shape[0])
        self.acc = torch.zeros((num_classes, depth, shape[1], shape[2]), device=device)
        self.weight_sum = torch.zeros((depth, shape[1], shape[2]), device=device)
        weight = gaussian_weight(patch) if blending == "gaussian" else torch.ones(patch)
        self.weight = weight.to(device)
        self.base = 0
        self.labels = torch.zeros(shape, dtype=torch.uint8, device=device)
        self.probabilities = torch.zeros((num_classes, *shape), device=device) if keep_probabilities else None

    def add(self, start: Shape3, probabilities: torch.Tensor) -> None:
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

    def finish(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        self._flush(self.shape[0])
        return self.labels, self.probabilities

    def _flush(self, upto: int) -> None:
        count = upto - self.base
        if count <= 0:
            return
        blended = self.acc[:, :count] / self.weight_sum[:count].clamp_min(1e-8)
        region = slice(self.base, upto)
        self.labels[region] = labels_from_probabilities(blended, self.threshold)
        if self.meter is not None:
            self.meter.add_probabilities(blended)
        if self.probabilities is not None:
            self.probabilities[:, region] = blended
        kept = self.acc.shape[1] - count
        if kept > 0:
            self.acc[:, :kept] = self.acc[:, count:].clone()
            self.weight_sum[:kept] = self.weight_sum[count:].clone()
        self.acc[:, max(kept, 0) :] = 0
        self.weight_sum[max(kept, 0) :] = 0
        self.base = upto
