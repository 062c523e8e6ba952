"""The device-resident pipeline (geometry, normalisation and restoration in torch where the network runs) against the
previous NumPy pipeline (tests/numpy_reference.py), and its geometry against an oracle that never reorients."""

from __future__ import annotations

import itertools
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from helpers import TINY_CARD, sphere_volume, write_tiny_model
from numpy_reference import predict_mask

from unet3d import Segmenter, load_volume, volume_from_array
from unet3d.card import card_from_dict
from unet3d.geometry import prepare, restore
from unet3d.preprocessing import normalize_minmax

ROOT = Path(__file__).resolve().parents[2]
CROPPING_CARD = {
    **TINY_CARD,
    "input": {**TINY_CARD["input"], "spacing_mm": [1.0, 1.0, 1.0]},
    "inference": {**TINY_CARD["inference"], "crop_foreground": True, "crop_margin": 2},
}


def _affine(order: tuple[int, int, int], signs: tuple[int, int, int], spacing=(1.0, 1.0, 1.0)) -> np.ndarray:
    affine = np.eye(4)
    affine[:3, :3] = 0
    for voxel_axis, (world_axis, sign) in enumerate(zip(order, signs, strict=True)):
        affine[world_axis, voxel_axis] = sign * spacing[voxel_axis]
    affine[:3, 3] = (-12.0, 30.0, 7.0)
    return affine


def _oblique(spacing=(1.0, 1.0, 1.0)) -> np.ndarray:
    angle = np.deg2rad(20)
    rotation = np.array([[np.cos(angle), 0, -np.sin(angle)], [0, 1, 0], [np.sin(angle), 0, np.cos(angle)]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([-spacing[0], spacing[1], -spacing[2]])
    return affine


def _head(shape=(30, 26, 22), seed=0) -> np.ndarray:
    """A blob with noise inside an off-centre box and exact zeros around it (so the foreground crop cuts)."""
    data = np.zeros(shape, np.float32)
    inner = sphere_volume((18, 15, 12), seed=seed) + 200
    data[3:21, 8:23, 6:18] = inner
    return data


CASES = {
    "ras": (_affine((0, 1, 2), (1, 1, 1)), np.float32),
    "lps": (_affine((0, 1, 2), (-1, -1, 1)), np.int16),
    "permuted-flipped": (_affine((2, 0, 1), (1, -1, -1)), np.float32),
    "permuted-int16": (_affine((1, 2, 0), (-1, 1, 1)), np.int16),
    "oblique": (_oblique(), np.float32),
    "anisotropic-resampled": (_affine((0, 1, 2), (1, -1, 1), (0.8, 1.3, 2.5)), np.int16),
    "oblique-resampled": (_oblique((1.6, 0.7, 1.2)), np.float32),
}


@pytest.fixture(scope="module")
def cropping_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("cropping"), card=CROPPING_CARD, seed=3)


@pytest.fixture(scope="module")
def uncropped_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    card = {**CROPPING_CARD, "inference": {**CROPPING_CARD["inference"], "crop_foreground": False}}
    return write_tiny_model(tmp_path_factory.mktemp("uncropped"), card=card, seed=3)


@pytest.mark.parametrize("crop", [True, False], ids=["crop", "no-crop"])
@pytest.mark.parametrize("case", list(CASES))
def test_masks_equal_the_previous_numpy_pipeline(cropping_model, uncropped_model, tmp_path, case, crop):
    affine, dtype = CASES[case]
    path = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(_head().astype(dtype), affine), path)  # read back as NIfTI arrives: Fortran order
    model = cropping_model if crop else uncropped_model
    segmenter = Segmenter.from_pretrained(model, device="cpu", precision="fp32")
    prediction = segmenter.predict(path, mode="whole")
    expected = predict_mask(segmenter.network, load_volume(path), segmenter.card, segmenter.model.pad_multiple)
    assert prediction.mask.shape == expected.shape == load_volume(path).shape
    assert len(np.unique(expected)) > 1  # a mask with structure, so a misplaced voxel shows
    assert (prediction.mask == expected).mean() >= 0.999


