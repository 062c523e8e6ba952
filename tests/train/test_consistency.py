"""Full-head consistency figures: on masks where the answer is known, and end to end through `train evaluate`."""

import json

import nibabel as nib
import numpy as np
import pytest
import yaml
from helpers import TINY_CARD, write_tiny_model

from train.__main__ import main
from train.consistency import HeadCase, consistency, dataset_heads, evaluate_heads, real_head, summarise
from train.report import compare_with_reference
from unet3d import load_volume

NAMES = ["background", "grey_matter", "white_matter"]


def test_outside_fraction_and_agreement_on_masks_with_a_known_answer():
    brain = np.zeros((20, 20, 20), dtype=bool)
    brain[5:15, 5:15, 5:15] = True
    stripped = np.zeros((20, 20, 20), dtype=np.uint8)
    stripped[5:15, 5:15, 5:15] = 1  # 1000 grey
    stripped[8:12, 8:12, 8:12] = 2  # 64 white inside it: 936 grey
    full = stripped.copy()
    full[0:2, 0:5, 0:5] = 1  # 50 grey voxels outside the brain (skull called tissue)
    full[8, 8, 8:12] = 1  # 4 white voxels called grey
    figures = consistency(full, stripped, brain, NAMES, voxel_ml=0.1)
    assert figures["outside_fraction"] == pytest.approx(50 / (990 + 60), abs=1e-5)
    assert figures["outside_ml"] == pytest.approx(5.0)
    assert figures["agreement_dice"]["grey_matter"] == pytest.approx(round(2 * 936 / (936 + 990), 4))
    assert figures["agreement_dice"]["white_matter"] == pytest.approx(round(2 * 60 / (60 + 64), 4))
    assert figures["volume_ml_full"] == {"grey_matter": 99.0, "white_matter": 6.0}
    assert figures["volume_ml_stripped"] == {"grey_matter": 93.6, "white_matter": 6.4}


def test_the_goals_hold_only_when_every_case_meets_them():
    good = {"outside_fraction": 0.004, "agreement_dice": {"grey_matter": 0.97, "white_matter": 0.96}}
    leaky = {"outside_fraction": 0.02, "agreement_dice": {"grey_matter": 0.97, "white_matter": 0.96}}
    split = {"outside_fraction": 0.0, "agreement_dice": {"grey_matter": 0.94, "white_matter": 0.99}}
    assert summarise([good], NAMES)["meets_goals"] is True
    assert summarise([good, leaky], NAMES)["meets_goals"] is False
    summary = summarise([good, split], NAMES)
    assert summary["meets_goals"] is False and summary["agreement_dice"]["grey_matter"]["min"] == 0.94
    assert summary["outside_fraction"] == {"max": 0.004, "mean": 0.002}


def test_evaluate_reports_consistency_on_generated_heads_and_an_external_scan(tiny_heads, tmp_path, capsys):
    colours = ("#000000", "#e69f00", "#56b4e9")
    card = {
        **TINY_CARD,
        "classes": [{"index": i, "name": n, "color": c} for i, (n, c) in enumerate(zip(NAMES, colours, strict=True))],
    }
    model = write_tiny_model(tmp_path / "model", card=card)
    external = dataset_heads(tiny_heads, "test")[0]
    code = main(
        ["evaluate", "--model", str(model), "--data", str(tiny_heads), "--out", str(tmp_path / "report"),
         "--device", "cpu", "--update-card", "--limit", "2",
         "--external-head", str(external.head), "--external-stripped", str(external.stripped)]
    )  # fmt: skip
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    generated = report["consistency"]["generated_heads"]
    assert [c["case"] for c in generated["cases"]] == [c.name for c in dataset_heads(tiny_heads, "test")[:2]]
    for row in generated["cases"]:
        assert 0 <= row["outside_fraction"] <= 1 and set(row["dice_full_vs_label"]) == set(NAMES[1:])
    assert set(report["consistency"]["external"]["files"]) == {str(external.head), str(external.stripped)}
    assert set(printed["consistency"]) == {"generated_heads", "external"}
    saved = yaml.safe_load((model / "model.yaml").read_text())["metrics"]["test"]
    assert "cases" not in saved["consistency"]["generated_heads"]
    assert "--external-head" in saved["command"]


