import numpy as np
import torch

from unet3d.postprocess import fill_holes, grow_edge, keep_largest_component, labels_from_probabilities, postprocess


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


def test_labels_are_the_argmax_or_the_binary_threshold_on_the_foreground():
    probabilities = torch.tensor([[0.6, 0.3, 0.1], [0.3, 0.3, 0.2], [0.1, 0.4, 0.7]])[:, :, None, None]
    assert labels_from_probabilities(probabilities, None).flatten().tolist() == [0, 2, 2]
    binary = torch.tensor([[0.8, 0.4, 0.1], [0.2, 0.6, 0.9]])
    assert labels_from_probabilities(binary, None).tolist() == [0, 1, 1]
    assert labels_from_probabilities(binary, 0.7).tolist() == [0, 0, 1]
    sigmoid = torch.tensor([[0.2, 0.5, 0.9]])
    assert labels_from_probabilities(sigmoid, None).tolist() == [0, 1, 1]
    assert labels_from_probabilities(sigmoid, 0.95).dtype == torch.uint8


def test_grow_edge_adds_the_likely_voxels_near_the_mask_only_within_millimetres_on_the_grids_spacing():
    mask = np.zeros((1, 1, 16), np.uint8)
    mask[..., 6:8] = 1
    probability = np.full(mask.shape, 0.3)
    probability[..., 0] = 0.9  # likely, but far from the mask
    probability[..., 9] = 0.1  # close, but not likely enough
    grown = grow_edge(mask, probability >= 0.2, 2.0, (1.0, 1.0, 0.5))  # 2 mm: 4 voxels of 0.5 mm
    assert grown[0, 0].tolist() == [0, 0, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 0, 0, 0, 0]
    assert mask[0, 0].tolist() == [0] * 6 + [1, 1] + [0] * 8  # not modified
    grown = grow_edge(mask, probability >= 0.2, 2.0, (1.0, 1.0, 1.0))
    assert grown[0, 0].tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0]
    assert not grow_edge(np.zeros_like(mask), probability >= 0.2, 2.0, (1.0, 1.0, 1.0)).any()
