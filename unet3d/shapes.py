"""Shape aliases: the one spelling of a 3D voxel grid's size, its spacing, and the conversion to them."""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["Shape3", "Spacing3", "shape3", "spacing3"]

# A voxel grid's size along (I, J, K), or a window, crop or patch on it.
Shape3 = tuple[int, int, int]
# Voxel edge lengths in mm along three axes.
Spacing3 = tuple[float, float, float]


def shape3(sizes: Iterable[int]) -> Shape3:
    """Three sizes as a `Shape3` of plain ints (e.g. from a numpy shape, a list or a generator)."""
    i, j, k = sizes
    return int(i), int(j), int(k)


def spacing3(sizes: Iterable[float]) -> Spacing3:
    """Three spacings (mm) as a `Spacing3` of plain floats."""
    i, j, k = sizes
    return float(i), float(j), float(k)
