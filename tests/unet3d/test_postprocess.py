import numpy as np

from unet3d.postprocess import fill_holes, keep_largest_component, postprocess


def test_largest_component_keeps_only_the_biggest_blob_of_each_listed_class():
    mask = np.zeros((12, 12, 12), dtype=np.uint8)
    mask[1:5, 1:5, 1:5] = 1
    mask[8:10, 8:10, 8:10] = 1
    mask[8, 1, 1] = 2
    mask[1, 8, 8] = 2
    keep_largest_component(mask, [1])
    assert (mask == 1).sum() == 64
    assert (mask == 2).sum() == 2


def test_fill_holes_fills_enclosed_background_only():
    mask = np.zeros((9, 9, 9), dtype=np.uint8)
    mask[2:7, 2:7, 2:7] = 1
    mask[4, 4, 4] = 0
    mask[0, 0, 0] = 0
    fill_holes(mask, [1])
    assert mask[4, 4, 4] == 1
    assert mask[0, 0, 0] == 0


def test_postprocess_never_touches_background_class():
    mask = np.zeros((5, 5, 5), dtype=np.uint8)
    assert postprocess(mask.copy(), largest_component=[0], holes=[0]).sum() == 0
