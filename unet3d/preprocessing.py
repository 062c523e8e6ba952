"""Intensity normalisation, foreground cropping and padding, as the model card prescribes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional

from .errors import InvalidVolumeError

# Percentiles are estimated on a strided subsample above this many voxels: the estimate is within
# a grey level of the exact value on real scans and costs a fraction of a full np.percentile.
_PERCENTILE_SAMPLE = 2_000_000


def normalize_minmax(volume: np.ndarray, clip_percentiles: tuple[float, float] | None = (1.0, 99.0)) -> np.ndarray:
    """Clip to intensity percentiles, then rescale to [0, 1].

    Args:
        volume: `(I, J, K)` intensities, any real dtype; not modified.
        clip_percentiles: (low, high) in [0, 100], or None to use the plain min and max.

    Returns:
        A new float32 array in [0, 1].

    Raises:
        InvalidVolumeError: the volume is constant (nothing to segment) after clipping.
    """
    low, high = intensity_range(volume, clip_percentiles)
    if not high > low:
        raise InvalidVolumeError(
            f"the volume is constant (all voxels ≈ {low:g}) after percentile clipping: nothing to segment"
        )
    out = np.clip(volume, low, high).astype(np.float32, copy=False)
    out -= np.float32(low)
    out *= np.float32(1.0 / (high - low))
    return out


def intensity_range(volume: np.ndarray, clip_percentiles: tuple[float, float] | None) -> tuple[float, float]:
    """The (low, high) intensities that map to 0 and 1."""
    if clip_percentiles is None:
        return float(volume.min()), float(volume.max())
    flat = volume.reshape(-1)
    if flat.size > _PERCENTILE_SAMPLE:
        flat = flat[:: flat.size // _PERCENTILE_SAMPLE]
    low, high = np.percentile(flat, clip_percentiles)
    if not high > low:
        # Mostly-constant volumes (e.g. a small object on a flat background): fall back to min/max.
        low, high = float(volume.min()), float(volume.max())
    return float(low), float(high)


@dataclass(frozen=True)
class Crop:
    """A box `[start, stop)` per axis inside an array of shape `full_shape`."""

    start: tuple[int, int, int]
    stop: tuple[int, int, int]
    full_shape: tuple[int, int, int]

    @property
    def slices(self) -> tuple[slice, slice, slice]:
        return tuple(slice(a, b) for a, b in zip(self.start, self.stop, strict=True))  # type: ignore[return-value]

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(b - a for a, b in zip(self.start, self.stop, strict=True))  # type: ignore[return-value]


def foreground_crop(volume: np.ndarray, margin: int, background: float = 0.0) -> Crop:
    """Bounding box of voxels above `background`, grown by `margin` voxels and clipped to the volume.

    A volume with no such voxel keeps its full extent.
    """
    shape = volume.shape
    start, stop = [], []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        present = np.flatnonzero((volume > background).any(axis=other))
        if present.size == 0:
            return Crop((0, 0, 0), tuple(shape), tuple(shape))  # type: ignore[arg-type]
        start.append(max(0, int(present[0]) - margin))
        stop.append(min(shape[axis], int(present[-1]) + 1 + margin))
    return Crop(tuple(start), tuple(stop), tuple(shape))  # type: ignore[arg-type]


def uncrop(array: np.ndarray, crop: Crop, fill: int | float = 0) -> np.ndarray:
    """Place `array` (the cropped region, with any leading axes) back into an array of the full shape."""
    out = np.full((*array.shape[:-3], *crop.full_shape), fill, dtype=array.dtype)
    i, j, k = crop.slices
    out[..., i, j, k] = array
    return out


def pad_to_multiple(
    volume: np.ndarray, multiple: int, value: float = 0.0
) -> tuple[np.ndarray, tuple[tuple[int, int], ...]]:
    """Pad the last three axes up to a multiple of `multiple`, split evenly before and after.

    Returns:
        The padded array (a new array, or `volume` itself when nothing is needed) and the pads per axis.
    """
    pads = []
    for size in volume.shape[-3:]:
        total = (-size) % multiple
        pads.append((total // 2, total - total // 2))
    if not any(sum(p) for p in pads):
        return volume, tuple(pads)
    full = [(0, 0)] * (volume.ndim - 3) + pads
    return np.pad(volume, full, mode="constant", constant_values=value), tuple(pads)


def unpad(array: np.ndarray, pads: tuple[tuple[int, int], ...]) -> np.ndarray:
    """Inverse of `pad_to_multiple` on the last three axes."""
    i, j, k = (slice(before, array.shape[-3 + axis] - after) for axis, (before, after) in enumerate(pads))
    return array[..., i, j, k]


def needs_resampling(
    spacing_mm: tuple[float, float, float], target_mm: tuple[float, float, float] | None, tolerance: float = 0.05
) -> bool:
    """Whether spacings differ from the model's by more than `tolerance` (relative) on any axis."""
    if target_mm is None:
        return False
    return any(abs(s - t) > tolerance * t for s, t in zip(spacing_mm, target_mm, strict=True))


def resampled_shape(
    shape: tuple[int, int, int], spacing_mm: tuple[float, float, float], target_mm: tuple[float, float, float]
) -> tuple[int, int, int]:
    """Grid size covering the same field of view at `target_mm` spacing."""
    return tuple(max(1, round(n * s / t)) for n, s, t in zip(shape, spacing_mm, target_mm, strict=True))  # type: ignore[return-value]


def resize(array: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Trilinear resize of the last three axes of a float array (`(I, J, K)` or `(C, I, J, K)`) to `shape`."""
    tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    batch = tensor.reshape(1, -1, *tensor.shape[-3:])
    out = functional.interpolate(batch, size=shape, mode="trilinear", align_corners=False)
    return out.reshape(*array.shape[:-3], *shape).numpy()
