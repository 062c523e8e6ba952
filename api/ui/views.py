"""The page's three slice views: from the controls' values to PNG files, and from a click back to slice indices.

Also where the views open (through the foreground's centre, on this volume's default window) and the window sliders'
range and step. No Gradio here: a `Review` and `ViewInputs` in, file paths and numbers out.
"""

from __future__ import annotations

import math
import shutil
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .rendering import PLANE_AXIS, PLANES, Plane, Style, render, voxel_at
from .review import Review, default_cursor, default_window, most_uncertain
from .state import ViewInputs, plane_indices, point_at

# Rendered views older than this are deleted from the review's folder (Gradio has copied them by then).
VIEW_FILE_TTL_S = 60.0


def style_for(review: Review, inputs: ViewInputs) -> Style:
    """The `rendering.Style` for these control values."""
    names = review.class_names
    half = max(float(inputs.window), 1e-3) / 2
    return Style(
        window=(float(inputs.level) - half, float(inputs.level) + half),
        opacity=float(inputs.opacity),
        visible=frozenset(names.index(n) for n in inputs.visible if n in names),
        overlay=inputs.overlay,
        cursor=inputs.point if inputs.crosshair else None,
    )


def write_views(review: Review, inputs: ViewInputs) -> list[str]:
    """The axial, coronal and sagittal pictures as PNG files in the review's folder, named after what they show
    (`<stem>_<plane>_<slice>.png`: the name a downloaded view keeps)."""
    style = style_for(review, inputs)
    views_folder = review.workdir / "views"
    views_folder.mkdir(exist_ok=True)
    _prune(views_folder)
    # One folder per render, so that every picture keeps that name.
    folder = views_folder / uuid.uuid4().hex[:8]
    folder.mkdir()
    stem = review.files[0].name.removesuffix("_mask.nii.gz")
    return [
        _write_png(render(review.layers, plane, index, style), folder / f"{stem}_{plane}_{index:03d}.png")
        for plane, index in zip(PLANES, inputs.indices, strict=True)
    ]


def clicked_indices(
    review: Review, plane: Plane, pixel: Sequence[float], indices: tuple[int, int, int]
) -> tuple[int, int, int]:
    """Slice indices (axial, coronal, sagittal) through the voxel under `pixel` ([column, row] of the picture of
    `plane` drawn at `indices`): a click on one view moves the other two there."""
    cursor = point_at(indices)
    voxel = voxel_at(review.layers, plane, cursor[PLANE_AXIS[plane]], (pixel[0], pixel[1]))
    return plane_indices(voxel)


def initial_indices(review: Review) -> tuple[int, int, int]:
    """Slice indices (axial, coronal, sagittal) through the foreground's centre of mass."""
    return plane_indices(default_cursor(review.layers))


def most_uncertain_indices(review: Review) -> tuple[int, int, int] | None:
    """Slice indices (axial, coronal, sagittal) of the most uncertain slices (None without an uncertainty map)."""
    target = most_uncertain(review.layers)
    return None if target is None else plane_indices(target)


@dataclass(frozen=True)
class WindowRange:
    """The window sliders' range for one volume: the level from `lowest` to `highest`, the width from `step` to
    `widest`, both on `step` (1, 2 or 5 × 10ⁿ, about 1/500 of the range) so that they show 0.5 or 120, not
    0.5282213745117188."""

    lowest: float
    highest: float
    step: float

    @property
    def widest(self) -> float:
        return _snap(self.highest - self.lowest, self.step)


def window_range(review: Review) -> WindowRange:
    """The window sliders' range: the image's intensity range, on a round step."""
    image = review.layers.image
    low, high = default_window(image)  # wider than the image only when it is constant
    smallest, largest = min(float(image.min()), low), max(float(image.max()), high)
    wanted = (largest - smallest) / 500
    power = 10.0 ** math.floor(math.log10(wanted))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= wanted * (1 - 1e-9))
    step = _snap(step, step)
    lowest, highest = _snap(math.floor(smallest / step) * step, step), _snap(math.ceil(largest / step) * step, step)
    return WindowRange(lowest, highest, step)


def auto_window(review: Review) -> tuple[float, float]:
    """(width, level) of the default grey window for this volume (percentiles of the image), on the sliders' steps."""
    low, high = default_window(review.layers.image)
    step = window_range(review).step  # the window fits the sliders: default_window lies within their range
    return max(_snap(float(high - low), step), step), _snap(float(low + high) / 2, step)


def _snap(value: float, step: float) -> float:
    """`value` on the grid of `step`, written with no more decimals than the step has."""
    decimals = max(0, -math.floor(math.log10(step) + 1e-9))
    return round(round(value / step) * step, decimals)


def _write_png(picture: np.ndarray, path: Path) -> str:
    # compress_level=1: ~7 ms instead of ~30 ms for Pillow's default, at ~15% more bytes.
    Image.fromarray(picture).save(path, format="png", compress_level=1)
    return str(path)


def _prune(folder: Path) -> None:
    cutoff = time.time() - VIEW_FILE_TTL_S
    for old in folder.iterdir():
        if old.stat().st_mtime < cutoff:
            shutil.rmtree(old, ignore_errors=True)
