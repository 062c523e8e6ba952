"""Reviews: outputs on disk, canonical cached arrays, reference comparison, statistics and the status line."""

from __future__ import annotations

import json
from dataclasses import replace

import gradio as gr
import nibabel as nib
import numpy as np
import pytest

from api.ui.figures import agreement_table, class_table, intensity_histograms, iou_along_z
from api.ui.markup import status_markdown
from api.ui.review import attach_reference, most_uncertain, normalised_entropy, start_review
from unet3d import Segmenter
from unet3d.errors import InvalidVolumeError
from unet3d.geometry import to_canonical
from unet3d.io import load_volume
from unet3d.metrics import evaluate


@pytest.fixture(scope="module")
def segmenter(tiny_model_dir) -> Segmenter:
    return Segmenter.from_pretrained(tiny_model_dir)


@pytest.fixture
def oblique_volume(tmp_path, nifti):
    path = tmp_path / "scan one.nii.gz"
    path.write_bytes(nifti.encode(nifti.blob((24, 20, 16)), nifti.oblique_affine()))
    return load_volume(path)


def test_outputs_are_written_with_the_stem_and_the_input_geometry(segmenter, oblique_volume, tmp_path):
    prediction = segmenter.predict(oblique_volume, probabilities=True)
    review = start_review(prediction, tmp_path / "work", save_probabilities=True)
    assert [p.name for p in review.files] == [
        "scan_one_mask.nii.gz",
        "scan_one_summary.json",
        "scan_one_probabilities.nii.gz",
    ]
    mask = nib.load(review.files[0])
    assert mask.shape == oblique_volume.shape
    assert np.allclose(mask.affine, oblique_volume.affine)
    assert json.loads(review.files[1].read_text())["filename"] == "scan one.nii.gz"
    assert nib.load(review.files[2]).shape == (*oblique_volume.shape, 3)


def test_cached_arrays_are_in_closest_ras_order(segmenter, oblique_volume, tmp_path):
    review = start_review(segmenter.predict(oblique_volume, probabilities=True), tmp_path / "work")
    # The oblique affine flips x and y (LPS-like): canonical arrays are flipped back along those axes.
    assert np.array_equal(review.layers.image, oblique_volume.data[::-1, ::-1, :])
    assert review.layers.mask.shape == oblique_volume.shape
    assert review.layers.entropy is not None
    assert 0.0 <= float(review.layers.entropy.min()) <= float(review.layers.entropy.max()) <= 1.0


def test_reference_equal_to_the_prediction_gives_perfect_agreement(segmenter, oblique_volume, tmp_path):
    review = start_review(segmenter.predict(oblique_volume), tmp_path / "work")
    compared = attach_reference(review, review.files[0])
    table = agreement_table(compared)
    # A class the random tiny model never predicts is absent from both masks: no Dice (None), not a perfect one.
    present = [bool((compared.layers.mask == c.index).any()) for c in compared.classes]
    assert list(table["Dice"]) == [1.0 if p else None for p in present] + [1.0]
    assert table["class"].iloc[-1] == "mean (foreground)"
    curve = iou_along_z(compared)
    assert curve is not None
    assert (curve["IoU"] == 1.0).all()


def test_reference_on_another_grid_is_refused(segmenter, oblique_volume, tmp_path, nifti):
    review = start_review(segmenter.predict(oblique_volume), tmp_path / "work")
    other = tmp_path / "other.nii.gz"
    other.write_bytes(nifti.encode(np.zeros((24, 20, 15), np.uint8), nifti.oblique_affine()))
    with pytest.raises(InvalidVolumeError, match="same voxel grid"):
        attach_reference(review, other)
    shifted = tmp_path / "shifted.nii.gz"
    shifted.write_bytes(nifti.encode(np.zeros((24, 20, 16), np.uint8)))
    with pytest.raises(InvalidVolumeError, match="affine"):
        attach_reference(review, shifted)


def test_reference_with_unknown_labels_is_refused(segmenter, oblique_volume, tmp_path, nifti):
    review = start_review(segmenter.predict(oblique_volume), tmp_path / "work")
    labels = np.full((24, 20, 16), 7, np.uint8)
    path = tmp_path / "labels.nii.gz"
    path.write_bytes(nifti.encode(labels, nifti.oblique_affine()))
    with pytest.raises(InvalidVolumeError, match=r"labels from 7 to 7, outside 0 \.\. 2: expected the model.s classes"):
        attach_reference(review, path)


def test_entropy_is_zero_when_certain_and_one_when_uniform():
    probabilities = np.zeros((3, 2, 1, 1), np.float32)
    probabilities[:, 0] = 1 / 3
    probabilities[1, 1] = 1.0
    entropy = normalised_entropy(probabilities)
    assert entropy[0, 0, 0] == pytest.approx(1.0, abs=1e-3)
    assert entropy[1, 0, 0] == pytest.approx(0.0, abs=1e-3)


