"""Geometry: how a volume reaches the network (closest-RAS order, foreground crop, the card's spacing) and how its
labels come back onto the input's exact voxel grid; and the one rule for "the same voxel grid"."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, TypeVar

import nibabel as nib
import numpy as np
import torch
from torch.nn import functional

from .card import ModelCard
from .device import stage, to_device
from .io import Volume
from .postprocess import labels_from_probabilities
from .preprocessing import intensity_range, require_contrast, rescale
from .shapes import Shape3, Spacing3, shape3, spacing3

__all__ = [
    "GRID_TOLERANCE_MM",
    "Prepared",
    "canonical_orientation",
    "canonical_spacing",
    "index_from_canonical",
    "needs_resampling",
    "prepare",
    "resampled_shape",
    "resize",
    "restore",
    "same_affine",
    "same_grid",
    "to_canonical",
]

# Affines this close (in mm) describe one voxel grid: a mask and its image written by different tools differ by less.
GRID_TOLERANCE_MM = 1e-3
_RAS = np.array([[0, 1], [1, 1], [2, 1]], dtype=float)
ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)


def same_affine(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two voxel-to-world affines place voxels within GRID_TOLERANCE_MM of each other."""
    return bool(np.allclose(a, b, atol=GRID_TOLERANCE_MM))


def same_grid(a: Volume, b: Volume) -> bool:
    """Whether two volumes lie on one voxel grid: the same shape, and affines within GRID_TOLERANCE_MM."""
    return a.shape == b.shape and same_affine(a.affine, b.affine)


def canonical_orientation(volume: Volume) -> np.ndarray:
    """nibabel orientation array mapping the volume's voxel axes to the closest RAS axes."""
    return nib.orientations.io_orientation(volume.affine)


def to_canonical(array: ArrayT, orientation: np.ndarray) -> ArrayT:
    """Permute/flip the last three axes of `array` (a numpy array or a tensor on any device) into closest-RAS order,
    as nibabel's `apply_orientation` does: flips, then the permutation (no resampling; a view where the library
    allows one: numpy flips are views, torch flips copy)."""
    leading: int = array.ndim - 3
    flips = [leading + axis for axis, (_, flip) in enumerate(orientation) if flip < 0]
    order = [*range(leading), *(leading + int(axis) for axis in np.argsort(orientation[:, 0]))]
    if isinstance(array, torch.Tensor):
        flipped = torch.flip(array, flips) if flips else array
        return flipped.permute(order)
    return (np.flip(array, tuple(flips)) if flips else array).transpose(order)


def from_canonical(array: ArrayT, orientation: np.ndarray) -> ArrayT:
    """Inverse of `to_canonical`: back to the input's voxel order, exactly (a contiguous numpy array, or a tensor
    view on its device)."""
    inverse = nib.orientations.ornt_transform(_RAS, orientation)
    back = to_canonical(array, inverse)
    return back if isinstance(back, torch.Tensor) else np.ascontiguousarray(back)


def canonical_spacing(volume: Volume, orientation: np.ndarray) -> Spacing3:
    """Voxel spacing (mm) along the canonical axes."""
    spacing = [0.0, 0.0, 0.0]
    for source_axis, (target_axis, _) in enumerate(orientation):
        spacing[int(target_axis)] = volume.spacing_mm[source_axis]
    return spacing3(spacing)


def index_from_canonical(index: Sequence[int], orientation: np.ndarray, shape: Sequence[int]) -> Shape3:
    """The file's voxel index `(i, j, k)` of the voxel at canonical `index` (x, y, z), for a file grid of `shape`.

    `to_canonical(data, orientation)[x, y, z] == data[index_from_canonical((x, y, z), orientation, data.shape)]`.
    """
    voxel = [0, 0, 0]
    for axis, (target, flip) in enumerate(orientation):  # to_canonical moves file axis `axis` to `target`
        position = int(index[int(target)])
        voxel[axis] = position if flip > 0 else int(shape[axis]) - 1 - position
    return shape3(voxel)


@dataclass(frozen=True)
class Crop:
    """A box `[start, stop)` per axis inside an array of shape `full_shape`."""

    start: Shape3
    stop: Shape3
    full_shape: Shape3

    @property
    def slices(self) -> tuple[slice, slice, slice]:
        i, j, k = (slice(a, b) for a, b in zip(self.start, self.stop, strict=True))
        return i, j, k

    @property
    def shape(self) -> Shape3:
        return shape3(b - a for a, b in zip(self.start, self.stop, strict=True))


