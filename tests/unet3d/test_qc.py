"""QC: the measures on synthetic volumes, the verdict and its words, the card's qc section, the uncertainty meter."""

import csv
import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from helpers import TINY_CARD, sphere_volume, write_tiny_model

from unet3d import Segmenter
from unet3d.card import DEFAULT_QC_LIMITS, QCLimit, QCSpec, card_from_dict
from unet3d.errors import CardError
from unet3d.qc import measures, tissue_classes
from unet3d.qc.checks import judge, limit_score, values_of
from unet3d.qc.measures import Measures
from unet3d.uncertainty import EntropyMeter

BRAIN_CARD = {
    **TINY_CARD,
    "classes": [
        {"name": "background", "color": "#000000"},
        {"name": "grey_matter", "color": "#e69f00"},
        {"name": "white_matter", "color": "#56b4e9"},
    ],
}
GRID = 4


def brain_prior() -> np.ndarray:
    """A (2, 4, 4, 4) prior with a clear top/bottom and front/back: grey in the lower back (a cerebellum), white in the
    upper front."""
    _, y, z = np.meshgrid(*[np.arange(GRID)] * 3, indexing="ij")
    grey = np.where((z == 0) & (y < 2), 0.8, 0.2)
    white = np.where((z >= 2) & (y >= 2), 0.7, 0.1)
    return np.stack([grey, white]).astype(np.float64)


def spec_with(prior: np.ndarray | None = None, **limits: QCLimit) -> QCSpec:
    flat = None if prior is None else (tuple(prior[0].ravel()), tuple(prior[1].ravel()))
    return QCSpec({**DEFAULT_QC_LIMITS, **limits}, True, flat, GRID if prior is not None else 0, True)


def healthy(**changes) -> Measures:
    """Measures of a plausible skull-stripped T1 brain (every check passes with the default limits)."""
    prior = brain_prior()
    maps = np.concatenate([prior, (0.3 + 0.2 * prior[0] + 0.7 * prior[1])[None]])
    values = {"air_fraction": 0.0, "structure": 0.98, "uncertainty": 0.09, "foreground_ml": 1300.0,
              "brain_ml": 1300.0, "fov_fraction": 0.2, "cut_fraction": 0.0, "cut_side": "",
              "enclosed_background": 0.03, "maps": maps}  # fmt: skip
    return Measures(**{**values, **changes})


def test_a_healthy_prediction_scores_one_and_has_no_warning():
    verdict = judge(healthy(), spec_with(brain_prior()))
    assert verdict.warnings == ()
    assert verdict.score == 1.0
    assert verdict.as_dict() == {"score": 1.0, "warnings": []}
    assert set(verdict.checks) == {"ct", "noise", "contrast", "skull_stripped", "orientation", "cut_off",
                                   "field_of_view", "volume", "uncertainty"}  # fmt: skip


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"air_fraction": 0.4}, ["CT scan", "segment a T1-weighted MRI"]),
        ({"structure": 0.01}, ["noise", "right file"]),
        ({"enclosed_background": 0.25}, ["skull-stripped", "Skull-strip the scan first", "full-head"]),
        ({"cut_fraction": 0.6, "cut_side": "superior"}, ["cut off at the superior edge", "covers the whole brain"]),
        ({"fov_fraction": 0.01}, ["fills only 1.0% of the field of view", "crop it"]),
        ({"brain_ml": 10_400.0}, ["10400 mL", "voxel size in the header", "2 mm"]),
        ({"brain_ml": 160.0}, ["160 mL", "0.5 mm"]),
        ({"uncertainty": 0.4}, ["unsure", "Review the mask"]),
    ],
)
def test_each_check_says_what_looks_wrong_and_what_to_do(changes, words):
    verdict = judge(healthy(**changes), spec_with(brain_prior()))
    assert len(verdict.warnings) == 1, verdict.warnings
    for word in words:
        assert word in verdict.warnings[0]
    assert verdict.score < 0.5


