"""A chained model (card `inference.brain_mask: true`): the brain-extraction stage in brain_mask/ restricts the
tissue model's input and labels to the brain it finds; the folder loads and fails like the model itself."""

import shutil

import numpy as np
import pytest
import yaml
from helpers import TINY_CARD, sphere_volume, write_chained_model, write_tiny_model

from unet3d import ModelLoadError, Segmenter, volume_from_array
from unet3d.card import BrainEdge
from unet3d.errors import CardError, InvalidVolumeError
from unet3d.geometry import prepare
from unet3d.hub import check_model_dir, file_sha256
from unet3d.postprocess import grow_edge, postprocess
from unet3d.qc.measures import structure


@pytest.fixture(scope="module")
def chained(tmp_path_factory):
    return write_chained_model(tmp_path_factory.mktemp("chained"))


def test_the_labels_are_the_tissue_models_on_the_masked_input_and_background_outside_the_brain(chained):
    volume = volume_from_array(sphere_volume((28, 24, 20), seed=3))
    segmenter = Segmenter.from_pretrained(chained, device="cpu")
    first = Segmenter.from_pretrained(chained / "brain_mask", device="cpu")
    tissue = Segmenter(segmenter.model, segmenter.card, segmenter.source, device="cpu")

    brain = postprocess(first.predict(volume).mask, largest_component=[1], holes=[1]) > 0
    assert 0 < brain.sum() < brain.size  # a real restriction: some voxels in, some out
    expected = tissue.predict(volume_from_array(np.where(brain, volume.data, 0), volume.affine)).mask * brain
    prediction = segmenter.predict(volume, probabilities=True)
    np.testing.assert_array_equal(prediction.mask, expected)
    outside = prediction.probabilities[:, ~brain]
    assert np.all(outside[0] == 1) and np.all(outside[1:] == 0)
    inside = prediction.probabilities[:, brain]
    np.testing.assert_allclose(inside.sum(axis=0), 1, atol=1e-5)


def test_the_cards_threshold_decides_how_much_the_first_stage_keeps(tmp_path):
    volume = volume_from_array(sphere_volume((28, 24, 20), seed=3))
    first = Segmenter.from_pretrained(write_chained_model(tmp_path / "default") / "brain_mask", device="cpu")
    kept = {}
    for threshold in (0.5, 0.3):
        segmenter = Segmenter.from_pretrained(
            write_chained_model(tmp_path / f"t{threshold}", threshold=threshold), device="cpu"
        )
        assert segmenter.card.inference.brain_mask_threshold == threshold
        brain = postprocess(first.predict(volume, threshold=threshold).mask, largest_component=[1], holes=[1]) > 0
        mask = segmenter.predict(volume).mask
        assert not mask[~brain].any()
        kept[threshold] = brain
    assert kept[0.3].sum() > kept[0.5].sum()  # a lower threshold keeps more: the stripped brain comes back whole
    default = Segmenter.from_pretrained(tmp_path / "default", device="cpu")
    assert default.card.inference.brain_mask_threshold == 0.5
    np.testing.assert_array_equal(
        default.predict(volume).mask, Segmenter.from_pretrained(tmp_path / "t0.5", device="cpu").predict(volume).mask
    )


def test_the_cards_edge_keeps_the_likely_voxels_near_the_brain_as_well(tmp_path):
    volume = volume_from_array(sphere_volume((28, 24, 20), seed=3))
    first = Segmenter.from_pretrained(write_chained_model(tmp_path / "plain") / "brain_mask", device="cpu")
    prediction = first.predict(volume, probabilities=True)
    core = postprocess(prediction.mask, largest_component=[1], holes=[1])
    edge = {"threshold": 0.3, "within_mm": 2.0}
    brain = grow_edge(core, prediction.probabilities[1] >= 0.3, 2.0, volume.spacing_mm) > 0
    assert brain.sum() > core.sum() and (brain[core > 0]).all()  # the tiny stage: some voxels between 0.3 and 0.5

    segmenter = Segmenter.from_pretrained(write_chained_model(tmp_path / "edge", edge=edge), device="cpu")
    assert segmenter.card.inference.brain_mask_edge == BrainEdge(threshold=0.3, within_mm=2.0)
    tissue = Segmenter(segmenter.model, segmenter.card, segmenter.source, device="cpu")
    expected = tissue.predict(volume_from_array(np.where(brain, volume.data, 0), volume.affine)).mask * brain
    np.testing.assert_array_equal(segmenter.predict(volume).mask, expected)