def foreground_crop(volume: torch.Tensor, margin: int, background: float = 0.0) -> Crop:
    """Bounding box of voxels above `background`, grown by `margin` voxels and clipped to the volume.

    Reduced where the volume lives: only the three per-axis profiles (a few hundred booleans) reach the host.
    A volume with no such voxel keeps its full extent.
    """
    shape = shape3(volume.shape)
    # Reduced in memory order (an F-ordered NIfTI volume is not C-ordered), over uint8: torch's strided bool `any`
    # is ~7x slower on a CPU. Two passes over the volume, then over planes.
    order = sorted(range(3), key=lambda axis: -volume.stride()[axis])
    present = (volume > background).permute(order).view(torch.uint8)
    inner, outer = present.amax(dim=0), present.amax(dim=2)  # (n1, n2) and (n0, n1) in memory order
    by_memory_axis = [outer.amax(dim=1), inner.amax(dim=1), inner.amax(dim=0)]
    profiles = torch.cat([by_memory_axis[order.index(axis)] for axis in range(3)]).cpu().numpy()
    flags = np.split(profiles, np.cumsum(shape)[:2])
    start, stop = [], []
    for axis, flag in enumerate(flags):
        found = np.flatnonzero(flag)
        if found.size == 0:
            return Crop((0, 0, 0), shape, shape)
        start.append(max(0, int(found[0]) - margin))
        stop.append(min(shape[axis], int(found[-1]) + 1 + margin))
    return Crop(shape3(start), shape3(stop), shape)


def uncrop(array: torch.Tensor, crop: Crop, fill: float = 0, *, out: torch.Tensor | None = None) -> torch.Tensor:
    """Place `array` (the cropped region, with any leading axes) back into a tensor of the full shape, `fill`
    around it: a new one, or `out` (of the full shape, in whatever memory layout it was made)."""
    if out is None:
        out = torch.empty((*array.shape[:-3], *crop.full_shape), dtype=array.dtype, device=array.device)
    out.fill_(fill)
    i, j, k = crop.slices
    out[..., i, j, k] = array
    return out


def uncrop_probabilities(probabilities: torch.Tensor, crop: Crop) -> torch.Tensor:
    """Class probabilities `(C, ...)` of the cropped region back on the full grid: outside it, certain background."""
    full = torch.zeros(
        (probabilities.shape[0], *crop.full_shape), dtype=probabilities.dtype, device=probabilities.device
    )
    full[0] = 1.0
    i, j, k = crop.slices
    full[:, i, j, k] = probabilities
    return full


def needs_resampling(spacing_mm: Spacing3, target_mm: Spacing3 | None, tolerance: float = 0.05) -> bool:
    """Whether spacings differ from the model's by more than `tolerance` (relative) on any axis."""
    if target_mm is None:
        return False
    return any(abs(s - t) > tolerance * t for s, t in zip(spacing_mm, target_mm, strict=True))


def resampled_shape(shape: Shape3, spacing_mm: Spacing3, target_mm: Spacing3) -> Shape3:
    """Grid size covering the same field of view at `target_mm` spacing."""
    return shape3(max(1, round(n * s / t)) for n, s, t in zip(shape, spacing_mm, target_mm, strict=True))


def resize(array: torch.Tensor, shape: Shape3, mode: Literal["trilinear", "nearest"] = "trilinear") -> torch.Tensor:
    """Resize the last three axes of an `(I, J, K)` or `(C, I, J, K)` tensor to `shape`, as float32 on its device:
    trilinear, or nearest neighbour (for labels, which must never be interpolated)."""
    batch = array.to(torch.float32).reshape(1, -1, *array.shape[-3:])
    corners = False if mode == "trilinear" else None  # nearest takes no align_corners
    out = functional.interpolate(batch, size=shape, mode=mode, align_corners=corners)
    return out.reshape(*array.shape[:-3], *shape)