def test_external_head_without_its_stripped_scan_is_a_clear_error(tiny_heads, tmp_path, capsys):
    model = write_tiny_model(tmp_path / "model")
    code = main(["evaluate", "--model", str(model), "--data", str(tiny_heads), "--out", str(tmp_path / "r"),
                 "--external-head", str(tmp_path / "x.nii.gz")])  # fmt: skip
    assert code == 1
    assert "--external-head and --external-stripped go together" in capsys.readouterr().err


def test_a_real_head_given_with_its_brain_mask_is_measured_as_the_head_and_the_head_inside_the_mask(
    tiny_heads, tmp_path
):
    model = write_tiny_model(tmp_path / "model")
    case = dataset_heads(tiny_heads, "validation")[0]
    head = nib.load(case.head)
    brain = np.zeros(head.shape, dtype=np.uint8)  # a mask that cuts the generated brain: a different answer
    brain[2:-2, 2:-2, 3:-3] = 1
    nib.save(nib.Nifti1Image(brain, head.affine), tmp_path / "brain.nii.gz")
    inside = load_volume(case.head).data * brain  # the voxel values the head is measured with
    nib.save(nib.Nifti1Image(inside, head.affine), tmp_path / "stripped.nii.gz")

    given = real_head(case.head, tmp_path / "brain.nii.gz")
    assert given.name == str(case.head) and given.stripped is None
    measured = evaluate_heads(model, [given], device="cpu", describe_files=True)
    written = HeadCase("written", case.head, tmp_path / "stripped.nii.gz", tmp_path / "brain.nii.gz")
    expected = evaluate_heads(model, [written], device="cpu")
    for key in ("outside_fraction", "outside_ml", "agreement_dice", "volume_ml_full", "volume_ml_stripped"):
        assert measured["cases"][0][key] == expected["cases"][0][key]
    assert set(measured["files"]) == {str(case.head), str(tmp_path / "brain.nii.gz")}


def test_a_real_head_needs_both_of_its_files(tmp_path):
    from train.data import DatasetError

    (tmp_path / "head.nii.gz").write_bytes(b"")
    with pytest.raises(DatasetError, match=r"brain\.nii\.gz is not a file: a real head is given as its scan and its"):
        real_head(tmp_path / "head.nii.gz", tmp_path / "brain.nii.gz")
    with pytest.raises(ValueError, match="a stripped scan or a brain mask is needed"):
        HeadCase("bare", tmp_path / "head.nii.gz", None)


def heads_summary(grey: float, white: float, outside: float) -> dict:
    return {
        "outside_fraction": {"max": outside, "mean": outside},
        "agreement_dice": {"grey_matter": {"min": grey, "mean": grey}, "white_matter": {"min": white, "mean": white}},
    }


def test_compare_holds_a_rerun_to_the_cards_generated_head_figures_too(tmp_path):
    # A chain's brain stage hardly touches the skull-stripped test cases: its re-run is judged on the heads as well.
    dice = {"grey_matter": 0.95, "white_matter": 0.95}
    measured = {"measured_on": {"name": "heads"}, "per_case_dice": {"a": dice},
                "consistency": {"generated_heads": heads_summary(0.98, 0.99, 0.0002)}}  # fmt: skip
    (tmp_path / "model.yaml").write_text(yaml.safe_dump({"metrics": {"test": measured}}))

    def report(grey: float) -> dict:
        return {"dataset": {"name": "heads", "split": "test"}, "mean": dice,
                "cases": [{"case": "a", "classes": [{}] + [{"name": n, "dice": d} for n, d in dice.items()]}],
                "consistency": {"generated_heads": heads_summary(grey, 0.985, 0.0012)}}  # fmt: skip

    close = compare_with_reference(report(0.975), tmp_path, tolerance=0.01)
    assert close["within_tolerance"] and close["generated_heads"]["agreement_dice_grey_matter"] == {
        "reference": 0.98, "this": 0.975, "difference": -0.005}  # fmt: skip
    assert close["generated_heads"]["outside_fraction"]["difference"] == pytest.approx(0.001)
    apart = compare_with_reference(report(0.95), tmp_path, tolerance=0.01)
    assert not apart["within_tolerance"] and all(c["difference"] == 0 for c in apart["classes"].values())