@pytest.mark.parametrize(
    ("order", "signs"), list(itertools.product(itertools.permutations(range(3)), itertools.product((1, -1), repeat=3)))
)
def test_labels_come_back_on_the_voxels_they_were_taken_from(order, signs):
    # The oracle never reorients: the labels of the normalised input in its own voxel order. A flip undone twice, a
    # permutation inverted wrongly or a crop placed one voxel off moves the labels and the comparison fails.
    data = _head()
    data[4:9, 9:12, 7:9] += 600  # an asymmetric feature, so that every flip changes the labels
    volume = volume_from_array(data, _affine(order, signs))
    prepared = prepare(volume, card_from_dict(CROPPING_CARD))
    assert prepared.crop is not None and prepared.shape != prepared.crop.full_shape  # the crop does cut
    mask, _ = restore((prepared.array > 0.45).to(torch.uint8), None, prepared, None, keep=False)
    expected = (normalize_minmax(data, (1, 99)) > 0.45).astype(np.uint8)
    assert np.array_equal(mask.numpy(), expected)


def test_a_resampled_input_is_restored_from_probabilities_that_never_become_host_arrays(cropping_model, monkeypatch):
    volume = volume_from_array(_head(), _affine((0, 1, 2), (1, 1, 1), (0.7, 0.7, 2.0)))
    segmenter = Segmenter.from_pretrained(cropping_model, device="cpu", precision="fp32")
    converted: list[tuple[int, ...]] = []
    numpy = torch.Tensor.numpy

    def watched(tensor: torch.Tensor, *args, **kwargs) -> np.ndarray:  # every tensor that becomes a host array
        converted.append(tuple(tensor.shape))
        return numpy(tensor, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "numpy", watched)
    prediction = segmenter.predict(volume, mode="whole")
    assert prediction.mask.shape == volume.shape and prediction.probabilities is None
    # The mask and the percentile sample become host arrays; the (C, ...) probability maps stay where they are.
    assert converted and all(len(shape) <= 3 for shape in converted)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("order", "signs", "spacing", "dtype"),
    [((0, 1, 2), (1, 1, 1), (1.0, 1.0, 1.0), np.uint8), ((2, 0, 1), (-1, 1, -1), (1.0, 1.0, 1.0), np.int16),
     ((0, 1, 2), (1, -1, 1), (1.5, 1.5, 1.5), np.float32)],
    ids=["ras", "permuted-flipped-int16", "1.5mm-resampled"],
)  # fmt: skip
def test_the_shipped_model_gives_the_previous_masks_on_the_mni_example(tmp_path, order, signs, spacing, dtype):
    example = nib.load(ROOT / "api" / "examples" / "mni152_t1.nii.gz")
    data = np.asarray(example.dataobj)
    if spacing != (1.0, 1.0, 1.0):  # a coarser copy of the brain, as a lower-resolution scan would arrive
        coarse = torch.nn.functional.interpolate(
            torch.from_numpy(data.astype(np.float32))[None, None], scale_factor=2 / 3
        )
        data = coarse[0, 0].numpy()
    permuted = np.transpose(data, np.argsort(order))  # file axis `axis` holds world axis order[axis]
    flipped = np.flip(permuted, [axis for axis, sign in enumerate(signs) if sign < 0])
    path = tmp_path / "brain.nii.gz"
    nib.save(nib.Nifti1Image(np.ascontiguousarray(flipped).astype(dtype), _affine(order, signs, spacing)), path)
    shipped = Segmenter.from_pretrained(ROOT / "models" / "unet3d-brain-tissue", device="cpu", precision="fp32")
    # Its tissue network alone: the previous host pipeline knows no brain stage (the chain: tests/unet3d/test_chain.py).
    segmenter = Segmenter(shipped.model, shipped.card, shipped.source, device="cpu", precision="fp32")
    mask = segmenter.predict(path, mode="whole").mask
    expected = predict_mask(segmenter.network, load_volume(path), segmenter.card, segmenter.model.pad_multiple)
    assert (mask == expected).mean() >= 0.999
    assert {1, 2} <= set(np.unique(mask))  # grey and white matter found