@dataclass(frozen=True)
class Prepared:
    """The network-ready tensor and what `restore` needs to map results back to the input grid.

    Attributes:
        array: `(X, Y, Z)` float32 in [0, 1] on the segmenter's device: canonical order, normalised, cropped, at the
            card's spacing.
        orientation: nibabel orientation array from the input's voxel axes to closest RAS.
        crop: the foreground box in the canonical grid, None when the card crops nothing.
        cropped_shape: the canonical grid after the crop, before resampling (where labels are restored to).
        resampled: whether `array` was resized to the card's spacing.
    """

    array: torch.Tensor
    orientation: np.ndarray
    crop: Crop | None
    cropped_shape: Shape3
    resampled: bool

    @property
    def shape(self) -> Shape3:
        """The grid the network sees (before padding)."""
        return shape3(self.array.shape)


def prepare(
    volume: Volume, card: ModelCard, device: torch.device | None = None, *, staged: torch.Tensor | None = None
) -> Prepared:
    """Bring `volume` to the network, on `device` (default: the CPU): closest-RAS order, its foreground crop, the
    card's intensity normalisation and its spacing (when the input's differs by more than 5%).

    Args:
        volume: the input.
        card: the model card (input contract and crop settings).
        device: where the network runs: every step runs there.
        staged: `volume.data` already staged for the device (`unet3d.device.stage`, e.g. on a reader thread).
    """
    device = device or torch.device("cpu")
    orientation = canonical_orientation(volume)
    data = to_device(stage(volume.data, device) if staged is None else staged, device)
    canonical = to_canonical(data, orientation)
    low, high = intensity_range(canonical, card.input.clip_percentiles)
    require_contrast(low, high)
    spec = card.inference
    # The box of what normalises above 0 is the box of what lies above `low`: only the crop is normalised.
    crop = foreground_crop(canonical, spec.crop_margin, background=low) if spec.crop_foreground else None
    array = rescale(canonical[crop.slices] if crop else canonical, low, high)
    cropped_shape = shape3(array.shape)
    spacing = canonical_spacing(volume, orientation)
    target = card.input.spacing_mm
    resampled = needs_resampling(spacing, target)
    if resampled and target is not None:
        array = resize(array, resampled_shape(cropped_shape, spacing, target))
    return Prepared(array, orientation, crop, cropped_shape, resampled)


def restore(
    labels: torch.Tensor,
    probabilities: torch.Tensor | None,
    prepared: Prepared,
    threshold: float | None,
    *,
    keep: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Map the network's labels (and probabilities) back onto the input's voxel grid, where they are (a GPU's
    results stay on it): undo the resampling, the crop and the reorientation, in that order.

    Args:
        labels: `(X, Y, Z)` uint8 on the prepared grid.
        probabilities: `(C, X, Y, Z)` on the prepared grid; required when the input was resampled (labels are then
            taken again from the probabilities resized back, never from resized labels).
        prepared: what `prepare` returned for this input.
        threshold: the binary threshold the labels were taken with (None: argmax).
        keep: whether to return the probabilities on the input grid too.

    Returns:
        `(mask, probabilities)` on the labels' device: the uint8 mask `(I, J, K)` on the input grid (Fortran-ordered)
        and the probabilities `(C, I, J, K)` (None unless `keep`), as views in the input's axis order.
    """
    if prepared.resampled and probabilities is not None:
        probabilities = resize(probabilities, prepared.cropped_shape)
        labels = labels_from_probabilities(probabilities, threshold)
    if not keep:
        probabilities = None
    # Labels land in a grid laid out so that, back in the file's axis order, it is Fortran-ordered as NIfTI stores
    # voxels: the mask then leaves the device, and is written, without another transposing copy.
    full = _nifti_ordered(labels, prepared)
    if prepared.crop is not None:
        uncrop(labels, prepared.crop, out=full)
        if probabilities is not None:
            probabilities = uncrop_probabilities(probabilities, prepared.crop)
    else:
        full.copy_(labels)
    mask = from_canonical(full, prepared.orientation)
    if probabilities is not None:
        probabilities = from_canonical(probabilities, prepared.orientation)
    return mask, probabilities


def _nifti_ordered(labels: torch.Tensor, prepared: Prepared) -> torch.Tensor:
    """An empty uint8 canonical grid (the crop's full shape) whose file-order view is Fortran-ordered."""
    shape = prepared.crop.full_shape if prepared.crop is not None else prepared.cropped_shape
    file_shape = [shape[int(target)] for target, _ in prepared.orientation]
    fortran = torch.empty(file_shape[::-1], dtype=torch.uint8, device=labels.device).permute(2, 1, 0)
    return fortran.permute([int(axis) for axis in np.argsort(prepared.orientation[:, 0])])  # as to_canonical permutes
