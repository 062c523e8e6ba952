"""Slice pictures: radiological orientation and its letters, square millimetres, overlays, window/level, crosshair."""

from __future__ import annotations

import numpy as np
import pytest

from api.ui.rendering import (
    CONFUSED,
    FALSE_NEGATIVE,
    FALSE_POSITIVE,
    OVERLAYS,
    PLANE_AXIS,
    Layers,
    Style,
    display_size,
    hex_to_rgb,
    missing_overlay_data,
    render,
    voxel_at,
)

RED, GREEN = "#ff0000", "#00ff00"
SHAPE = (20, 30, 40)  # x (→ right), y (→ anterior), z (→ superior)


def layers_with(mask: np.ndarray, **extra) -> Layers:
    image = np.zeros(mask.shape, np.float32)
    return Layers(image, mask, (1.0, 1.0, 1.0), ("#000000", RED, GREEN), **extra)


def coloured(picture: np.ndarray, color: str, tolerance: int = 40) -> np.ndarray:
    return np.all(np.abs(picture.astype(int) - np.array(hex_to_rgb(color))) < tolerance, axis=-1)


def centre_of(pixels: np.ndarray) -> tuple[float, float]:
    rows, cols = np.nonzero(pixels)
    assert rows.size, "nothing drawn in the expected colour"
    return rows.mean() / pixels.shape[0], cols.mean() / pixels.shape[1]


SOLID = Style(window=(0.0, 1.0), opacity=1.0, visible=frozenset({1, 2}))


@pytest.mark.parametrize(
    ("plane", "index", "marker", "expected_side"),
    [
        ("axial", 20, (slice(15, 20), slice(0, 30), 20), "left"),  # patient right → viewer's left
        ("axial", 20, (slice(0, 20), slice(25, 30), 20), "top"),  # anterior → top
        ("coronal", 15, (slice(0, 20), 15, slice(35, 40)), "top"),  # superior → top
        ("coronal", 15, (slice(15, 20), 15, slice(0, 40)), "left"),  # right → left
        ("sagittal", 10, (10, slice(25, 30), slice(0, 40)), "left"),  # anterior → left
    ],
)
def test_views_follow_the_radiological_convention(plane, index, marker, expected_side):
    mask = np.zeros(SHAPE, np.uint8)
    mask[marker] = 1
    row, col = centre_of(coloured(render(layers_with(mask), plane, index, SOLID), RED))
    position = {"left": col, "top": row}[expected_side]
    assert position < 0.25


def test_anisotropic_voxels_are_drawn_in_square_millimetres():
    layers = Layers(np.zeros((10, 10, 10), np.float32), np.zeros((10, 10, 10), np.uint8), (1.0, 1.0, 4.0), ("#000000",))
    width, height = display_size(layers, "coronal")
    assert height == pytest.approx(4 * width, rel=0.02)
    axial_width, axial_height = display_size(layers, "axial")
    assert axial_width == axial_height == width


def test_hidden_classes_are_not_drawn():
    mask = np.zeros(SHAPE, np.uint8)
    mask[:10, :, :] = 1
    mask[10:, :, :] = 2
    only_green = Style(window=(0.0, 1.0), opacity=1.0, visible=frozenset({2}))
    picture = render(layers_with(mask), "axial", 5, only_green)
    assert not coloured(picture, RED).any()
    assert coloured(picture, GREEN).any()