def test_a_flipped_header_is_named_upside_down_or_mirrored_front_to_back():
    spec, good = spec_with(brain_prior()), healthy()
    assert good.maps is not None
    for axis, words in ((3, "upside down"), (2, "mirrored front to back")):
        flipped = dataclasses.replace(good, maps=np.flip(good.maps, axis=axis).copy())
        verdict = judge(flipped, spec)
        assert len(verdict.warnings) == 1 and words in verdict.warnings[0], verdict.warnings
        assert "orientation header" in verdict.warnings[0]


def test_a_t2_like_contrast_is_reported_alone():
    good = healthy()
    assert good.maps is not None
    inverted = good.maps.copy()
    inverted[2] = 1.0 - 0.2 * good.maps[0] - 0.9 * good.maps[1]  # white matter darker than grey
    t2 = dataclasses.replace(good, maps=inverted, uncertainty=0.4, enclosed_background=0.3)
    verdict = judge(t2, spec_with(brain_prior()))
    assert len(verdict.warnings) == 1 and "T2-weighted" in verdict.warnings[0]
    assert verdict.checks["uncertainty"] < 0.5 and verdict.checks["skull_stripped"] < 0.5  # scored, not repeated


@pytest.mark.parametrize(("changes", "words"), [({"air_fraction": 0.5}, "CT scan"), ({"structure": 0.01}, "noise")])
def test_a_ct_or_noise_is_not_also_told_its_contrast_is_unlike_a_t1(changes, words):
    good = healthy()
    assert good.maps is not None
    inverted = good.maps.copy()
    inverted[2] = 1.0 - 0.2 * good.maps[0] - 0.9 * good.maps[1]
    verdict = judge(dataclasses.replace(good, maps=inverted, **changes), spec_with(brain_prior()))
    assert len(verdict.warnings) == 1 and words in verdict.warnings[0], verdict.warnings
    assert verdict.checks["contrast"] < 0.5  # scored, not repeated


def test_a_full_head_is_not_also_told_about_its_volume_edges_and_uncertainty():
    head = healthy(enclosed_background=0.25, brain_ml=3000.0, cut_fraction=0.3, cut_side="inferior", uncertainty=0.2)
    verdict = judge(head, spec_with(brain_prior()))
    assert len(verdict.warnings) == 1 and "skull-stripped" in verdict.warnings[0]
    assert min(verdict.checks["volume"], verdict.checks["cut_off"], verdict.checks["uncertainty"]) < 0.5


def test_uncertainty_is_reported_only_when_nothing_else_explains_it():
    verdict = judge(healthy(uncertainty=0.4, brain_ml=10_000.0), spec_with(brain_prior()))
    assert len(verdict.warnings) == 1 and "voxel size" in verdict.warnings[0]


def test_checks_that_need_a_prior_or_brain_classes_are_skipped_without_them():
    no_prior = values_of(healthy(), QCSpec())
    assert no_prior["flip_margin"] is None and no_prior["t1_contrast"] is None
    assert no_prior["enclosed_background"] is None  # QCSpec() does not say the model wants skull-stripped input
    other_model = values_of(healthy(brain_ml=None, maps=None), QCSpec())
    assert [name for name, value in other_model.items() if value is not None] == [
        "structure", "cut_fraction", "uncertainty"]  # fmt: skip


def test_the_score_is_one_at_ok_half_at_warn_and_zero_as_far_again():
    high_bad, low_bad = QCLimit(0.1, 0.2), QCLimit(0.9, 0.5)
    assert [limit_score(v, high_bad) for v in (0.0, 0.1, 0.15, 0.2, 0.3, 0.5)] == pytest.approx([1, 1, 0.75, 0.5, 0, 0])
    assert [limit_score(v, low_bad) for v in (1.0, 0.9, 0.5, 0.1)] == pytest.approx([1, 1, 0.5, 0])


def test_nothing_labelled_is_a_warning():
    verdict = judge(healthy(foreground_ml=0.0, brain_ml=0.0, uncertainty=None, maps=None), spec_with(brain_prior()))
    assert verdict.score == 0.0 and any("labelled nothing" in w for w in verdict.warnings)


# The measures on synthetic volumes


