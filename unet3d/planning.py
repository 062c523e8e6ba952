"""Planning: how one volume runs through the network (`InferencePlan`), and every memory estimate behind it.

Per-voxel costs are fitted to measured peaks (`python bench/memory.py`) and then scaled down, so that estimates
stay well below them: a refusal means the run could not have fitted, never that it might not have.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .device import default_precision
from .memory import available_bytes
from .model import UNet3D
from .options import (
    MODES,
    Blending,
    Mode,
    Precision,
    ResolvedMode,
    ResolvedPrecision,
    check_choice,
    check_overlap,
    check_pad_multiple,
    check_patch_size,
)
from .shapes import Shape3, shape3

__all__ = ["network_shape"]

_PEAK_SHARE = 0.85
# A whole pass on the host may plan on this share of the memory still available (the rest: the volume, the mask,
# other requests).
_HOST_SHARE = 0.5
# Voxels per slab of a host whole pass's full-resolution decoder (64 rows of a brain's 208×176 cross-section).
_SLAB_VOXELS = 2_500_000


@dataclass(frozen=True)
class InferencePlan:
    """How one volume is run through the network.

    Attributes:
        mode: "whole" (one pass over the padded volume) or "sliding".
        patch_size: window size for sliding mode, each a multiple of the model's pad multiple.
        overlap: fraction of a window shared with its neighbour, in [0, 1).
        blending: "gaussian" (MONAI's sigma = 0.125·patch) or "constant".
        batch_size: windows per forward call.
        device: where the network runs.
        precision: autocast dtype; "fp32" disables autocast.
        tta: average the softmax over flips along each spatial axis (4 passes).
        threshold: foreground probability cut-off for binary models; None → argmax.
        pad_multiple: volumes are padded to a multiple of this (a multiple of 2**depth).
        keep_probabilities: also return `(C, I, J, K)` float32 probabilities.
        slab_rows: a whole pass runs the network's full-resolution decoder in slabs of this many rows (see
            `UNet3D.forward`); None runs it at once (on a GPU, or a network without slabs).
    """

    mode: ResolvedMode
    patch_size: Shape3
    overlap: float
    blending: Blending
    batch_size: int
    device: torch.device
    precision: ResolvedPrecision
    pad_multiple: int = 16
    tta: bool = False
    threshold: float | None = None
    keep_probabilities: bool = False
    slab_rows: int | None = None

    def window(self, padded: Sequence[int]) -> Shape3:
        """The window of a pass over a volume padded to `padded`: all of it, or patches that never extend past it
        (along an axis shorter than the patch, one window spans the axis: no more zeros than a whole pass sees)."""
        if self.mode == "whole":
            return shape3(padded)
        return shape3(min(p, s) for p, s in zip(self.patch_size, padded, strict=True))

    @property
    def is_stitched(self) -> bool:
        """Whether probabilities are blended in buffers (a whole pass needs none)."""
        return self.mode == "sliding"

    @property
    def needs_probabilities(self) -> bool:
        """Whether labels come from probabilities (TTA averages them, a threshold cuts them, or they are kept)
        rather than straight from the logits."""
        return self.tta or self.keep_probabilities or self.threshold is not None


def plan_inference(
    model: nn.Module,
    shape: Shape3,
    *,
    mode: Mode,
    patch_size: Shape3,
    overlap: float,
    blending: Blending,
    device: torch.device,
    memory_budget_mb: float,
    precision: Precision = "auto",
    pad_multiple: int | None = None,
    tta: bool = False,
    threshold: float | None = None,
    keep_probabilities: bool = False,
) -> InferencePlan:
    """Choose whole vs sliding for a volume of `shape` and validate the window settings.

    Raises:
        ParameterError: a window setting is out of range, or `pad_multiple` is not a multiple of the network's.
    """
    base = int(getattr(model, "pad_multiple", 16))
    multiple = check_pad_multiple(pad_multiple or base, base)
    check_choice(mode, MODES, "mode")
    patch = check_patch_size(patch_size, multiple)
    check_overlap(overlap)
    resolved: ResolvedPrecision = default_precision(device) if precision == "auto" else precision
    slab_rows = whole_pass_slab_rows(model, network_shape(shape, multiple), device)
    if mode == "auto":
        needed = whole_pass_bytes(model, shape, resolved, multiple, slabbed=slab_rows is not None)
        mode = "whole" if needed <= memory_budget_mb * 2**20 else "sliding"
    return InferencePlan(
        mode=mode,
        patch_size=patch,
        overlap=float(overlap),
        blending=blending,
        batch_size=1 if device.type == "cpu" or mode == "whole" else 4,
        device=device,
        precision=resolved,
        pad_multiple=multiple,
        tta=tta,
        threshold=threshold,
        keep_probabilities=keep_probabilities,
        slab_rows=slab_rows if mode == "whole" else None,
    )


def whole_pass_slab_rows(model: nn.Module, padded: Shape3, device: torch.device) -> int | None:
    """Rows per slab of a whole pass's full-resolution decoder on the host (even, about `_SLAB_VOXELS` voxels):
    it cuts the pass's peak memory by a third for ~4% more time (bench/results/compare-cpu*.json). None on a GPU,
    whose memory is rarely the limit, and for networks that do not take slabs."""
    if device.type != "cpu" or not isinstance(model, UNet3D):
        return None
    rows = max(2, _SLAB_VOXELS // max(1, padded[1] * padded[2]) // 2 * 2)
    return rows if rows < padded[0] else None


def network_shape(shape: Sequence[int], multiple: int) -> Shape3:
    """The grid the network sees: `shape` padded up to a multiple of `multiple` along each axis."""
    return shape3(-(-s // multiple) * multiple for s in shape)


def memory_budget_mb(device: torch.device, cpu_budget_mb: float) -> float:
    """Activation memory a whole pass may use: 70% of free memory on a GPU; on the host, half of the memory still
    available (RAM, swap, the container's limit: `unet3d.memory.available_bytes`), never less than the card's
    budget, which is the whole budget where the available memory is unknown."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return 0.7 * free / 2**20
    available = available_bytes()
    if available is None:
        return cpu_budget_mb
    return max(cpu_budget_mb, _HOST_SHARE * available / 2**20)


def activation_bytes_per_voxel(model: nn.Module, element_bytes: int, *, slabbed: bool = False) -> float:
    """Rough peak activation memory of a forward pass, per input voxel (calibrated in bench/); a network other than
    a UNet3D is assumed to hold 64 values per voxel."""
    if not isinstance(model, UNet3D):
        return 64.0 * element_bytes
    if slabbed:
        # The level-0 skip (base) and the level-1 decoder step (cat + conv ≈ 1.5·base per full-resolution voxel)
        # held at once, plus fp32 logits: measured 187 B/voxel for base 16 in fp32 (160 + 20 planned).
        return model.base_channels * 2.5 * element_bytes + 4.0 * (model.num_classes + 2)
    # Skips held across the pass (~1.33·base per voxel) plus the widest full-resolution step
    # (concatenation + conv output ≈ 3·base; measured 4.25·base in bench/), plus fp32 logits.
    return model.base_channels * 4.5 * element_bytes + 4.0 * (model.num_classes + 2)


def whole_pass_bytes(
    model: nn.Module, shape: Sequence[int], precision: str, multiple: int = 16, *, slabbed: bool = False
) -> float:
    """Estimated peak activation bytes of one pass over the padded volume (`slabbed`: its full-resolution decoder
    in slabs, see `whole_pass_slab_rows`)."""
    voxels = math.prod(network_shape(shape, multiple))
    return voxels * activation_bytes_per_voxel(model, 4 if precision == "fp32" else 2, slabbed=slabbed)


def stitch_bytes(shape: Sequence[int], window: Sequence[int], num_classes: int) -> int:
    """The blending buffers: class sums and weights for one window's depth across the volume (see SlabAggregator)."""
    return 4 * (num_classes + 1) * min(window[0], shape[0]) * shape[1] * shape[2]


def load_bytes(voxels: int, stored_itemsize: int) -> int:
    """Peak bytes of reading a volume: the stored voxels, then their float32 copy."""
    return voxels * (stored_itemsize + 4)


def predict_bytes(
    input_voxels: int,
    network_voxels: int,
    num_classes: int,
    *,
    activation_bytes: float,
    stitch_bytes: float,
    resampled: bool,
    probabilities: bool,
    on_host: bool = True,
) -> float:
    """A low estimate of the peak host bytes of one `Segmenter.predict` once the volume is read, the volume included.

    Args:
        input_voxels: voxels of the input grid (the mask's).
        network_voxels: voxels the network sees (after the foreground crop and the resampling to the card's spacing).
        num_classes: output channels.
        activation_bytes: the planner's activation figure for one forward pass on this host (0 on a GPU); it errs
            high (a whole 1 mm brain in bf16: 164 B/voxel planned, ~133 measured), hence the 0.75.
        stitch_bytes: the sliding window's blending buffers.
        resampled: whether class probabilities are resized back to the input grid.
        probabilities: whether the caller asked for the probabilities.
        on_host: whether the network runs on the host; on a GPU every grid but the input's lives in the GPU's own
            memory, and the host holds the volume, its pinned copy, the mask and any probabilities asked for.
    """
    per_class = 4 * num_classes
    if not on_host:
        return _PEAK_SHARE * (9 + (per_class if probabilities else 0)) * input_voxels
    if resampled:  # probabilities on both grids: stitched on the network's, resized onto the input's
        per_input, per_network = 2 + per_class, 20 + per_class
    else:  # no full probability map unless asked for one
        per_input, per_network = 8, 4 + (per_class if probabilities else 0)
    working = 0.75 * activation_bytes + stitch_bytes
    return _PEAK_SHARE * (working + per_input * input_voxels + per_network * network_voxels)


def predict_peak_bytes(
    network: nn.Module,
    plan: InferencePlan,
    *,
    input_voxels: int,
    prepared_shape: Shape3,
    num_classes: int,
    resampled: bool,
    probabilities: bool,
) -> float:
    """`predict_bytes` for one planned run: the network sees `prepared_shape` (padded); activations count only
    where they live in host memory (on a GPU they live in its own)."""
    window = plan.window(network_shape(prepared_shape, plan.pad_multiple))
    on_host = plan.device.type == "cpu"
    slabbed = plan.slab_rows is not None
    activations = (
        whole_pass_bytes(network, window, plan.precision, plan.pad_multiple, slabbed=slabbed) if on_host else 0.0
    )
    return predict_bytes(
        input_voxels,
        math.prod(prepared_shape),
        num_classes,
        activation_bytes=activations,
        stitch_bytes=stitch_bytes(prepared_shape, window, num_classes) if plan.is_stitched else 0,
        resampled=resampled,
        probabilities=probabilities,
        on_host=on_host,
    )