def test_most_uncertain_finds_the_slice_with_the_largest_entropy(segmenter, oblique_volume, tmp_path):
    review = start_review(segmenter.predict(oblique_volume, probabilities=True), tmp_path / "work")
    entropy = np.zeros(review.layers.shape, np.float16)
    entropy[3, 5, 7] = 1.0
    layers = type(review.layers)(review.layers.image, review.layers.mask, (1.0, 1.0, 1.0), ("#000000",), entropy)
    assert most_uncertain(layers) == (3, 5, 7)


def test_statistics_tables_cover_every_class(segmenter, oblique_volume, tmp_path):
    review = start_review(segmenter.predict(oblique_volume), tmp_path / "work")
    table = class_table(review)
    assert list(table["class"]) == ["background", "shell", "core"]
    assert sum(int(v.replace(",", "")) for v in table["voxels"]) == oblique_volume.data.size
    assert table["share of scan (%)"].sum() == pytest.approx(100, abs=0.05)
    edges = {c["name"]: c["touches_border"] for c in review.summary["classes"]}
    expected = ["", *("yes" if edges[n] else "no" for n in ("shell", "core"))]
    assert list(table["at scan edge"]) == expected
    histograms = intensity_histograms(review)
    assert set(histograms["class"]) == {"background", "shell", "core"}
    assert histograms.groupby("class")["voxels (%)"].sum().max() <= 100.0 + 1e-6
    assert iou_along_z(review) is None


def test_close_removes_the_session_folder(segmenter, oblique_volume, tmp_path):
    review = start_review(segmenter.predict(oblique_volume), tmp_path / "work")
    review.close()
    assert not (tmp_path / "work").exists()


def test_class_absent_from_both_masks_has_empty_agreement_cells(segmenter, oblique_volume, tmp_path, nifti):
    review = start_review(segmenter.predict(oblique_volume), tmp_path / "work")
    without_core = np.asanyarray(nib.load(review.files[0]).dataobj).copy()
    without_core[without_core == 2] = 1
    reference = tmp_path / "reference.nii.gz"
    reference.write_bytes(nifti.encode(without_core, nifti.oblique_affine()))
    canonical = to_canonical(without_core, review.orientation)
    review = replace(review, layers=replace(review.layers, mask=np.ascontiguousarray(canonical)))
    table = agreement_table(attach_reference(review, reference))
    core = table[table["class"] == "core"].iloc[0]
    assert core["Dice"] is None and core["IoU"] is None
    assert list(table["Dice"])[-1] == 1.0  # the mean covers shell alone
    payload = gr.Dataframe(interactive=False).postprocess(table).model_dump_json()
    assert "NaN" not in payload and "nan" not in payload.lower()


def test_agreement_mean_is_empty_when_no_foreground_class_is_in_either_mask(segmenter, oblique_volume, tmp_path):
    review = start_review(segmenter.predict(oblique_volume), tmp_path / "work")
    empty = np.zeros(review.layers.shape, np.uint8)
    metrics = evaluate(empty, empty, num_classes=3, class_names=review.class_names, with_hd95=False)
    table = agreement_table(replace(review, metrics=metrics))
    assert list(table["Dice"]) == [1.0, None, None, None]


def test_reference_with_non_integer_values_is_refused(segmenter, oblique_volume, tmp_path, nifti):
    review = start_review(segmenter.predict(oblique_volume), tmp_path / "work")
    path = tmp_path / "probabilities.nii.gz"
    path.write_bytes(nifti.encode(np.full((24, 20, 16), 0.25, np.float32), nifti.oblique_affine()))
    with pytest.raises(InvalidVolumeError, match=r"non-integer values \(e\.g\. 0\.25\)"):
        attach_reference(review, path)


def test_the_status_line_says_when_a_class_is_cut_by_the_edge_of_the_scan(segmenter, oblique_volume, tmp_path):
    review = start_review(segmenter.predict(oblique_volume), tmp_path / "work")
    shell, core = review.summary["classes"][1:]
    shell["touches_border"], core["touches_border"] = False, False
    assert "\n" not in status_markdown(review)
    core["touches_border"] = True
    assert status_markdown(review).endswith("\ncore reaches the edge of the scan: it may go on outside it, so its "
                                            "volume is a lower bound.")  # fmt: skip
    shell["touches_border"] = True
    expected = "\nshell, core reach the edge of the scan: they may go on outside it, so their volumes are lower bounds."
    assert status_markdown(review).endswith(expected)
