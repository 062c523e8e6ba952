"""The page's three views of a review: PNG files named after what they show, where they open, the window sliders."""

from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from api.ui.rendering import PLANES, display_size
from api.ui.review import Review, start_review
from api.ui.state import ViewInputs
from api.ui.views import auto_window, initial_indices, most_uncertain_indices, window_range, write_views
from unet3d import Segmenter


@pytest.fixture(scope="module")
def review(tiny_model_dir, tmp_path_factory, nifti) -> Review:
    path = tmp_path_factory.mktemp("volume") / "scan.nii.gz"
    path.write_bytes(nifti.encode(nifti.blob()))
    prediction = Segmenter.from_pretrained(tiny_model_dir).predict(path, probabilities=True)
    review = start_review(prediction, tmp_path_factory.mktemp("review") / "work")
    yield review
    review.close()


def inputs(**overrides) -> ViewInputs:
    values = {"indices": (8, 10, 12), "window": 1000.0, "level": 500.0, "opacity": 0.4, "visible": ("shell", "core"),
              "overlay": "classes", "crosshair": True}  # fmt: skip
    return ViewInputs(**(values | overrides))


def test_views_are_written_as_pngs_named_after_what_they_show_and_old_ones_are_deleted(review):
    paths = write_views(review, inputs())
    for path, plane, index in zip(paths, PLANES, (8, 10, 12), strict=True):
        assert Path(path).name == f"scan_{plane}_{index:03d}.png"  # the name a downloaded view keeps
        with Image.open(path) as picture:
            assert picture.size == display_size(review.layers, plane)
    old = Path(paths[0]).parent
    os.utime(old, (time.time() - 120, time.time() - 120))
    again = write_views(review, inputs())  # same names, another folder; views a minute old are deleted
    assert Path(again[0]).name == Path(paths[0]).name and Path(again[0]).parent != old
    assert not old.exists() and Path(again[0]).is_file()


def test_views_open_through_the_foreground_and_jump_to_the_most_uncertain_slices(review):
    entropy = np.zeros(review.layers.shape, np.float16)
    entropy[3, 5, 7] = 1.0  # (x, y, z): sagittal 3, coronal 5, axial 7
    mask = np.zeros(review.layers.shape, np.uint8)
    mask[4, 6, 10] = 1
    moved = replace(review, layers=replace(review.layers, entropy=entropy, mask=mask))
    assert most_uncertain_indices(moved) == (7, 5, 3)  # slider order: axial, coronal, sagittal
    assert initial_indices(moved) == (10, 6, 4)
    assert most_uncertain_indices(replace(review, layers=replace(review.layers, entropy=None))) is None


@pytest.mark.parametrize(
    ("low", "high", "step"),
    [(0.003, 230.9, 0.5), (-1024.0, 3071.0, 10.0), (0.0, 1.0, 0.002), (-3.2, 7.7, 0.05), (5.0, 5.0, 0.002)],
)
def test_window_sliders_use_round_steps_and_hold_the_default_window(review, low, high, step):
    image = np.linspace(low, high, review.layers.image.size, dtype=np.float32).reshape(review.layers.shape)
    review = replace(review, layers=replace(review.layers, image=image))
    sliders = window_range(review)
    assert sliders.step == step
    assert sliders.lowest <= low and sliders.highest >= high
    assert sliders.highest - sliders.lowest < high - low + 2 * step + 1.0
    width, level = auto_window(review)
    for value in (width, level, sliders.lowest, sliders.highest, sliders.widest):  # on the step's grid, short
        assert abs(value / step - round(value / step)) < 1e-6 and len(repr(value)) <= 9, value
    assert step <= width <= sliders.widest and sliders.lowest <= level <= sliders.highest
