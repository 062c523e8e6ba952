import json

import nibabel as nib
import numpy as np
import pytest

from train.mni152 import TEST_CASES, TEST_SEED, VALIDATION_CASES, build_case, load_template, prepare, tissue_labels


@pytest.fixture(scope="module")
def template():
    return load_template()


def test_labels_are_the_argmax_of_background_grey_and_white_probabilities():
    gm = np.array([0.6, 0.2, 0.1, 0.5])
    wm = np.array([0.3, 0.7, 0.1, 0.1])
    assert tissue_labels(gm, wm).tolist() == [1, 2, 0, 1]


@pytest.mark.slow
def test_perturbed_copies_are_deterministic_and_keep_image_and_label_on_one_grid(template):
    case = next(c for c in TEST_CASES if c.geometry == "lps")
    first, first_label = build_case(case, TEST_SEED, template)
    second, _ = build_case(case, TEST_SEED, template)
    assert np.array_equal(np.asanyarray(first.dataobj), np.asanyarray(second.dataobj))
    assert nib.aff2axcodes(first.affine) == ("L", "P", "S")
    assert np.array_equal(first.affine, first_label.affine) and first.shape == first_label.shape
    assert set(np.unique(np.asanyarray(first_label.dataobj))) == {0, 1, 2}


def test_resampled_copy_has_the_requested_spacing_and_labels_from_resampled_maps(template):
    case = next(c for c in TEST_CASES if c.geometry == "aniso_z3")
    image, label = build_case(case, TEST_SEED, template)
    assert image.header.get_zooms() == pytest.approx((0.9, 0.9, 3.0))
    assert label.shape == image.shape == (219, 259, 63)


@pytest.mark.slow
def test_prepare_writes_an_msd_folder_with_recipes_and_seeds(tmp_path):
    wanted = {VALIDATION_CASES[0].name, TEST_CASES[1].name}
    dataset = prepare(tmp_path, only=lambda name: name in wanted, heads=False)
    written = json.loads((tmp_path / "dataset.json").read_text())
    assert written == json.loads(json.dumps(dataset))
    assert written["labels"] == {"0": "background", "1": "grey_matter", "2": "white_matter"}
    assert written["generator"] == {
        "validation_seed": 1001,
        "test_seed": 2002,
        "script": "python -m train prepare-mni152",
    }
    assert [e["recipe"]["geometry"] for e in written["test"]] == ["permuted"]
    for entry in [*written["training"], *written["validation"], *written["test"]]:
        assert (tmp_path / entry["image"]).exists() and (tmp_path / entry["label"]).exists()
    assert "McConnell" in written["reference"]


def test_worker_processes_write_the_same_files_as_one_process(tiny_template, tiny_heads, tmp_path):
    from train.provenance import sha256_of

    dataset = prepare(tmp_path, source=tiny_template, test=False, jobs=2)
    assert dataset["test"] == [] and "test" not in dataset["fullhead"]
    names = [entry["tissues"] for entry in dataset["heads"]["training"]]
    names += [entry[key] for entry in dataset["validation"] for key in ("image", "label")]
    assert len(names) == 20 + 2 * 6
    for name in names:
        assert sha256_of(tmp_path / name) == sha256_of(tiny_heads / name), name