def ellipsoid(shape=(60, 72, 60), radii=(22, 28, 22)) -> np.ndarray:
    grid = np.stack(np.meshgrid(*[np.arange(n) - n / 2 for n in shape], indexing="ij"))
    return np.sqrt(sum((g / r) ** 2 for g, r in zip(grid, radii, strict=True)))


def test_air_fraction_sees_hounsfield_air_and_not_mri():
    radius = ellipsoid()
    ct = np.where(radius < 1, 40.0, -1000.0)
    assert measures.air_fraction(ct) == pytest.approx(np.mean(ct < -500), abs=0.02)
    assert measures.air_fraction(np.abs(ct)) == 0.0


def test_structure_is_high_for_a_smooth_image_and_near_zero_for_noise():
    smooth = np.clip(1.2 - ellipsoid(), 0, 1).astype(np.float32)
    noise = np.random.default_rng(0).uniform(0, 1, smooth.shape).astype(np.float32)
    assert measures.structure(smooth) > 0.9
    assert abs(measures.structure(noise)) < 0.05


def test_cut_fraction_names_the_side_where_the_brain_leaves_the_field_of_view():
    brain = ellipsoid() < 1
    assert measures.cut_fraction(brain, "RAS") == (0.0, "")
    cut, side = measures.cut_fraction(brain[:, :, :30], "RAS")  # the top half removed
    assert cut > 0.9 and side == "superior"
    assert measures.cut_fraction(brain[:, :, :30], "LPI")[1] == "inferior"  # the same array, another header


def test_enclosed_background_is_large_for_a_scalp_ring_around_a_brain():
    radius = ellipsoid()
    brain = radius < 0.75
    head = brain | ((radius > 0.9) & (radius < 1.0))  # a "scalp" labelled as tissue, with a gap (skull) inside
    assert measures.enclosed_background(brain) < 0.02
    assert measures.enclosed_background(head) > 0.2


def test_layout_maps_cover_the_tissue_bounding_box():
    labels = np.zeros((40, 40, 40), dtype=np.uint8)
    labels[10:30, 10:30, 10:20] = 1  # grey below
    labels[10:30, 10:30, 20:30] = 2  # white above
    image = labels.astype(np.float32) / 2
    maps = measures.layout_maps(labels, image, (1, 2), grid=2)
    assert maps is not None and maps.shape == (3, 2, 2, 2)
    assert np.allclose(maps[0, :, :, 0], 1) and np.allclose(maps[1, :, :, 1], 1)
    assert np.allclose(maps[2, :, :, 1], 1.0) and np.allclose(maps[2, :, :, 0], 0.5)
    assert measures.layout_maps(np.zeros_like(labels), image, (1, 2)) is None


# The card's qc section


def qc_card(**section):
    return card_from_dict({**BRAIN_CARD, "qc": section})


def test_a_card_without_qc_uses_the_documented_defaults():
    spec = card_from_dict(BRAIN_CARD).qc
    assert spec.limits == DEFAULT_QC_LIMITS and not spec.calibrated and spec.prior is None
    assert not spec.skull_stripped_input


def test_the_qc_section_sets_limits_and_the_prior():
    rows = [" ".join(["50"] * GRID * GRID)] * GRID
    spec = qc_card(skull_stripped_input=True, limits={"uncertainty": {"ok": 0.1, "warn": 0.2}},
                   prior={"grid": GRID, "grey_matter": rows, "white_matter": rows},
                   calibration={"command": "python -m train calibrate-qc ..."}).qc  # fmt: skip
    assert spec.limits["uncertainty"] == QCLimit(0.1, 0.2)
    assert spec.limits["structure"] == DEFAULT_QC_LIMITS["structure"]
    assert spec.skull_stripped_input and spec.calibrated and spec.prior_grid == GRID
    assert spec.prior is not None and spec.prior[0] == (0.5,) * GRID**3


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"limit": {}}, "unknown field.*in qc: limit"),
        ({"limits": {"noise": {"ok": 1, "warn": 0}}}, "unknown field.*in qc.limits: noise"),
        ({"limits": {"uncertainty": {"ok": 0.1}}}, r"qc.limits.uncertainty must be \{ok: number, warn: number\}"),
        ({"limits": {"uncertainty": {"ok": 0.1, "warn": 0.1}}}, "ok and warn must differ"),
        ({"limits": {"uncertainty": {"ok": 0.1, "warn": ".inf"}}}, "must be a finite number"),
        ({"skull_stripped_input": "yes"}, "true or false"),
        ({"prior": {"grid": 2, "grey_matter": ["1 2"], "white_matter": ["1 2"]}}, "must hold 8 percentages"),
        ({"prior": {"grid": 1, "grey_matter": ["120"], "white_matter": ["1"]}}, r"in \[0, 100\]"),
    ],
)
def test_a_bad_qc_section_is_refused_with_the_field_named(section, message):
    with pytest.raises(CardError, match=message):
        qc_card(**section)


