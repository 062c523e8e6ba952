"""Mask measurement: the millilitre, the label-mask rules shared by the CLI, HTTP and the UI, per-class statistics."""

import json
import re

import numpy as np
import pytest

from unet3d import LabelMaskError, mask_statistics
from unet3d.io import volume_from_array
from unet3d.stats import label_masks, label_problem, mask_labels, voxel_volume_ml


def test_a_millilitre_comes_from_the_determinant_also_on_a_sheared_grid():
    sheared = np.eye(4)
    sheared[:3, :3] = [[2.0, 1.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 3.0]]  # J leans along x
    edges = np.sqrt((sheared[:3, :3] ** 2).sum(axis=0))
    assert np.prod(edges) / 1000 == pytest.approx(0.006 * np.sqrt(2))  # what a product of voxel sizes says
    assert voxel_volume_ml(sheared) == pytest.approx(0.006)  # what one voxel holds
    assert voxel_volume_ml(sheared[:3, :3]) == voxel_volume_ml(np.diag([-2.0, 1.0, 3.0]))
    assert volume_from_array(np.zeros((4, 4, 4)), sheared).voxel_volume_ml == pytest.approx(0.006)
    measured = mask_statistics(np.ones((4, 4, 4), np.uint8), sheared, num_classes=2)
    assert measured["voxel_volume_ml"] == pytest.approx(0.006) and measured["foreground_volume_ml"] == 0.384
    with pytest.raises(ValueError, match=r"4×4 matrix \(or its 3×3 linear part\), got shape \(4, 3\)"):
        voxel_volume_ml(np.ones((4, 3)))


@pytest.mark.parametrize(
    ("data", "num_classes", "problem"),
    [
        (np.array([0, 1, 2], np.uint8), 3, None),
        (np.array([True, False]), 2, None),
        (np.array([0.0, 1.0, 2.0], np.float32), None, None),
        (np.array([0, 1, 3], np.int16), 3, "holds labels from 0 to 3, outside 0 .. 2"),
        (np.array([-1, 0], np.int8), 3, "holds labels from -1 to 0, outside 0 .. 2"),
        (np.array([-1, 0], np.int8), None, "holds negative values (e.g. -1)"),
        (np.array([0.0, 0.25], np.float32), 3, "holds non-integer values (e.g. 0.25)"),
        (np.array([1j]), 3, "is an array of complex128, not integer labels"),
    ],
)
def test_one_label_rule_names_what_is_wrong(data, num_classes, problem):
    assert label_problem(data, num_classes) == problem


def _two_boxes() -> np.ndarray:
    labels = np.zeros((10, 12, 8), np.uint8)
    labels[2:6, 3:7, 1:5] = 1  # inside the field of view
    labels[7:10, 0:2, 6:8] = 2  # cut by three faces of the grid
    return labels


def test_mask_statistics_measure_each_class_in_scanner_millimetres():
    rotation = np.array([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]])  # an oblique (here: rotated) grid
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([2.0, 1.0, 3.0])
    affine[:3, 3] = [10.0, -20.0, 5.0]
    image = np.arange(10 * 12 * 8, dtype=np.float32).reshape(10, 12, 8)
    measured = mask_statistics(_two_boxes(), affine, num_classes=4, class_names=["bg", "a", "b", "c"], image=image)
    json.dumps(measured, allow_nan=False)  # strict JSON throughout
    bg, a, b, c = measured["classes"]
    assert measured["voxel_volume_ml"] == pytest.approx(0.006)
    assert (a["voxels"], a["volume_ml"], b["voxels"]) == (64, 0.384, 12)
    assert measured["foreground_volume_ml"] == pytest.approx((64 + 12) * 0.006)
    # centre voxel (3.5, 4.5, 2.5) → scanner: x = -1 * 4.5 + 10, y = 2 * 3.5 - 20, z = 3 * 2.5 + 5
    assert a["centroid_mm"] == pytest.approx([5.5, -13.0, 12.5])
    assert a["bbox_ijk"] == [[2, 5], [3, 6], [1, 4]] and b["bbox_ijk"] == [[7, 9], [0, 1], [6, 7]]
    assert (a["touches_border"], b["touches_border"], bg["touches_border"]) == (False, True, True)
    inside = image[2:6, 3:7, 1:5]
    assert a["intensity"]["mean"] == pytest.approx(float(inside.mean()))
    assert a["intensity"]["median"] == pytest.approx(float(np.median(inside)))
    assert (a["intensity"]["min"], a["intensity"]["max"]) == (float(inside.min()), float(inside.max()))
    assert c == {"index": 3, "name": "c", "voxels": 0, "volume_ml": 0.0, "centroid_mm": None, "bbox_ijk": None,
                 "touches_border": None, "intensity": None}  # fmt: skip
    assert "intensity" not in mask_statistics(_two_boxes(), affine, num_classes=3)["classes"][1]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_classes": 2}, "outside 0 .. 1"),
        ({"num_classes": 1}, "at least 2"),
        ({"num_classes": 3, "image": np.zeros((10, 12, 7))}, "image shape (10, 12, 7) differs from mask shape"),
        ({"num_classes": 3, "class_names": ["bg"]}, "names 1 classes"),
    ],
)
def test_mask_statistics_refuse_what_would_give_wrong_measurements(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        mask_statistics(_two_boxes(), np.eye(4), **kwargs)


def _mask(highest: int = 2) -> np.ndarray:
    labels = np.zeros((8, 8, 8), np.float32)  # as load_volume reads every file
    labels[2:5, 2:5, 2:5] = 1
    labels[6, 6, 6] = highest
    return labels


def _speckles() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 200, (16, 16, 16)).astype(np.float32)


