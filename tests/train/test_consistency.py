"""Full-head consistency figures: on masks where the answer is known, and end to end through `train evaluate`."""

import json

import numpy as np
import pytest
import yaml
from helpers import TINY_CARD, write_tiny_model

from train.__main__ import main
from train.consistency import consistency, dataset_heads, summarise
from train.report import compare_with_reference

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
