"""One slice picture from a review's arrays: grey image with window/level, an overlay, the crosshair and the
orientation letters; and the overlays themselves (`OVERLAYS`).

Pure numpy + Pillow, no Gradio: arrays in, an `(H, W, 3)` uint8 picture out. Arrays are in closest-RAS voxel
order `(x, y, z)` (see `unet3d.io.to_canonical`); views follow the radiological convention (patient right on the
viewer's left; sagittal with anterior on the left) and are drawn with square millimetres, whatever the spacing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np
from PIL import Image, ImageDraw, ImageFont

Plane = Literal["axial", "coronal", "sagittal"]
PLANES: tuple[Plane, ...] = ("axial", "coronal", "sagittal")
# The array axis each plane slices through, and the screen letters (left, right, top, bottom).
PLANE_AXIS: dict[Plane, int] = {"axial": 2, "coronal": 1, "sagittal": 0}
PLANE_LETTERS: dict[Plane, tuple[str, str, str, str]] = {
    "axial": ("R", "L", "A", "P"),
    "coronal": ("R", "L", "S", "I"),
    "sagittal": ("A", "P", "S", "I"),
}
FALSE_POSITIVE = "#ff3b30"
FALSE_NEGATIVE = "#2f80ff"
CONFUSED = "#e040fb"
DISPLAY_PX = 512
CURSOR_GAP_PX = 6
# Inferno, sampled at 9 stops: perceptually ordered and readable on a grey image.
_INFERNO = ["#000004", "#1b0c41", "#4a0c6b", "#781c6d", "#a52c60", "#cf4446", "#ed6925", "#fb9b06", "#fcffa4"]


@dataclass(frozen=True)
class Layers:
    """The cached arrays of one review, all `(x, y, z)` closest-RAS.

    Attributes:
        image: intensities, float32.
        mask: predicted class indices, uint8.
        spacing_mm: voxel size along x, y, z.
        colors: `#rrggbb` per class index.
        entropy: normalised voxel entropy in [0, 1] (float16), when probabilities were computed.
        reference: reference class indices (uint8), when a reference mask was attached.
    """

    image: np.ndarray
    mask: np.ndarray
    spacing_mm: tuple[float, float, float]
    colors: tuple[str, ...]
    entropy: np.ndarray | None = None
    reference: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, int, int]:
        x, y, z = self.mask.shape
        return int(x), int(y), int(z)


@dataclass(frozen=True)
class Style:
    """How to draw: intensity window, overlay (a key of `OVERLAYS`) and opacity, visible classes, crosshair position."""

    window: tuple[float, float]
    opacity: float = 0.45
    visible: frozenset[int] = frozenset()
    overlay: str = "classes"
    cursor: tuple[int, int, int] | None = None


def hex_to_rgb(color: str) -> tuple[int, int, int]:
    """`"#e69f00"` → `(230, 159, 0)`."""
    value = color.lstrip("#")
    return int(value[0:2], 16), int(value[2:4], 16), int(value[4:6], 16)


def render(layers: Layers, plane: Plane, index: int, style: Style) -> np.ndarray:
    """Draw slice `index` of `plane` as an `(H, W, 3)` uint8 picture about `DISPLAY_PX` pixels on its long side.

    An overlay whose data `layers` lacks is drawn as the classes (see `missing_overlay_data`).
    """
    axis = PLANE_AXIS[plane]
    index = int(np.clip(index, 0, layers.shape[axis] - 1))
    grey = _window(_screen(_cut(layers.image, axis, index)), style.window)
    size = display_size(layers, plane)
    base = Image.fromarray(grey, "L").resize(size, Image.Resampling.BILINEAR).convert("RGBA")
    overlay = OVERLAYS[shown_overlay(layers, style.overlay)]
    picture = Image.alpha_composite(base, Image.fromarray(overlay.draw(layers, axis, index, style, size), "RGBA"))
    _decorate(picture, layers, plane, style.cursor)
    return np.asarray(picture.convert("RGB"))


def display_size(layers: Layers, plane: Plane) -> tuple[int, int]:
    """(width, height) in pixels; one scale (pixels per mm) shared by the three planes."""
    extent_mm = [n * s for n, s in zip(layers.shape, layers.spacing_mm, strict=True)]
    scale = DISPLAY_PX / max(extent_mm)
    cols, rows = _screen_axes(plane)
    return max(round(extent_mm[cols] * scale), 1), max(round(extent_mm[rows] * scale), 1)


def voxel_at(layers: Layers, plane: Plane, index: int, pixel: tuple[float, float]) -> tuple[int, int, int]:
    """The `(x, y, z)` voxel drawn at `pixel` (column, row of the picture `render` made of slice `index`).

    The inverse of `render`'s screen mapping, so that a click on a view can move the other two views there;
    a pixel outside the picture is clamped to its edge.
    """
    axis = PLANE_AXIS[plane]
    col_axis, row_axis = _screen_axes(plane)
    width, height = display_size(layers, plane)
    n_cols, n_rows = layers.shape[col_axis], layers.shape[row_axis]
    column = int(np.clip((float(pixel[0]) + 0.5) * n_cols / width, 0, n_cols - 1))
    row = int(np.clip((float(pixel[1]) + 0.5) * n_rows / height, 0, n_rows - 1))
    voxel = [0, 0, 0]
    voxel[axis] = int(np.clip(index, 0, layers.shape[axis] - 1))
    voxel[col_axis], voxel[row_axis] = n_cols - 1 - column, n_rows - 1 - row  # `_screen` flips both
    return voxel[0], voxel[1], voxel[2]


def _screen_axes(plane: Plane) -> tuple[int, int]:
    """The array axes along the picture's columns and rows."""
    col_axis, row_axis = [a for a in range(3) if a != PLANE_AXIS[plane]]
    return col_axis, row_axis