def test_label_masks_count_the_classes_from_the_option_the_card_or_the_highest_label():
    assert label_masks([("m", _mask())], option="--num-classes").num_classes == 3
    assert label_masks([("m", np.zeros((8, 8, 8)))], option="--num-classes").num_classes == 2  # background + one
    assert label_masks([("m", _mask())], option="--num-classes", num_classes=5).num_classes == 5
    card = ["background", "shell", "core", "rim"]
    named = label_masks([("m", _mask())], option="num_classes", names=card)
    assert (named.num_classes, named.names) == (4, card)  # the labels fit the card: its names
    beyond = label_masks([("m", _mask(highest=6))], option="num_classes", names=card)
    assert (beyond.num_classes, beyond.names) == (7, None)  # they do not: class_N
    read = label_masks([("a", _mask()), ("b", _mask(highest=1))], option="--num-classes")
    assert read.num_classes == 3 and [labels.dtype for labels in read.labels] == [np.int64, np.int64]


@pytest.mark.parametrize("option", ["--num-classes", "num_classes"])
def test_label_masks_refuse_what_is_not_a_mask_naming_the_front_ends_option(option):
    with pytest.raises(LabelMaskError, match=rf"t1.nii.gz looks like an image, not a label mask: .*pass {option}\)$"):
        label_masks([("m.nii.gz", _mask()), ("t1.nii.gz", _speckles())], option=option)
    vouched = label_masks([("t1.nii.gz", _speckles())], option=option, num_classes=200)  # the option vouches
    assert vouched.num_classes == 200
    with pytest.raises(LabelMaskError, match=rf"^b holds labels up to 2: {option} must be at least 3, got 2$"):
        label_masks([("a", _mask(highest=1)), ("b", _mask())], option=option, num_classes=2)
    with pytest.raises(LabelMaskError, match=r"^m holds non-integer values \(e.g. 0.5\): expected an integer label"):
        label_masks([("m", np.full((8, 8, 8), 0.5, np.float32))], option=option)


def test_label_masks_of_a_named_model_must_be_that_models():
    card = ["background", "shell", "core"]
    read = label_masks([("m", _mask())], option="--num-classes", names=card, model="tiny")
    assert (read.num_classes, read.names) == (3, card)
    with pytest.raises(LabelMaskError, match=r"^m holds labels up to 5, but model 'tiny' has 3 classes: is it that"):
        label_masks([("m", _mask(highest=5))], option="--num-classes", names=card, model="tiny")
    with pytest.raises(LabelMaskError, match=r"^--num-classes 6 contradicts the 3 classes of model 'tiny'$"):
        label_masks([("m", _mask())], option="--num-classes", num_classes=6, names=card, model="tiny")


def test_mask_labels_of_a_models_mask_name_its_classes():
    assert mask_labels(_mask(), "the reference mask", model_classes=3, dtype=np.uint8).dtype == np.uint8
    with pytest.raises(LabelMaskError, match=r"labels from 0 to 7, outside 0 \.\. 2: expected the model's classes"):
        mask_labels(_mask(highest=7), "the reference mask", model_classes=3)
    with pytest.raises(LabelMaskError, match=r"^m holds negative values \(e\.g\. -1\): expected an integer label"):
        mask_labels(np.full((4, 4, 4), -1.0), "m")
