"""Inference engine: runs an `InferencePlan` (planning.py), one whole-volume pass or a Gaussian-blended sliding window.

Everything stays on the plan's device: the volume arrives there (geometry.prepare) and labels and probabilities
leave as tensors on it (geometry.restore maps them back there too). A whole pass takes the argmax straight from
the logits, or, when probabilities are wanted (TTA, a threshold, a caller or a resampled input that needs them),
the softmax of that one pass. A sliding window visits windows row by row along the first axis and reduces each
finished slab to labels at once (windows.py), so memory stays near a few patch-sized buffers plus the uint8 output
rather than a full probability map.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from functools import partial

import numpy as np
import torch
from torch import nn

from .device import cpu_copy, default_precision, memory_format_for
from .errors import InferenceError
from .planning import InferencePlan
from .postprocess import labels_from_logits, labels_from_probabilities
from .preprocessing import pad_to_multiple, unpad
from .shapes import Shape3, shape3
from .uncertainty import EntropyMeter
from .windows import SlabAggregator, window_grid

logger = logging.getLogger(__name__)

Progress = Callable[[float, str], None]
_TTA_FLIPS: tuple[tuple[int, ...], ...] = ((), (2,), (3,), (4,))


@dataclass
class InferenceOutput:
    """Labels `(I, J, K)` uint8 (and, when the plan keeps them, probabilities `(C, I, J, K)` float32) on the prepared
    grid, as tensors on the device the plan ran on, the plan that ran, and the mean uncertainty inside the predicted
    foreground (`uncertainty.EntropyMeter`; None when nothing is foreground)."""

    labels: torch.Tensor
    probabilities: torch.Tensor | None
    plan: InferencePlan
    uncertainty: float | None = None


@torch.inference_mode()
def run_inference(
    model: nn.Module, volume: torch.Tensor | np.ndarray, plan: InferencePlan, progress: Progress | None = None
) -> InferenceOutput:
    """Segment a normalised `(I, J, K)` float32 volume; on out-of-memory, retry with a lighter plan.

    Falls back whole → sliding → batch 1 → CPU, logging each step. The CPU step runs a CPU copy of the network:
    the network itself is shared with concurrent requests, which keep running on its device.
    """
    network = model
    source = torch.as_tensor(volume)
    while True:
        try:
            return _run(network, source.to(plan.device), plan, progress)
        except torch.OutOfMemoryError as e:
            lighter = _after_out_of_memory(plan, e)
            if lighter.device != plan.device:
                network = cpu_copy(model)
            plan = lighter


def _after_out_of_memory(plan: InferencePlan, error: torch.OutOfMemoryError) -> InferencePlan:
    lighter = _lighter_plan(plan)
    if lighter is None:
        raise InferenceError(
            "out of memory even with a sliding window on the CPU: use a smaller patch_size "
            "or a machine with more memory"
        ) from error
    logger.warning("out of memory in %s mode on %s; retrying with %s", plan.mode, plan.device, lighter)
    if plan.device.type == "cuda":
        torch.cuda.empty_cache()
    return lighter


def _lighter_plan(plan: InferencePlan) -> InferencePlan | None:
    if plan.mode == "whole":
        return replace(plan, mode="sliding")
    if plan.batch_size > 1:
        return replace(plan, batch_size=1)
    if plan.device.type != "cpu":
        return replace(plan, device=torch.device("cpu"), precision=default_precision(torch.device("cpu")))
    return None


def _run(model: nn.Module, volume: torch.Tensor, plan: InferencePlan, progress: Progress | None) -> InferenceOutput:
    padded, pads = pad_to_multiple(volume, plan.pad_multiple)
    within = None if progress is None else partial(_infer_progress, progress)
    meter = EntropyMeter()
    if plan.mode == "whole":
        labels, probabilities = _whole(model, padded, plan, within, meter)
    else:
        labels, probabilities = _sliding(model, padded, plan, progress, within, meter)
    return InferenceOutput(
        labels=unpad(labels, pads),
        probabilities=None if probabilities is None else unpad(probabilities, pads),
        plan=plan,
        uncertainty=meter.mean,
    )


def _whole(
    model: nn.Module,
    padded: torch.Tensor,
    plan: InferencePlan,
    within: Callable[[float], None] | None,
    meter: EntropyMeter,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One pass over the whole volume: the argmax straight from the logits (no softmax, no blending buffers; the
    meter samples its own), or the softmax (averaged over flips with TTA) where the plan needs probabilities."""
    x = padded[None, None].to(memory_format=memory_format_for(plan.device))
    if not plan.needs_probabilities:
        logits = _logits(model, x, plan, within)[0]
        meter.add_logits(logits)
        return labels_from_logits(logits), None
    probabilities = _forward(model, x, plan, within)[0]
    meter.add_probabilities(probabilities)
    labels = labels_from_probabilities(probabilities, plan.threshold)
    return labels, probabilities if plan.keep_probabilities else None