def _cut(volume: np.ndarray, axis: int, index: int) -> np.ndarray:
    # Basic indexing gives a view; np.take would copy through a slow strided path.
    return volume[(slice(None),) * axis + (index,)]


def _screen(plane_values: np.ndarray) -> np.ndarray:
    # (cols-axis, rows-axis) in RAS order → rows top-down (A or S first), columns with R (or A) on the left.
    return np.ascontiguousarray(plane_values[::-1, ::-1].T)


def _window(values: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    low, high = window
    scaled = (values.astype(np.float32) - np.float32(low)) * np.float32(255.0 / max(high - low, 1e-6))
    return np.clip(scaled, 0, 255).astype(np.uint8)


# An overlay's drawing: (layers, axis, slice index, style, picture size) → RGBA at that size.
Draw = Callable[[Layers, int, int, Style, tuple[int, int]], np.ndarray]


def _classes(layers: Layers, axis: int, index: int, style: Style, size: tuple[int, int]) -> np.ndarray:
    """The shown classes, filled in their colours."""
    mask = _screen(_cut(layers.mask, axis, index))
    rgba = np.zeros((*mask.shape, 4), dtype=np.uint8)
    rgba[..., :3] = _class_lut(layers.colors)[mask]
    rgba[..., 3] = np.where(_shown(mask, style), _alpha(style), 0)
    return _enlarge(rgba, size)


def _outlines(layers: Layers, axis: int, index: int, style: Style, size: tuple[int, int]) -> np.ndarray:
    """The shown classes' borders, 2 px on each side of a border (about 1 px once the page fits the picture into its
    panel), each side in its class colour; insides clear. Drawn at the picture's resolution: thin lines, not
    voxel-sized blocks."""
    mask = Image.fromarray(_screen(_cut(layers.mask, axis, index)), "L").resize(size, Image.Resampling.NEAREST)
    labels = np.asarray(mask)
    border = np.zeros(labels.shape, dtype=bool)
    for step in (1, 2):
        vertical, horizontal = labels[step:] != labels[:-step], labels[:, step:] != labels[:, :-step]
        border[step:] |= vertical
        border[:-step] |= vertical
        border[:, step:] |= horizontal
        border[:, :-step] |= horizontal
    rgba = np.zeros((*labels.shape, 4), dtype=np.uint8)
    rgba[..., :3] = _class_lut(layers.colors)[labels]
    # At least 200/255 opaque: thin lines need more than areas to be seen.
    rgba[..., 3] = np.where(border & _shown(labels, style), max(_alpha(style), 200), 0)
    return rgba


def _errors(layers: Layers, axis: int, index: int, style: Style, size: tuple[int, int]) -> np.ndarray:
    """Per shown class: extra (prediction only), missed (reference only), or two shown classes confused; agreement
    faintly in the class colour."""
    assert layers.reference is not None  # render draws this overlay only with one (shown_overlay)
    mask = _screen(_cut(layers.mask, axis, index))
    reference = _screen(_cut(layers.reference, axis, index))
    rgba = np.zeros((*mask.shape, 4), dtype=np.uint8)
    alpha = _alpha(style)
    predicted, expected, wrong = _shown(mask, style), _shown(reference, style), mask != reference
    agree = predicted & ~wrong
    rgba[agree, :3], rgba[agree, 3] = _class_lut(layers.colors)[mask[agree]], alpha // 3
    strong = max(alpha, 170)
    for region, color in (
        (wrong & predicted & ~expected, FALSE_POSITIVE),
        (wrong & expected & ~predicted, FALSE_NEGATIVE),
        (wrong & predicted & expected, CONFUSED),
    ):
        rgba[region, :3], rgba[region, 3] = hex_to_rgb(color), strong
    return _enlarge(rgba, size)


def _uncertainty(layers: Layers, axis: int, index: int, style: Style, size: tuple[int, int]) -> np.ndarray:
    """The voxel entropy on the inferno ramp; certain voxels stay clear."""
    assert layers.entropy is not None  # render draws this overlay only with one (shown_overlay)
    entropy = _screen(_cut(layers.entropy, axis, index)).astype(np.float32)
    rgba = np.zeros((*entropy.shape, 4), dtype=np.uint8)
    rgba[..., :3] = _inferno_lut()[np.clip(entropy * 255, 0, 255).astype(np.uint8)]
    # Twice the opacity: uncertainty is sparse (thin bands along boundaries) and vanishes at the class overlay's.
    rgba[..., 3] = np.clip(entropy / 0.6, 0.0, 1.0) * min(2 * _alpha(style), 255)
    return _enlarge(rgba, size)


@dataclass(frozen=True)
class OverlayKind:
    """One choice of the Overlay control.

    Attributes:
        label: what the page calls it.
        draw: its drawing (see `Draw`).
        needs: the `Layers` field it draws from, when that field may be missing (None: always available).
        missing: what the user is told when `needs` is missing (the views then show the classes).
    """

    label: str
    draw: Draw
    needs: Literal["reference", "entropy"] | None = None
    missing: str = ""


# The overlays, in the order the page offers them. A new one is an entry here (and its drawing function above).
OVERLAYS: dict[str, OverlayKind] = {
    "classes": OverlayKind("Classes", _classes),
    "outlines": OverlayKind("Outlines", _outlines),
    "errors": OverlayKind("Errors vs reference", _errors, needs="reference",
                          missing="Errors need a reference mask: upload one in the Agreement tab."),
    "uncertainty": OverlayKind("Uncertainty", _uncertainty, needs="entropy",
                               missing="No uncertainty map: tick 'Uncertainty map' and segment again."),
}  # fmt: skip
FALLBACK_OVERLAY = "classes"


def missing_overlay_data(layers: Layers, overlay: str) -> str | None:
    """Why `overlay` cannot be drawn from `layers`, as the user is told (None when it can); the views then show the
    classes instead."""
    kind = OVERLAYS.get(overlay)
    if kind is None:
        return f"Unknown overlay {overlay!r}: showing the classes."
    if kind.needs is not None and getattr(layers, kind.needs) is None:
        return f"{kind.missing} Showing the classes."
    return None


def shown_overlay(layers: Layers, overlay: str) -> str:
    """The overlay the views show when `overlay` is chosen: itself, or the classes when its data is missing."""
    return FALLBACK_OVERLAY if missing_overlay_data(layers, overlay) else overlay


def _shown(labels: np.ndarray, style: Style) -> np.ndarray:
    """Where `labels` holds a class the style shows."""
    return np.isin(labels, list(style.visible)) if style.visible else np.zeros(labels.shape, dtype=bool)


def _alpha(style: Style) -> int:
    return round(255 * float(np.clip(style.opacity, 0.0, 1.0)))


def _enlarge(rgba: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A voxel-resolution overlay at the picture's size, each voxel a sharp block."""
    return np.asarray(Image.fromarray(rgba, "RGBA").resize(size, Image.Resampling.NEAREST))


def _decorate(picture: Image.Image, layers: Layers, plane: Plane, cursor: tuple[int, int, int] | None) -> None:
    draw = ImageDraw.Draw(picture, "RGBA")
    width, height = picture.size
    if cursor is not None:
        col_axis, row_axis = _screen_axes(plane)
        n_cols, n_rows = layers.shape[col_axis], layers.shape[row_axis]
        x = (n_cols - 1 - cursor[col_axis] + 0.5) * width / n_cols
        y = (n_rows - 1 - cursor[row_axis] + 0.5) * height / n_rows
        # A gap around the cursor leaves the voxel under it visible.
        for start, end in (((x, 0), (x, y - CURSOR_GAP_PX)), ((x, y + CURSOR_GAP_PX), (x, height)),
                           ((0, y), (x - CURSOR_GAP_PX, y)), ((x + CURSOR_GAP_PX, y), (width, y))):  # fmt: skip
            draw.line([start, end], fill=(255, 214, 10, 130), width=1)
    # Orientation letters on a dark outline, drawn last: readable on white matter and over the crosshair.
    left, right, top, bottom = PLANE_LETTERS[plane]
    placed = (((7, height / 2), left, "lm"), ((width - 7, height / 2), right, "rm"),
              ((width / 2, 6), top, "mt"), ((width / 2, height - 6), bottom, "mb"))  # fmt: skip
    for position, text, anchor in placed:
        draw.text(position, text, fill=(241, 245, 249, 235), font=_font(), anchor=anchor, stroke_width=2,
                  stroke_fill=(2, 6, 23, 220))  # fmt: skip


@lru_cache(maxsize=1)
def _font() -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=20)


@lru_cache(maxsize=32)
def _class_lut(colors: tuple[str, ...]) -> np.ndarray:
    lut = np.zeros((256, 3), dtype=np.uint8)
    for index, color in enumerate(colors[:256]):
        lut[index] = hex_to_rgb(color)
    return lut


@lru_cache(maxsize=1)
def _inferno_lut() -> np.ndarray:
    stops = np.array([hex_to_rgb(c) for c in _INFERNO], dtype=np.float32)
    positions = np.linspace(0.0, 1.0, len(stops))
    grid = np.linspace(0.0, 1.0, 256)
    return np.stack([np.interp(grid, positions, stops[:, c]) for c in range(3)], axis=1).astype(np.uint8)
