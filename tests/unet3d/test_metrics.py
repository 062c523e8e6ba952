import json
import math

import numpy as np
import pytest

from unet3d.metrics import dice, evaluate, hd95, iou, iou_along_axis


def _masks():
    pred = np.zeros((10, 10, 4), dtype=np.uint8)
    ref = np.zeros_like(pred)
    pred[2:6, 2:6] = 1  # 64 voxels
    ref[3:7, 2:6] = 1  # 64 voxels, 48 shared
    ref[8, 8, 0] = 2
    return pred, ref


def test_dice_and_iou_of_shifted_squares():
    pred, ref = _masks()
    assert dice(pred, ref, 1) == pytest.approx(2 * 48 / 128)
    assert iou(pred, ref, 1) == pytest.approx(48 / 80)


def test_absent_class_scores_one_when_absent_from_both_and_zero_when_missed():
    pred, ref = _masks()
    assert dice(pred, ref, 3) == 1.0
    assert dice(pred, ref, 2) == 0.0


def test_means_exclude_background():
    pred, ref = _masks()
    result = evaluate(pred, ref, num_classes=3, with_hd95=False)
    foreground = [c["dice"] for c in result["classes"][1:]]
    assert result["mean_dice"] == pytest.approx(np.mean(foreground))
    assert result["classes"][0]["dice"] > result["mean_dice"]


def test_hd95_uses_spacing_in_mm():
    pred, ref = _masks()
    assert hd95(pred, ref, 1, (1.0, 1.0, 1.0)) == pytest.approx(1.0)
    assert hd95(pred, ref, 1, (2.5, 1.0, 1.0)) == pytest.approx(2.5)
    assert math.isinf(hd95(pred, ref, 2))
    assert hd95(pred, ref, 5) == 0.0


def test_iou_along_last_axis_is_nan_where_class_absent():
    pred, ref = _masks()
    curve = iou_along_axis(pred, ref, 2, axis=-1)
    assert curve.shape == (4,)
    assert curve[0] == 0.0 and np.isnan(curve[1:]).all()


def test_evaluate_refuses_masks_on_different_grids():
    with pytest.raises(ValueError, match="differs from reference shape"):
        evaluate(np.zeros((4, 4, 4)), np.zeros((4, 4, 5)), num_classes=2)


def test_evaluate_gives_no_scores_to_a_class_absent_from_both_masks_and_leaves_it_out_of_the_means():
    pred, ref = _masks()
    result = evaluate(pred, ref, num_classes=4)
    absent = result["classes"][3]
    assert (absent["dice"], absent["iou"], absent["hd95_mm"]) == (None, None, None)
    assert absent["volume_ml_pred"] == absent["volume_ml_ref"] == 0.0
    assert result["mean_dice"] == pytest.approx(np.mean([2 * 48 / 128, 0.0]))
    assert result["mean_iou"] == pytest.approx(np.mean([48 / 80, 0.0]))
    assert json.loads(json.dumps(result))["classes"][3]["dice"] is None


def test_evaluate_has_no_hd95_for_a_class_in_one_mask_only_so_its_json_is_strict():
    pred, ref = _masks()
    one_sided = evaluate(pred, ref, num_classes=3)["classes"][2]
    assert one_sided["dice"] == 0.0 and one_sided["hd95_mm"] is None
    json.dumps(evaluate(pred, ref, num_classes=4), allow_nan=False)


def test_evaluate_means_are_none_when_no_foreground_class_is_in_either_mask():
    empty = np.zeros((6, 6, 6), dtype=np.uint8)
    result = evaluate(empty, empty, num_classes=3)
    assert result["classes"][0]["dice"] == 1.0
    assert [c["dice"] for c in result["classes"][1:]] == [None, None]
    assert result["mean_dice"] is None and result["mean_iou"] is None


def test_every_score_refuses_masks_of_different_shapes():
    cube = np.zeros((8, 8, 8), np.uint8)
    cube[2:6, 2:6, 2:6] = 1
    for score in (dice, iou, hd95, iou_along_axis):
        with pytest.raises(ValueError, match=r"prediction shape \(8, 8, 8\) differs from reference shape \(8, 8, 1\)"):
            score(cube, cube[:, :, 3:4], 1)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"num_classes": 2, "pred": 2}, "the prediction holds labels from 0 to 2, outside 0 .. 1 \\(num_classes 2\\)"),
        ({"num_classes": 2, "pred": 0.4}, "the prediction holds non-integer values"),
        ({"num_classes": 1}, "num_classes counts background too: at least 2, got 1"),
        ({"num_classes": 3, "class_names": ["bg", "fg"]}, "class_names names 2 classes, num_classes is 3"),
        ({"num_classes": 2, "spacing_mm": (1.0, 1.0)}, "spacing_mm gives 2 sizes for a 3D mask: give one per axis"),
    ],
)
def test_evaluate_refuses_arguments_that_would_give_wrong_scores(change, message):
    cube = np.zeros((8, 8, 8), np.float32)
    cube[2:6, 2:6, 2:6] = 1
    pred = cube * change.pop("pred", 1)
    with pytest.raises(ValueError, match=message):
        evaluate(pred, cube, **change)


def test_hd95_and_iou_along_axis_check_spacing_and_axis():
    cube = np.zeros((8, 8, 8), np.uint8)
    cube[2:6, 2:6, 2:6] = 1
    with pytest.raises(ValueError, match="spacing_mm gives 2 sizes for a 3D mask"):
        hd95(cube, cube, 1, spacing_mm=(1.0, 1.0))
    with pytest.raises(ValueError, match="axis 5 does not exist in a 3D mask"):
        iou_along_axis(cube, cube, 1, axis=5)
    assert iou_along_axis(cube, cube, 1, axis=-3).shape == (8,)


def test_evaluate_measures_volumes_from_the_affine_so_a_sheared_grid_counts_right():
    pred, ref = _masks()
    sheared = np.eye(4)
    sheared[0, 1] = 0.5  # the J axis leans along x: edges of 1 and 1.118 mm, but each voxel still holds 1 mm³
    result = evaluate(pred, ref, num_classes=3, spacing_mm=(1.0, float(np.hypot(1, 0.5)), 1.0), affine=sheared)
    assert result["classes"][1]["volume_ml_pred"] == pytest.approx(64 * 0.001)  # the zoom product said 64 × 0.00112
    scaled = evaluate(pred, ref, num_classes=3, spacing_mm=(2.0, 1.0, 3.0))  # no affine: an axis-aligned grid
    assert scaled["classes"][1]["volume_ml_ref"] == pytest.approx(64 * 0.006)