@pytest.mark.parametrize(
    ("inference", "words"),
    [
        ({"brain_mask": True, "brain_mask_threshold": 1.5}, r"inference\.brain_mask_threshold must be in \(0, 1\)"),
        ({"brain_mask_threshold": 0.3}, r"applies to a chained model only: set brain_mask: true, or drop it"),
        ({"brain_mask_edge": {"threshold": 0.2, "within_mm": 2}}, r"brain_mask_edge applies to a chained model only"),
        ({"brain_mask": True, "brain_mask_edge": 0.2}, r"must be a mapping of threshold .* e\.g\. \{threshold: 0\.2"),
        ({"brain_mask": True, "brain_mask_edge": {"threshold": 0.2}}, r"must be a mapping of threshold"),
        (
            {"brain_mask": True, "brain_mask_threshold": 0.3, "brain_mask_edge": {"threshold": 0.4, "within_mm": 2}},
            r"brain_mask_edge\.threshold must be below inference\.brain_mask_threshold \(0\.3\), got 0\.4",
        ),
        (
            {"brain_mask": True, "brain_mask_edge": {"threshold": 1.2, "within_mm": 2}},
            r"inference\.brain_mask_edge\.threshold must be in \(0, 1\)",
        ),
        (
            {"brain_mask": True, "brain_mask_edge": {"threshold": 0.2, "within_mm": 25}},
            r"within_mm must be a number of millimetres in \(0, 10\], got 25",
        ),
        (
            {"brain_mask": True, "brain_mask_edge": {"threshold": 0.2, "within_mm": "2mm"}},
            r"within_mm must be a number of millimetres",
        ),
    ],
)
def test_a_brain_mask_setting_out_of_place_or_range_is_a_card_error(tmp_path, inference, words):
    directory = write_chained_model(tmp_path / "m")
    card = yaml.safe_load((directory / "model.yaml").read_text())
    card["inference"] = {**TINY_CARD["inference"], **inference}
    (directory / "model.yaml").write_text(yaml.safe_dump(card))
    with pytest.raises(CardError, match=words):
        Segmenter.from_pretrained(directory, device="cpu")


def test_qc_judges_the_whole_scan_as_the_first_stage_saw_it_not_the_brain_cut_out(chained):
    volume = volume_from_array(sphere_volume((28, 24, 20), seed=3))
    first = Segmenter.from_pretrained(chained / "brain_mask", device="cpu")
    scan = prepare(volume, first.card).array.numpy()
    prediction = Segmenter.from_pretrained(chained, device="cpu").predict(volume)
    assert prediction.qc.measures.structure == pytest.approx(structure(scan))


def test_a_volume_in_which_the_first_stage_finds_no_brain_is_refused_with_what_to_do(tmp_path):
    segmenter = Segmenter.from_pretrained(write_chained_model(tmp_path / "c", threshold=0.999), device="cpu")
    with pytest.raises(InvalidVolumeError, match=r"found no brain in this volume.*crop the scan to the head"):
        segmenter.predict(volume_from_array(sphere_volume((28, 24, 20), seed=3)))


def test_the_folder_is_part_of_the_model_it_is_checked_listed_and_reported(chained):
    files = check_model_dir(chained)
    assert files[-3:] == ["brain_mask/config.json", "brain_mask/model.safetensors", "brain_mask/model.yaml"]
    info = Segmenter.from_pretrained(chained, device="cpu").info()
    assert info["inference"]["brain_mask"] is True
    assert info["brain_mask_sha256"] == file_sha256(chained / "brain_mask" / "model.safetensors")
    assert info["sha256"] == file_sha256(chained / "model.safetensors")


def test_a_card_that_chains_a_missing_folder_says_what_is_missing(chained, tmp_path):
    broken = shutil.copytree(chained, tmp_path / "broken")
    (broken / "brain_mask" / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match=r"brain_mask/model\.safetensors is missing.*restore the brain_mask/"):
        Segmenter.from_pretrained(broken, device="cpu")
    with pytest.raises(ModelLoadError, match=r"brain_mask/model\.safetensors is missing"):
        check_model_dir(broken)


def test_a_first_stage_must_have_two_classes(tmp_path):
    directory = write_tiny_model(tmp_path / "m", card={**TINY_CARD, "inference": {"brain_mask": True}})
    write_tiny_model(directory / "brain_mask", seed=1)  # 3 classes
    with pytest.raises(ModelLoadError, match=r"must have 2 \(background, brain\)"):
        Segmenter.from_pretrained(directory, device="cpu")


def test_brain_mask_in_a_card_is_true_or_false(tmp_path):
    directory = write_tiny_model(tmp_path / "m", card={**TINY_CARD, "inference": {"brain_mask": "yes"}})
    with pytest.raises(CardError, match=r"inference\.brain_mask must be true or false, got 'yes'"):
        Segmenter.from_pretrained(directory, device="cpu")
    card = yaml.safe_load((directory / "model.yaml").read_text())
    assert card["inference"]["brain_mask"] == "yes"  # nothing was rewritten