def test_grey_and_white_matter_are_found_by_class_name():
    assert tissue_classes(card_from_dict(BRAIN_CARD)) == (1, 2)
    assert tissue_classes(card_from_dict(TINY_CARD)) is None


# The uncertainty meter and the summary


def test_the_entropy_meter_measures_foreground_only_and_agrees_from_logits():
    logits = torch.zeros((3, 4, 4, 4))
    logits[1, :2] = 5.0  # the first half: grey, fairly sure
    meter = EntropyMeter()
    meter.add_logits(logits)
    p = torch.softmax(torch.tensor([0.0, 5.0, 0.0]), 0)
    expected = float(-(p * p.log()).sum() / math.log(3))
    assert meter.mean == pytest.approx(expected, rel=1e-5) and meter.count == 2 * 2 * 2 // 2
    again = EntropyMeter()
    again.add_probabilities(torch.softmax(logits, 0))
    assert again.mean == pytest.approx(meter.mean)
    assert EntropyMeter().mean is None


def test_every_prediction_summary_carries_qc(tmp_path):
    model = write_tiny_model(tmp_path / "brainish", card=BRAIN_CARD)
    segmenter = Segmenter.from_pretrained(model, device="cpu")
    for mode in ("whole", "sliding"):
        prediction = segmenter.predict(sphere_volume(), mode=mode)
        qc = prediction.summary()["qc"]
        assert set(qc) == {"score", "warnings"} and 0.0 <= qc["score"] <= 1.0
        assert all(isinstance(w, str) and w for w in qc["warnings"])
        assert (qc["score"] < 0.5) == bool(qc["warnings"])
        assert prediction.qc is not None and prediction.qc.values["uncertainty"] is not None
        json.dumps(qc)


def test_the_cli_json_and_the_batch_manifest_carry_the_warnings(tmp_path, capsys):
    from helpers import write_nifti

    from unet3d.cli import main

    model = write_tiny_model(tmp_path / "brainish", card=BRAIN_CARD)
    radius = ellipsoid((40, 44, 36), (14, 16, 12))
    ct = np.where(radius < 1, 40.0, -1000.0).astype(np.float32)  # Hounsfield units: air around soft tissue
    inputs = tmp_path / "in"
    inputs.mkdir()
    write_nifti(inputs / "ct.nii.gz", ct)
    write_nifti(inputs / "mri.nii.gz", np.abs(ct))
    assert main(["predict", str(inputs), "-o", str(tmp_path / "out"), "--json", "--model", str(model)]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    by_name = {line["filename"]: line["qc"] for line in lines}
    assert any("CT scan" in w for w in by_name["ct.nii.gz"]["warnings"])
    assert not any("CT scan" in w for w in by_name["mri.nii.gz"]["warnings"])
    with open(tmp_path / "out" / "results.csv", newline="", encoding="utf-8") as file:
        rows = {row["case"]: row for row in csv.DictReader(file)}
    assert "CT scan" in rows["ct"]["qc_warnings"] and "CT scan" not in rows["mri"]["qc_warnings"]
    assert rows["ct"]["qc_warnings"] == "; ".join(by_name["ct.nii.gz"]["warnings"])
    one = ["predict", str(inputs / "ct.nii.gz"), "-o", str(tmp_path / "ct_mask.nii.gz"), "--model", str(model)]
    assert main(one) == 0
    assert "unet3d: QC warning: ct.nii.gz: This looks like a CT scan" in capsys.readouterr().err
