"""The shipped model's card tells the truth: re-evaluate it on part of the held-out set."""

import nibabel as nib
import numpy as np
import pytest
import yaml
from helpers import ROOT

from train.mni152 import TEST_CASES, TEST_SEED, build_case, load_template
from unet3d import Segmenter
from unet3d.metrics import dice

MODEL = ROOT / "models" / "unet3d-brain-tissue"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["test_lps_bias", "test_anisoz_bias_noise"])
def test_card_metrics_match_a_quick_re_evaluation(name, tmp_path):
    card = yaml.safe_load((MODEL / "model.yaml").read_text())
    expected = card["metrics"]["test"]["per_case_dice"][name]
    case = next(c for c in TEST_CASES if c.name == name)
    image, label = build_case(case, TEST_SEED, load_template())
    path = tmp_path / f"{name}.nii.gz"
    nib.save(image, path)
    mask = Segmenter.from_pretrained(MODEL, device="cpu").predict(path).mask
    reference = np.asanyarray(label.dataobj)
    for index, tissue in ((1, "grey_matter"), (2, "white_matter")):
        measured = dice(mask, reference, index)
        assert measured == pytest.approx(expected[tissue], abs=0.005), tissue
        assert measured >= 0.92


def test_shipped_weights_are_small_safetensors_with_a_measured_card():
    assert (MODEL / "model.safetensors").stat().st_size <= 25 * 2**20
    assert not list(MODEL.glob("*.bin")) and not list(MODEL.glob("*.pt"))
    metrics = yaml.safe_load((MODEL / "model.yaml").read_text())["metrics"]["test"]["per_class"]
    assert metrics["grey_matter"]["dice"] >= 0.92 and metrics["white_matter"]["dice"] >= 0.92
