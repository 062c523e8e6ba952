"""Training samples synthesised from heads: every mode finite and normalised, labels the template's, seeded."""

import numpy as np
import pytest
import torch
from scipy import ndimage

from train.config import AugmentConfig, SynthConfig
from train.head import TISSUES
from train.synth import (
    MODES,
    T1_PRIORS,
    HeadSampler,
    field_of_view,
    load_bank,
    signed_distance,
    strip_mask,
    synthesize,
)

ONLY = {
    "head": {"head_weight": 1.0, "stripped_weight": 0.0, "synthetic_weight": 0.0},
    "stripped": {"head_weight": 0.0, "stripped_weight": 1.0, "synthetic_weight": 0.0},
    "synthetic": {"head_weight": 0.0, "stripped_weight": 0.0, "synthetic_weight": 1.0},
}


@pytest.fixture(scope="module")
def bank(tiny_heads):
    return load_bank(tiny_heads, torch.device("cpu"))


def sampler(bank, seed=0, **synth):
    return HeadSampler(
        bank, (16, 16, 16), AugmentConfig(noise_probability=1.0), SynthConfig(**synth), seed=seed, device="cpu"
    )


@pytest.mark.parametrize("mode", MODES)
def test_every_mode_gives_finite_normalised_images_and_template_labels(bank, mode):
    draw = sampler(bank, **ONLY[mode])
    images, labels = draw.sample(6)
    assert images.shape == (6, 1, 16, 16, 16) and labels.shape == (6, 16, 16, 16)
    assert torch.isfinite(images).all() and images.min() >= 0 and images.max() <= 1
    assert set(labels.unique().tolist()) <= {0, 1, 2} and (labels > 0).any()


def test_a_seed_fixes_the_stream_and_another_seed_changes_it(bank):
    first, again, other = (sampler(bank, seed=seed).sample(4) for seed in (5, 5, 6))
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.equal(first[0], other[0])


def test_head_mode_keeps_the_real_brain_and_draws_the_rest_from_t1_priors(bank):
    image = synthesize(bank, 0, "head", torch.Generator().manual_seed(0), SynthConfig(texture_std=[0.0, 0.0]))
    brain = bank.brain
    assert torch.equal(image[brain], bank.t1[brain])
    tissues = bank.heads[0].long()
    for name, (low, high) in T1_PRIORS.items():
        values = image[~brain & (tissues == TISSUES.index(name))]
        if values.numel():
            assert values.min() >= low - 1e-6 and values.max() <= high + 1e-6, name
            assert values.max() - values.min() < 1e-6, name  # one value per tissue without texture


def test_synthetic_mode_mixes_grey_white_and_csf_by_the_template_probabilities(bank):
    generator = torch.Generator().manual_seed(1)
    image = synthesize(bank, 0, "synthetic", generator, SynthConfig(texture_std=[0.0, 0.0]))
    grey, white = bank.grey.float(), bank.white.float()
    brain = bank.brain
    pure_white, pure_grey = brain & (white > 0.999), brain & (grey > 0.999)
    assert pure_white.any() and pure_grey.any()
    assert image[pure_white].std() < 1e-3 and image[pure_grey].std() < 1e-3
    assert torch.isfinite(image).all() and image.min() >= 0


def test_the_field_of_view_cuts_the_head_but_keeps_the_brain_above_the_neck():
    extent = [(10, 40), (12, 50), (30, 60)]
    generator = torch.Generator().manual_seed(0)
    boxes = [field_of_view((50, 64, 72), extent, generator, 1.0) for _ in range(200)]
    assert all(b[2].start <= 30 + 12 for b in boxes) and any(b[2].start > 0 for b in boxes)
    for axis in range(2):
        assert all(b[axis].start <= extent[axis][0] and b[axis].stop > extent[axis][1] for b in boxes)
    assert field_of_view((50, 64, 72), extent, generator, 0.0) == (slice(0, 50), slice(0, 64), slice(0, 72))
    assert np.mean([b[1].stop < 64 for b in boxes]) > 0.1  # now and then the face


def test_a_strip_mask_runs_its_margin_beyond_the_brain_and_varies_along_it(bank):
    brain = bank.brain
    distance = signed_distance(brain, 1.0)
    generator = torch.Generator().manual_seed(0)
    assert torch.equal(strip_mask(distance, [0.0, 0.0], generator), brain)  # no margin: the brain's own edge
    outside = ndimage.distance_transform_edt(~brain.numpy())
    for _ in range(5):
        keep = strip_mask(distance, [1.0, 4.0], generator)
        assert bool(keep[brain].all())
        reach = outside[keep.numpy() & ~brain.numpy()]
        assert reach.max() <= 4.0 + 1e-3 and (reach <= 1.0).any()
        assert len(np.unique(np.round(outside[keep.numpy() & ~brain.numpy()]))) > 1
    inward = strip_mask(distance, [-2.0, -1.0], generator)
    assert bool(inward[brain].any()) and not bool(inward[~brain].any()) and int(inward.sum()) < int(brain.sum())


def test_a_stripped_head_is_zero_outside_its_mask_and_labelled_only_inside_it(bank):
    strip = {"head_stripped_probability": 1.0, "synthetic_stripped_probability": 1.0, "strip_margin_mm": [-2.0, 3.0]}
    draw = sampler(bank, **strip)
    distance = signed_distance(bank.brain, 1.0).float()
    for mode in ("head", "synthetic"):
        image, labels = draw.volume(0, mode)
        assert torch.isfinite(image).all() and labels.shape == image.shape
        assert not bool(image[distance > 3.0].any()) and bool((image[distance <= -2.0] > 0).all())
        assert bool((image[labels > 0] > 0).all())  # labelled only where the mask kept the image
        assert int((labels > 0).sum()) < int((bank.labels > 0).sum())  # the mask ran inside the brain somewhere
    whole, labels = sampler(bank, synthetic_stripped_probability=0.0).volume(0, "synthetic")
    assert bool(whole[distance > 3.0].any()) and torch.equal(labels, bank.labels)  # unstripped by default
    exact, labels = sampler(bank, synthetic_stripped_probability=1.0).volume(0, "synthetic")  # no margin
    assert torch.equal(exact > 0, bank.brain) and torch.equal(labels, bank.labels)  # stripped at the brain's own edge


def test_with_strip_labels_mask_a_stripped_sample_is_labelled_brain_wherever_its_mask_kept_the_image(bank):
    strip = {"head_stripped_probability": 1.0, "strip_margin_mm": [1.0, 3.0], "strip_labels": "mask", "target": "brain"}
    image, labels = sampler(bank, **strip).volume(0, "head")
    assert torch.equal(labels > 0, image > 0) and bool((labels[bank.brain] > 0).all())
    assert int((labels > 0).sum()) > int(bank.brain.sum())  # the CSF and dura the mask kept are brain too
