"""Training from generated heads: the run exports, records its data in the card, and stays seeded and resumable."""

import pytest
import torch
from helpers import TINY_CONFIG

from train.config import load_config
from train.data import cases
from train.pipeline import fit_and_export
from train.provenance import sha256_of
from train.trainer import Trainer
from unet3d import Segmenter

SYNTH = (
    "synth.enabled=true",
    "card.classes=[background, grey_matter, white_matter]",
    "augment.noise_probability=1.0",
    "augment.elastic_probability=0.5",
    "data.max_validation_cases=2",
)


def config(root, *overrides):
    return load_config(TINY_CONFIG, [f"data.root={root}", *SYNTH, *overrides])


def test_a_run_on_generated_heads_lists_every_file_it_learnt_from_in_the_card(tiny_heads, tmp_path):
    model_dir = fit_and_export(config(tiny_heads, "loop.epochs=1", "loop.steps_per_epoch=2"), tmp_path / "run")
    card = Segmenter.from_pretrained(model_dir, device="cpu").info()
    data = card["training"]["data"]
    roles = {entry["role"] for entry in data["files"]}
    assert {"head tissue map", "template t1 on the head canvas", "image", "label"} <= roles
    heads = [entry for entry in data["files"] if entry["role"] == "head tissue map"]
    assert [entry["seed"] for entry in heads] == list(range(20))
    for entry in data["files"]:
        assert entry["sha256"] == sha256_of(tiny_heads / entry["file"])
    validation = {entry["file"] for entry in data["files"] if entry["split"] == "validation"}
    measured = cases(tiny_heads, "validation")[:2]  # data.max_validation_cases: what the run measured, no more
    assert validation == {str(p.relative_to(tiny_heads)) for case in measured for p in (case.image, case.label)}
    assert data["head_generator"] == "train.head.generate_head" and "origin" in data["sources"]["template"]


def _weights(trainer):
    return {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}


@pytest.mark.slow
def test_a_seed_fixes_a_synthetic_run_and_resume_is_exact(tiny_heads, tmp_path):
    settings = config(tiny_heads, "loop.epochs=2", "loop.steps_per_epoch=2")
    whole = Trainer(settings, tmp_path / "whole", progress=False)
    whole.fit()
    again = Trainer(settings, tmp_path / "again", progress=False)
    again.fit()
    Trainer(settings, tmp_path / "parts", progress=False).fit(epoch_callback=lambda epoch, _: epoch == 1)
    resumed = Trainer(settings, tmp_path / "parts", progress=False)
    resumed.fit(resume=True)
    for other in (again, resumed):
        for key, value in _weights(whole).items():
            assert torch.equal(value, _weights(other)[key]), key


def test_the_full_head_recipe_stays_within_the_issues_bounds():
    from helpers import ROOT
    from torch.utils.flop_counter import FlopCounterMode

    from unet3d import UNet3D

    recipe = load_config(ROOT / "train" / "configs" / "brain-tissue-synth.yaml")
    assert recipe.synth.enabled and recipe.model.norm == "batch"  # BatchNorm: whole volume as good as patches

    def flops(**arguments):
        model = UNet3D(num_classes=3, in_channels=1, **arguments).eval()
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(torch.zeros(1, 1, 32, 32, 32))
        return counter.get_total_flops(), sum(p.numel() for p in model.parameters())

    new, parameters = flops(**recipe.model.architecture())
    previous, _ = flops(base_channels=16, depth=4, norm="batch")
    assert new <= 2 * previous and parameters * 4 <= 50 * 2**20