def test_opacity_blends_the_class_colour_with_the_image():
    mask = np.ones(SHAPE, np.uint8)
    half = Style(window=(0.0, 1.0), opacity=0.5, visible=frozenset({1}))
    picture = render(layers_with(mask), "axial", 5, half)
    centre = picture[picture.shape[0] // 2, picture.shape[1] // 2]
    assert 110 < centre[0] < 145
    assert centre[1] < 10


def test_window_maps_low_to_black_and_high_to_white():
    image = np.zeros(SHAPE, np.float32)
    image[:10] = 50.0
    image[10:] = 500.0
    layers = Layers(image, np.zeros(SHAPE, np.uint8), (1.0, 1.0, 1.0), ("#000000",))
    picture = render(layers, "axial", 5, Style(window=(100.0, 300.0)))
    row = picture.shape[0] // 2
    # Radiological: x < 10 (patient left) is on the viewer's right.
    assert picture[row, -picture.shape[1] // 4].max() == 0
    assert picture[row, picture.shape[1] // 4].min() == 255


def test_error_overlay_marks_false_positives_and_false_negatives():
    prediction = np.zeros(SHAPE, np.uint8)
    reference = np.zeros(SHAPE, np.uint8)
    prediction[:10] = 1  # extra on the patient's left half (viewer's right)
    reference[10:] = 1  # missed on the patient's right half (viewer's left)
    style = Style(window=(0.0, 1.0), opacity=1.0, visible=frozenset({1}), overlay="errors")
    picture = render(layers_with(prediction, reference=reference), "axial", 5, style)
    _, fp_col = centre_of(coloured(picture, FALSE_POSITIVE))
    _, fn_col = centre_of(coloured(picture, FALSE_NEGATIVE))
    assert fp_col > 0.5 > fn_col


def test_error_overlay_tells_confusions_between_shown_classes_apart():
    prediction = np.ones(SHAPE, np.uint8)
    reference = np.full(SHAPE, 2, np.uint8)
    layers = layers_with(prediction, reference=reference)
    both = render(
        layers, "axial", 5, Style(window=(0.0, 1.0), opacity=1.0, visible=frozenset({1, 2}), overlay="errors")
    )
    only_one = render(
        layers, "axial", 5, Style(window=(0.0, 1.0), opacity=1.0, visible=frozenset({2}), overlay="errors")
    )
    assert coloured(both, CONFUSED).mean() > 0.9
    assert coloured(only_one, FALSE_NEGATIVE).mean() > 0.9


def test_uncertainty_overlay_colours_only_uncertain_voxels():
    entropy = np.zeros(SHAPE, np.float16)
    entropy[:, 15:, :] = 1.0  # anterior half uncertain → top half of the axial view
    style = Style(window=(0.0, 1.0), opacity=1.0, visible=frozenset({1}), overlay="uncertainty")
    picture = render(layers_with(np.zeros(SHAPE, np.uint8), entropy=entropy), "axial", 5, style)
    top, bottom = picture[: picture.shape[0] // 2 - 2], picture[picture.shape[0] // 2 + 2 :]
    assert top.mean() > 100
    assert bottom.mean() < 5  # nothing but the orientation letters


def test_crosshair_crosses_at_the_cursor_and_leaves_the_voxel_under_it_visible():
    mask = np.zeros(SHAPE, np.uint8)
    plain = render(layers_with(mask), "axial", 5, Style(window=(0.0, 1.0)))
    crossed = render(layers_with(mask), "axial", 5, Style(window=(0.0, 1.0), cursor=(4, 7, 5)))
    height, width = crossed.shape[:2]
    # Radiological screen: x grows to the left, y (anterior) upwards.
    column = round((SHAPE[0] - 1 - 4 + 0.5) * width / SHAPE[0])
    row = round((SHAPE[1] - 1 - 7 + 0.5) * height / SHAPE[1])
    changed = np.any(crossed != plain, axis=-1)
    away = [r for r in range(height) if abs(r - row) > 20 and 40 < r < height - 40]  # off the letters and the gap
    assert all(changed[r, column - 1 : column + 2].any() for r in away), "no vertical line through the cursor"
    across = [c for c in range(width) if abs(c - column) > 20 and 40 < c < width - 40]
    assert all(changed[row - 1 : row + 2, c].any() for c in across), "no horizontal line through the cursor"
    assert not changed[row - 3 : row + 4, column - 3 : column + 4].any()  # the gap around the voxel
    lines = np.argwhere(changed[40:-40, 40:-40]) + 40
    assert all(abs(r - row) <= 1 or abs(c - column) <= 1 for r, c in lines)  # nothing drawn elsewhere


def test_a_slice_index_past_the_volume_shows_its_last_slice():
    mask = np.zeros(SHAPE, np.uint8)
    mask[:, :, -1] = 1  # only the top slice holds the class
    layers = layers_with(mask)
    last = render(layers, "axial", SHAPE[2] - 1, SOLID)
    assert coloured(last, RED).mean() > 0.9
    assert np.array_equal(render(layers, "axial", 10_000, SOLID), last)
    assert np.array_equal(render(layers, "axial", -5, SOLID), render(layers, "axial", 0, SOLID))
    assert not coloured(render(layers, "axial", 0, SOLID), RED).any()


def letter(picture: np.ndarray, side: str) -> np.ndarray:
    """The bright pixels of the orientation letter at `side` of a picture, cropped to the letter."""
    height, width = picture.shape[:2]
    region = {
        "left": (slice(height // 2 - 20, height // 2 + 20), slice(0, 40)),
        "right": (slice(height // 2 - 20, height // 2 + 20), slice(width - 40, width)),
        "top": (slice(0, 40), slice(width // 2 - 20, width // 2 + 20)),
        "bottom": (slice(height - 40, height), slice(width // 2 - 20, width // 2 + 20)),
    }[side]
    bright = picture[region].min(axis=-1) > 150
    rows, cols = np.nonzero(bright)
    assert rows.size, f"no letter on the {side}"
    return bright[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]


def test_each_view_names_its_sides_with_the_patient_directions():
    # A black image, no overlay, no crosshair: the letters are the only bright pixels.
    pictures = {plane: render(layers_with(np.zeros(SHAPE, np.uint8)), plane, 5, SOLID) for plane in PLANE_AXIS}
    for picture in pictures.values():
        height, width = picture.shape[:2]
        bright = picture.min(axis=-1) > 150
        bright[height // 2 - 20 : height // 2 + 20, :40] = bright[height // 2 - 20 : height // 2 + 20, -40:] = False
        bright[:40, width // 2 - 20 : width // 2 + 20] = bright[-40:, width // 2 - 20 : width // 2 + 20] = False
        assert not bright.any(), "a bright pixel away from the four letters"
    shown = {(plane, side): letter(pictures[plane], side) for plane in PLANE_AXIS
             for side in ("left", "right", "top", "bottom")}  # fmt: skip
    # The same letter drawn on two views is the same glyph: patient right on the viewer's left of axial and coronal
    # views, anterior at the top of the axial view and on the left of the sagittal one, superior at the top of both.
    same = [(("axial", "left"), ("coronal", "left")), (("axial", "right"), ("coronal", "right")),
            (("axial", "top"), ("sagittal", "left")), (("axial", "bottom"), ("sagittal", "right")),
            (("coronal", "top"), ("sagittal", "top")), (("coronal", "bottom"), ("sagittal", "bottom"))]  # fmt: skip
    for one, other in same:
        assert np.array_equal(shown[one], shown[other]), (one, other)
    sides = [("axial", "left"), ("axial", "right"), ("axial", "top"), ("axial", "bottom"), ("coronal", "top"),
             ("coronal", "bottom")]  # fmt: skip
    letters = [shown[side] for side in sides]
    for i, one in enumerate(letters):  # R, L, A, P, S, I: six different glyphs
        assert all(not np.array_equal(one, other) for other in letters[i + 1 :])


def test_an_overlay_without_its_data_is_drawn_as_the_classes_and_named():
    mask = np.zeros(SHAPE, np.uint8)
    mask[:10] = 1
    layers = layers_with(mask)
    classes = render(layers, "axial", 5, SOLID)
    for overlay, reason in (("errors", "Errors need a reference mask"), ("uncertainty", "No uncertainty map")):
        assert reason in missing_overlay_data(layers, overlay)
        drawn = render(layers, "axial", 5, Style(window=(0.0, 1.0), opacity=1.0, visible=frozenset({1, 2}),
                                                 overlay=overlay))  # fmt: skip
        assert np.array_equal(drawn, classes), overlay
    assert all(missing_overlay_data(layers, name) is None for name in ("classes", "outlines"))
    assert list(OVERLAYS) == ["classes", "outlines", "errors", "uncertainty"]  # the order the page offers them


@pytest.mark.parametrize("plane", ["axial", "coronal", "sagittal"])
@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (0.8, 1.2, 3.0)])
def test_a_click_on_a_drawn_voxel_finds_that_voxel(plane, spacing):
    voxel = (3, 22, 31)  # off-centre on every axis, so a flip or a swapped axis lands elsewhere
    mask = np.zeros(SHAPE, np.uint8)
    mask[voxel] = 1
    layers = Layers(np.zeros(SHAPE, np.float32), mask, spacing, ("#000000", RED, GREEN))
    index = voxel[PLANE_AXIS[plane]]
    rows, cols = np.nonzero(coloured(render(layers, plane, index, SOLID), RED))
    for row, col in ((rows.min(), cols.min()), (rows.max(), cols.max()), (rows.mean(), cols.mean())):
        assert voxel_at(layers, plane, index, (col, row)) == voxel


def test_a_click_past_the_edge_is_clamped_to_the_volume():
    layers = layers_with(np.zeros(SHAPE, np.uint8))
    width, height = display_size(layers, "axial")
    assert voxel_at(layers, "axial", 99, (-5, -5)) == (SHAPE[0] - 1, SHAPE[1] - 1, SHAPE[2] - 1)
    assert voxel_at(layers, "axial", -3, (width + 5, height + 5)) == (0, 0, 0)


def test_outlines_draw_the_borders_of_shown_classes_and_leave_their_insides_clear():
    mask = np.zeros(SHAPE, np.uint8)
    mask[5:15, 8:22, :] = 1  # a block of class 1 with class 2 inside it
    mask[8:12, 12:18, :] = 2
    style = Style(window=(0.0, 1.0), opacity=1.0, visible=frozenset({1, 2}), overlay="outlines")
    picture = render(layers_with(mask), "axial", 20, style)
    filled = render(layers_with(mask), "axial", 20, Style(window=(0.0, 1.0), opacity=1.0, visible=frozenset({1, 2})))
    red, green = coloured(picture, RED), coloured(picture, GREEN)
    assert 0 < red.sum() < 0.3 * coloured(filled, RED).sum()  # lines, not the area
    assert 0 < green.sum() < 0.5 * coloured(filled, GREEN).sum()
    row, col = centre_of(coloured(filled, GREEN))  # the middle of class 2 stays the grey image (black here)
    middle = picture[round(row * picture.shape[0]), round(col * picture.shape[1])]
    assert middle.max() == 0
    only_inner = Style(window=(0.0, 1.0), opacity=1.0, visible=frozenset({2}), overlay="outlines")
    hidden = render(layers_with(mask), "axial", 20, only_inner)
    assert not coloured(hidden, RED).any() and coloured(hidden, GREEN).any()
    faint = render(
        layers_with(mask),
        "axial",
        20,
        Style(window=(0.0, 1.0), opacity=0.1, visible=frozenset({1}), overlay="outlines"),
    )
    assert faint[..., 0].max() >= 200  # lines stay visible at an opacity that suits areas