def _sliding(
    model: nn.Module,
    padded: torch.Tensor,
    plan: InferencePlan,
    progress: Progress | None,
    within: Callable[[float], None] | None,
    meter: EntropyMeter,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    patch = plan.window(padded.shape)  # padding out to the full patch would change the labels near the edges
    num_classes = int(getattr(model, "num_classes", 0)) or _probe_classes(model, plan, plan.pad_multiple)
    grid = shape3(padded.shape)
    aggregator = SlabAggregator(
        grid,
        patch,
        num_classes,
        threshold=plan.threshold,
        blending=plan.blending,
        keep_probabilities=plan.keep_probabilities,
        device=plan.device,
        meter=meter,
    )
    windows = list(window_grid(grid, patch, plan.overlap))
    for done, batch in enumerate(_batched(windows, plan.batch_size), start=1):
        tiles = torch.stack([padded[_box(start, patch)] for start in batch]).unsqueeze(1)
        tiles = tiles.contiguous(memory_format=memory_format_for(plan.device))
        # Progress within the pass only where one batch is the whole run: many windows report as they finish.
        scores = _forward(model, tiles, plan, within if len(windows) <= plan.batch_size else None)
        for start, score in zip(batch, scores, strict=True):
            aggregator.add(start, score)
        if progress is not None:
            progress(min(1.0, done * plan.batch_size / len(windows)), "infer")
    return aggregator.finish()


def _probe_classes(model: nn.Module, plan: InferencePlan, multiple: int) -> int:
    probe = torch.zeros((1, 1, multiple, multiple, multiple), device=plan.device)
    return int(model(probe).shape[1])


def _box(start: Shape3, patch: Shape3) -> tuple[slice, slice, slice]:
    i, j, k = (slice(s, s + p) for s, p in zip(start, patch, strict=True))
    return i, j, k


def _batched(items: list[Shape3], size: int) -> Iterator[list[Shape3]]:
    for index in range(0, len(items), size):
        yield items[index : index + size]


def _forward(
    model: nn.Module, tiles: torch.Tensor, plan: InferencePlan, within: Callable[[float], None] | None = None
) -> torch.Tensor:
    """Class probabilities `(B, C, ...)` in float32 on the tiles' device, averaged over flips when TTA is on.

    `within`, if given, hears the share of this call's work done (each flip an equal part).
    """
    flips = _TTA_FLIPS if plan.tta else ((),)
    total: torch.Tensor | None = None
    for index, dims in enumerate(flips):
        x = torch.flip(tiles, dims) if dims else tiles
        step = None if within is None else partial(_share, within, index, len(flips))
        probs = _probabilities(_logits(model, x, plan, step))
        probs = torch.flip(probs, dims) if dims else probs
        total = probs if total is None else total.add_(probs)  # in place: one probability map, however many flips
    assert total is not None  # flips is never empty
    return total if len(flips) == 1 else total.div_(len(flips))


def _logits(
    model: nn.Module, x: torch.Tensor, plan: InferencePlan, within: Callable[[float], None] | None
) -> torch.Tensor:
    """One forward pass; a network whose forward takes `progress` (UNet3D's does) reports through it to `within`,
    and one that takes `slab_rows` runs a whole pass's full-resolution decoder in the plan's slabs."""
    options: dict[str, object] = {}
    parameters = inspect.signature(model.forward).parameters  # a subclass may override forward(x) without them
    if within is not None and "progress" in parameters:
        options["progress"] = within
    if plan.slab_rows is not None and plan.mode == "whole" and "slab_rows" in parameters:
        options["slab_rows"] = plan.slab_rows
    with _autocast(plan):
        return model(x, **options)


def _infer_progress(progress: Progress, fraction: float) -> None:
    progress(fraction, "infer")


def _share(within: Callable[[float], None], index: int, count: int, fraction: float) -> None:
    within((index + fraction) / count)


def _autocast(plan: InferencePlan) -> torch.autocast:
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(plan.precision)
    return torch.autocast(plan.device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


def _probabilities(logits: torch.Tensor) -> torch.Tensor:
    """float32 probabilities from logits of any precision, without a float32 copy of the logits first."""
    if logits.shape[1] == 1:
        return torch.sigmoid(logits.float())
    return torch.softmax(logits, dim=1, dtype=torch.float32)
