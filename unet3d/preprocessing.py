"""Intensity normalisation, as the model card prescribes, and padding to the network's multiple (geometry.py owns
the grid: orientation, foreground crop, resampling)."""

from __future__ import annotations

import numpy as np

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
