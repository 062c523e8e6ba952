"""Geometry: closest-RAS order and back for every axis order, file indices, crop, resampling, prepare/restore."""

import itertools

import numpy as np
import pytest
import torch
from helpers import TINY_CARD, sphere_volume

from unet3d import volume_from_array
from unet3d.card import card_from_dict
from unet3d.geometry import (
    canonical_orientation,
    canonical_spacing,
    foreground_crop,
    from_canonical,
    index_from_canonical,
    needs_resampling,
    prepare,
    resampled_shape,
    resize,
    restore,
    same_grid,
    to_canonical,
    uncrop,
    uncrop_probabilities,
)

SHAPE = (4, 5, 6)
SPACING = (1.5, 2.0, 3.0)


def _axis_affines() -> list[np.ndarray]:
    """The 48 voxel-to-world matrices that permute and flip the axes (6 orders × 8 flips), with a translation."""
    affines = []
    for order in itertools.permutations(range(3)):
        for signs in itertools.product((1, -1), repeat=3):
            affine = np.eye(4)
            affine[:3, :3] = 0
            for voxel_axis, (world_axis, sign) in enumerate(zip(order, signs, strict=True)):
                affine[world_axis, voxel_axis] = sign * SPACING[voxel_axis]
            affine[:3, 3] = (10.0, -20.0, 30.0)
            affines.append(affine)
    return affines


@pytest.mark.parametrize(
    "affine", _axis_affines(), ids=lambda a: "".join("xyz"[i] for i in np.argmax(abs(a[:3, :3]), 0))
)
def test_every_axis_order_reaches_ras_and_comes_back_exactly(affine):
    data = np.arange(np.prod(SHAPE), dtype=np.float32).reshape(SHAPE)
    volume = volume_from_array(data, affine)
    orientation = canonical_orientation(volume)
    canonical = to_canonical(data, orientation)
    # One step along each canonical axis moves +1 voxel along R, A, S in the world.
    origin = affine @ [*index_from_canonical((0, 0, 0), orientation, SHAPE), 1]
    for axis in range(3):
        step = [0, 0, 0]
        step[axis] = 1
        moved = affine @ [*index_from_canonical(step, orientation, SHAPE), 1] - origin
        assert np.argmax(np.abs(moved[:3])) == axis and moved[axis] > 0
    assert np.array_equal(from_canonical(canonical, orientation), data)
    channels = np.stack([data, -data])
    assert np.array_equal(from_canonical(to_canonical(channels, orientation), orientation), channels)
    for point in itertools.product(*(range(n) for n in canonical.shape)):
        assert canonical[point] == data[index_from_canonical(point, orientation, SHAPE)]
    spacing = canonical_spacing(volume, orientation)
    assert sorted(spacing) == sorted(SPACING)
    assert all(spacing[int(target)] == SPACING[source] for source, (target, _) in enumerate(orientation))


def test_a_canonical_index_names_the_voxel_of_an_oblique_lps_file():
    angle = np.deg2rad(12)
    affine = np.eye(4)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    affine[:3, :3] = rotation @ np.diag([-1.2, -0.9, 2.0])  # i runs to the left, j to the back: LPS-like
    affine[:3, 3] = [40.0, -12.0, 7.5]
    shape = (24, 20, 16)
    volume = volume_from_array(sphere_volume(shape), affine)
    assert volume.orientation == "LPS"
    orientation = canonical_orientation(volume)
    assert index_from_canonical((0, 0, 0), orientation, shape) == (23, 19, 0)
    assert index_from_canonical((5, 6, 7), orientation, shape) == (18, 13, 7)
    canonical = to_canonical(volume.data, orientation)
    assert canonical[5, 6, 7] == volume.data[18, 13, 7]


def test_same_grid_allows_a_micrometre_and_no_more():
    data = np.zeros((4, 4, 4), np.float32)
    base = volume_from_array(data, np.eye(4))
    nudged, moved = np.eye(4), np.eye(4)
    nudged[0, 3], moved[0, 3] = 5e-4, 5e-3
    assert same_grid(base, volume_from_array(data, nudged))
    assert not same_grid(base, volume_from_array(data, moved))
    assert not same_grid(base, volume_from_array(np.zeros((4, 4, 5), np.float32), np.eye(4)))


def test_foreground_crop_grows_by_margin_and_uncrop_restores_the_grid():
    volume = torch.zeros((30, 30, 30))
    volume[10:15, 12:14, 5:25] = 1
    crop = foreground_crop(volume, margin=3)
    assert crop.start == (7, 9, 2) and crop.stop == (18, 17, 28) and crop.shape == (11, 8, 26)
    restored = uncrop(volume[crop.slices], crop)
    assert torch.equal(restored, volume)
    probabilities = uncrop_probabilities(torch.full((3, *crop.shape), 1 / 3), crop)
    assert probabilities.shape == (3, 30, 30, 30)
    assert probabilities[:, 0, 0, 0].tolist() == [1, 0, 0]
    assert torch.allclose(probabilities[:, 10, 12, 5], torch.tensor(1 / 3))


