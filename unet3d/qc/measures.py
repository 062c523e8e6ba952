"""What QC measures on one prediction: plain numbers, each computed once, cheaply, from what `predict` already has
(the input's raw voxels, the prepared network input and its labels, the mask on the input grid, the uncertainty the
inference measured). `checks.py` compares them with the card's limits; `python -m train calibrate-qc` chooses the
limits from the same numbers measured on validation scans.

The prepared grid is in closest-RAS order (axis 0 left→right, 1 posterior→anterior, 2 inferior→superior) at the
card's spacing; most measures sample it every second voxel (`STEP`), which keeps QC to tens of milliseconds on a
1 mm brain (`python bench/qc.py`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage
from torch.nn import functional

from ..io import Volume

STEP = 2  # prepared-grid voxels between samples
AIR_HU = -500.0  # below this a voxel is air on a CT (air ≈ -1000 HU); MRI magnitudes are never negative
MAP_GRID = 8  # cells per axis of the layout maps, unless the card's prior has another grid
_OPPOSITE = {"R": "L", "L": "R", "A": "P", "P": "A", "S": "I", "I": "S"}
_SIDES = {"R": "right", "L": "left", "A": "anterior", "P": "posterior", "S": "superior", "I": "inferior"}
# Background voxels enclosed by tissue within one axial slice: in-plane neighbours only.
_IN_PLANE = np.zeros((3, 3, 3), dtype=bool)
_IN_PLANE[:, :, 1] = ndimage.generate_binary_structure(2, 1)


@dataclass(frozen=True)
class Measures:
    """The numbers QC judges (docs/python.md#quality-control says what each means).

    Attributes:
        air_fraction: share of the raw voxels below AIR_HU (air on a CT in Hounsfield units).
        structure: correlation of prepared voxels STEP apart, the mean over the three axes (≈ 0 for noise, > 0.9 for
            any MRI); for a chained model, of the whole scan as its first stage prepared it.
        uncertainty: mean normalised entropy of the class probabilities inside the predicted foreground (None when
            nothing is foreground).
        foreground_ml: volume of every non-background class, mL (with the header's voxel size).
        brain_ml: grey plus white matter, mL; None for a model without both classes.
        fov_fraction: share of the field of view the foreground fills.
        cut_fraction: largest foreground cross-section on a face of the field of view, as a share of its largest
            cross-section parallel to that face (0: not touching; ≈ 1: cut through the middle).
        cut_side: the anatomical side of that face ("superior", ...), "" when nothing touches a face.
        enclosed_background: share of the tissue's filled outline, slice by axial slice, that is background (large
            when skull between brain and scalp is left out and the scalp labelled as tissue).
        maps: `layout_maps` of the prediction (grey, white, intensity); None without grey/white classes or tissue.
    """

    air_fraction: float
    structure: float
    uncertainty: float | None
    foreground_ml: float
    brain_ml: float | None
    fov_fraction: float
    cut_fraction: float
    cut_side: str
    enclosed_background: float
    maps: np.ndarray | None


def measure(
    volume: Volume,
    image: np.ndarray,
    labels: np.ndarray,
    mask: np.ndarray,
    uncertainty: float | None,
    tissues: tuple[int, int] | None,
    *,
    grid: int = MAP_GRID,
    scan: np.ndarray | None = None,
) -> Measures:
    """Measure one prediction.

    Args:
        volume: the input (raw voxels and header).
        image: the network's input, on the host (`geometry.prepare`'s array).
        labels: the network's labels on the prepared grid, on the host.
        mask: the final mask on the input grid.
        uncertainty: `InferenceOutput.uncertainty`.
        tissues: the (grey matter, white matter) class indices; None for a model without them.
        grid: cells per axis of the layout maps (the card's prior's).
        scan: the whole scan prepared, where `image` holds only part of it (a chained model's brain): its structure
            is measured instead of the image's.
    """
    foreground = mask > 0
    voxels = int(np.count_nonzero(foreground))
    voxel_ml = volume.voxel_volume_ml
    brain_ml = None if tissues is None else sum(int(np.count_nonzero(mask == i)) for i in tissues) * voxel_ml
    sample, array = labels[::STEP, ::STEP, ::STEP], image[::STEP, ::STEP, ::STEP]
    cut, side = cut_fraction(foreground, volume.orientation)
    return Measures(
        air_fraction=air_fraction(volume.data),
        structure=structure(image if scan is None else scan),
        uncertainty=uncertainty,
        foreground_ml=voxels * voxel_ml,
        brain_ml=brain_ml,
        fov_fraction=voxels / max(mask.size, 1),
        cut_fraction=cut,
        cut_side=side,
        enclosed_background=enclosed_background(sample > 0),
        maps=None if tissues is None else layout_maps(sample, array, tissues, grid),
    )


def air_fraction(raw: np.ndarray) -> float:
    """Share of the raw voxels (every STEP-th along each axis) below AIR_HU."""
    sample = raw[::STEP, ::STEP, ::STEP]
    return float(np.count_nonzero(sample < AIR_HU)) / max(sample.size, 1)


def structure(array: np.ndarray) -> float:
    """Mean correlation between neighbouring samples (STEP voxels apart) along each axis of the prepared image."""
    sample = np.ascontiguousarray(array[::STEP, ::STEP, ::STEP], dtype=np.float32)
    correlations = []
    for axis in range(3):
        size = sample.shape[axis]
        if size < 2:
            continue
        first = sample[(slice(None),) * axis + (slice(0, size - 1),)]
        second = sample[(slice(None),) * axis + (slice(1, size),)]
        a, b = first - first.mean(), second - second.mean()
        spread = float(a.std() * b.std())
        correlations.append(float((a * b).mean()) / spread if spread > 0 else 0.0)
    return float(np.mean(correlations)) if correlations else 0.0


def cut_fraction(foreground: np.ndarray, axis_codes: str) -> tuple[float, str]:
    """The largest foreground cross-section on a face of the input's grid relative to the largest one parallel to
    it (estimated every STEP-th voxel), and the anatomical side of that face (from the axis codes, e.g. "RAS")."""
    worst, side = 0.0, ""
    sample = foreground[::STEP, ::STEP, ::STEP]
    for axis in range(3):
        others = tuple(a for a in range(3) if a != axis)
        largest = int(np.count_nonzero(sample, axis=others).max(initial=0)) * STEP**2
        if largest == 0:
            continue
        for end, code in ((0, _OPPOSITE[axis_codes[axis]]), (-1, axis_codes[axis])):
            share = min(1.0, int(np.count_nonzero(np.take(foreground, end, axis=axis))) / largest)
            if share > worst:
                worst, side = share, _SIDES[code]
    return worst, side


def enclosed_background(tissue: np.ndarray) -> float:
    """Share of the tissue's filled outline, slice by axial slice, that is not tissue (`tissue`: a sampled mask)."""
    components, count = ndimage.label(~tissue, structure=_IN_PLANE)
    edges = np.concatenate([components[0].ravel(), components[-1].ravel(),
                            components[:, 0].ravel(), components[:, -1].ravel()])  # fmt: skip
    inside = np.ones(count + 1, dtype=bool)
    inside[edges] = False
    inside[0] = False
    enclosed = int(np.count_nonzero(inside[components]))
    filled = enclosed + int(np.count_nonzero(tissue))
    return enclosed / filled if filled else 0.0


def layout_maps(
    labels: np.ndarray, array: np.ndarray, tissues: tuple[int, int], grid: int = MAP_GRID
) -> np.ndarray | None:
    """`(3, grid, grid, grid)`: grey fraction, white fraction and mean intensity per cell of a lattice over the
    labelled tissue's bounding box (sampled labels and prepared intensities); None when nothing is labelled."""
    grey, white = tissues
    tissue = labels > 0
    if not tissue.any():
        return None
    box = []
    for axis in range(3):
        present = np.flatnonzero(tissue.any(axis=tuple(a for a in range(3) if a != axis)))
        box.append(slice(int(present[0]), int(present[-1]) + 1))
    crop, image = labels[tuple(box)], array[tuple(box)]
    channels = torch.from_numpy(np.stack([crop == grey, crop == white, image]).astype(np.float32))
    return functional.adaptive_avg_pool3d(channels[None], grid)[0].numpy()
