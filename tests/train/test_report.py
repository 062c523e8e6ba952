"""Evaluation reports when a class is in neither a case's prediction nor its reference: no Dice, not a perfect one."""

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml
from helpers import TINY_CARD, write_tiny_model

from train.pipeline import evaluate_and_record
from train.report import compare_with_reference
from train.synthetic import make_spheres_dataset
from unet3d import UNet3D


def model_that_never_predicts_core(directory: Path) -> Path:
    classes = [{"index": index, **c} for index, c in enumerate(TINY_CARD["classes"])]  # as `train fit` writes them
    write_tiny_model(directory, card={**TINY_CARD, "classes": classes})
    model = UNet3D.from_pretrained(directory)
    with torch.no_grad():
        model.head.weight[2] = 0.0
        model.head.bias[2] = -1e4
    model.save_pretrained(directory)
    return directory


def spheres_without_core(root: Path) -> Path:
    data = make_spheres_dataset(root, train=1, validation=1, test=2, size=16, seed=0)
    for path in (data / "labelsTs").glob("*.nii.gz"):
        image = nib.load(path)
        labels = np.asanyarray(image.dataobj).copy()
        labels[labels == 2] = 1
        nib.save(nib.Nifti1Image(labels, image.affine), path)
    return data


def test_class_absent_from_every_case_has_no_scores_in_the_report_the_card_or_the_comparison(tmp_path):
    model = model_that_never_predicts_core(tmp_path / "model")
    data = spheres_without_core(tmp_path / "data")
    out = tmp_path / "report"
    report = evaluate_and_record(model, data, out, device="cpu", update_card=True)
    assert [case["classes"][2]["dice"] for case in report["cases"]] == [None, None]
    assert report["mean"]["core"] == {"dice": None, "iou": None, "hd95_mm": None}
    assert report["mean_dice"] == pytest.approx(report["mean"]["shell"]["dice"], abs=1e-4)
    assert json.loads((out / "report.json").read_text())["mean"]["core"]["dice"] is None
    assert (out / "iou_per_class.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    card = yaml.safe_load((model / "model.yaml").read_text())["metrics"]["test"]
    assert [dice["core"] for dice in card["per_case_dice"].values()] == [None, None]
    comparison = compare_with_reference(report, model, tolerance=0.0)
    assert list(comparison["classes"]) == ["shell"] and comparison["within_tolerance"]