def test_foreground_crop_finds_the_box_whatever_the_memory_layout_and_clips_at_the_edges():
    volume = np.zeros((12, 9, 7), np.float32, order="F")  # as NIfTI volumes arrive: Fortran order
    volume[0, 3:5, 6] = 5.0
    crop = foreground_crop(torch.from_numpy(volume), margin=2, background=4.0)
    assert crop.start == (0, 1, 4) and crop.stop == (3, 7, 7)
    assert foreground_crop(torch.from_numpy(volume), margin=2, background=5.0).shape == (12, 9, 7)  # none above


def test_foreground_crop_of_an_empty_volume_keeps_everything():
    crop = foreground_crop(torch.zeros((4, 5, 6)), margin=2)
    assert crop.shape == (4, 5, 6)


def test_resampling_helpers():
    assert not needs_resampling((1.0, 1.02, 0.98), (1.0, 1.0, 1.0))
    assert needs_resampling((0.9, 0.9, 3.0), (1.0, 1.0, 1.0))
    assert not needs_resampling((0.5, 0.5, 5.0), None)
    assert resampled_shape((100, 100, 30), (0.9, 0.9, 3.0), (1.0, 1.0, 1.0)) == (90, 90, 90)
    ramp = torch.linspace(0, 1, 8)[:, None, None].expand(8, 4, 4)
    assert resize(ramp, (16, 4, 4)).shape == (16, 4, 4)
    assert resize(torch.stack([ramp, ramp]), (4, 4, 4)).shape == (2, 4, 4, 4)


def test_labels_resize_by_nearest_neighbour_and_keep_their_values():
    labels = torch.zeros((6, 6, 6), dtype=torch.uint8)
    labels[:3] = 2
    labels[3:, :2] = 5
    resized = resize(labels, (12, 9, 6), mode="nearest")
    assert set(resized.unique().tolist()) == {0.0, 2.0, 5.0}
    assert (resized[:6] == 2).all() and (resized[6:, :3] == 5).all()


def _card(**inference):
    card = {**TINY_CARD, "inference": {**TINY_CARD["inference"], **inference}}
    return card_from_dict(card)


def test_prepare_then_restore_puts_labels_back_on_the_input_grid_through_the_crop():
    data = np.zeros((30, 28, 26), np.float32)
    data[8:20, 6:16, 10:22] = sphere_volume((12, 10, 12)) + 100
    affine = np.diag([-1.0, 1.0, -1.0, 1.0])  # flipped: the network sees it reordered
    volume = volume_from_array(data, affine)
    prepared = prepare(volume, _card(crop_foreground=True, crop_margin=2))
    assert prepared.crop is not None and prepared.shape == (16, 14, 16) and not prepared.resampled
    labels = (prepared.array > 0.5).to(torch.uint8)
    restored, probabilities = restore(labels, None, prepared, None, keep=False)
    mask = restored.numpy()
    assert mask.shape == data.shape and mask.dtype == np.uint8 and probabilities is None
    expected = to_canonical(np.zeros_like(mask), prepared.orientation).copy()
    expected[prepared.crop.slices] = labels.numpy()
    assert np.array_equal(mask, from_canonical(expected, prepared.orientation))
    assert mask.any() and not mask[:6].any() and not mask[22:].any()  # nothing outside the crop


def test_a_resampled_input_gets_its_labels_from_probabilities_resized_back():
    volume = volume_from_array(sphere_volume((24, 20, 8)), np.diag([1.0, 1.0, 3.0, 1.0]))
    card = card_from_dict({**TINY_CARD, "input": {**TINY_CARD["input"], "spacing_mm": [1.0, 1.0, 1.0]}})
    prepared = prepare(volume, card)
    assert prepared.resampled and prepared.shape == (24, 20, 24) and prepared.cropped_shape == (24, 20, 8)
    probabilities = torch.stack([1 - prepared.array, prepared.array / 2, prepared.array / 2])
    labels = probabilities.argmax(0).to(torch.uint8)
    mask, kept = restore(labels, probabilities, prepared, None, keep=True)
    assert mask.shape == (24, 20, 8) and kept is not None and kept.shape == (3, 24, 20, 8)
    assert torch.equal(mask, kept.argmax(0).to(torch.uint8))
    torch.testing.assert_close(kept.sum(0), torch.ones(24, 20, 8))
