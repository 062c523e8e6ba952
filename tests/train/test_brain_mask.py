"""The brain-extraction stage: trained from generated heads on a coarser grid with the brain mask as its label,
validated on the full heads' brain masks, then chained in front of a tissue model by `python -m train chain`."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from helpers import TINY_CONFIG, write_surface_subject, write_tiny_model

from train.__main__ import main
from train.chain import REAL_FIGURES, SURFACE_FIGURES, BrainMaskSetting, chain_models, validation_heads
from train.config import ConfigError, load_config
from train.consistency import dataset_heads, evaluate_heads, real_head
from train.data import DatasetError
from train.head import CSF_REACH_MM
from train.pipeline import fit_and_export
from train.surface_head import measure_surface_head
from train.synth import brain_validation_cases, coarsened, head_sampler, load_bank, signed_distance
from unet3d import Segmenter, load_volume
from unet3d.hub import check_model_dir

BRAIN = ("synth.enabled=true", "synth.target=brain", "card.classes=[background, brain]", "data.spacing_mm=[2, 2, 2]")


def config(root, *overrides):
    return load_config(TINY_CONFIG, [f"data.root={root}", *BRAIN, *overrides])


@pytest.fixture(scope="module")
def brain_model(tiny_heads, tmp_path_factory):
    settings = config(tiny_heads, "loop.epochs=1", "loop.steps_per_epoch=2", "data.patch_size=[8, 8, 8]")
    return fit_and_export(settings, tmp_path_factory.mktemp("brain") / "run")


def test_the_coarse_bank_keeps_the_brain_where_it_covers_most_of_each_block(tiny_heads):
    bank = load_bank(tiny_heads, torch.device("cpu"))
    brain = bank.brain.float()
    coarse = coarsened(bank.__class__(**{**vars(bank), "labels": brain}), 2)
    assert coarse.t1.shape == tuple(-(-n // 2) for n in bank.t1.shape)
    assert all(head.shape == coarse.t1.shape and head.dtype == torch.uint8 for head in coarse.heads)
    assert set(coarse.labels.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(coarse.brain, coarse.labels > 0)  # the image's brain is the label's
    blocks = torch.nn.functional.avg_pool3d(brain[None, None], 2, ceil_mode=True)[0, 0]
    assert torch.equal(coarse.labels > 0, blocks > 0.5)
    assert abs(float(coarse.labels.sum()) * 8 - float(brain.sum())) < 0.1 * float(brain.sum())
    for axis, (fine, box) in enumerate(zip(bank.template_box, coarse.template_box, strict=True)):
        assert box.start * 2 >= fine.start and box.stop * 2 <= fine.stop and box.stop <= coarse.t1.shape[axis]


def test_a_brain_run_is_a_two_class_2_mm_model_validated_on_the_full_heads(brain_model, tiny_heads):
    card = yaml.safe_load((brain_model / "model.yaml").read_text())
    assert [c["name"] for c in card["classes"]] == ["background", "brain"]
    assert card["input"]["spacing_mm"] == [2.0, 2.0, 2.0]
    assert set(card["training"]["validation"]) >= {"dice_brain", "iou_brain", "mIoU"}
    validation = [f for f in card["training"]["data"]["files"] if f["split"] == "validation"]
    assert {f["role"] for f in validation} == {"head", "stripped", "brain"}
    assert all(f["file"].startswith("fullheadVal/") for f in validation)
    head = next(f["file"] for f in validation if f["role"] == "head")
    mask = Segmenter.from_pretrained(brain_model, device="cpu").predict(tiny_heads / head).mask
    assert mask.shape == load_volume(tiny_heads / head).shape and set(np.unique(mask)) <= {0, 1}


def test_a_brain_csf_run_labels_each_head_s_brain_with_its_csf_and_a_stripped_template_its_brain(tiny_heads):
    settings = config(tiny_heads, "synth.target=brain_csf")
    draw = head_sampler(settings, torch.device("cpu"), seed=0)
    bank = draw.bank
    reach = signed_distance(bank.brain, 2.0).float() <= CSF_REACH_MM + 2.0  # a 2 mm block's worth beyond
    assert bank.head_labels is not None and len(bank.head_labels) == len(bank.heads)
    assert torch.equal(bank.labels > 0, bank.brain)  # the stripped template shows the brain alone
    for head, labels in zip(bank.heads, bank.head_labels, strict=True):
        assert labels.shape == bank.t1.shape and bool((labels[bank.brain] > 0).all())
        added = (labels > 0) & ~bank.brain
        assert bool(added.any()) and bool(reach[added].all())
        assert bool((head[added] != 0).all())  # a tissue of the head, never the air around it
    _, labels = draw.volume(1, "head")
    assert torch.equal(labels, bank.head_labels[1])


def test_a_brain_csf_run_is_validated_on_the_heads_brain_with_csf_and_lists_those_masks(tiny_heads, tmp_path):
    cases = brain_validation_cases(tiny_heads, "brain_csf")
    heads = dataset_heads(tiny_heads, "validation")
    assert [c.label for c in cases] == [p for h in heads for p in (h.brain_csf, h.brain)]
    for head in heads:
        brain, with_csf = (load_volume(p).data > 0 for p in (head.brain, head.brain_csf))
        assert with_csf[brain].all() and with_csf.sum() > brain.sum()
    settings = config(tiny_heads, "synth.target=brain_csf", "loop.epochs=1", "loop.steps_per_epoch=1")
    card = yaml.safe_load((fit_and_export(settings, tmp_path / "run") / "model.yaml").read_text())
    roles = {f["role"] for f in card["training"]["data"]["files"] if f["split"] == "validation"}
    assert roles == {"head", "stripped", "brain", "brain_csf"}


def test_a_dataset_without_the_brain_with_csf_masks_is_a_clear_error_for_a_brain_csf_run(tiny_heads, tmp_path):
    dataset = json.loads((tiny_heads / "dataset.json").read_text())
    for entry in dataset["fullhead"]["validation"]:
        del entry["brain_csf"]
    old = tmp_path / "old"
    old.mkdir()
    for item in tiny_heads.iterdir():
        (old / item.name).symlink_to(item)
    (old / "dataset.json").unlink()
    (old / "dataset.json").write_text(json.dumps(dataset))
    with pytest.raises(DatasetError, match=r"no 'brain_csf' mask.*prepare-mni152"):
        brain_validation_cases(old, "brain_csf")
    assert len(brain_validation_cases(old)) == 2 * len(dataset["fullhead"]["validation"])


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        (("synth.target=skull",), "synth.target.*must be one of tissue, brain, brain_csf"),
        (("card.classes=[background, grey, white]",), r"card.classes.*must be \[background, brain\]"),
        (("data.spacing_mm=[1.5, 1.5, 1.5]",), "data.spacing_mm.*must be 1, 2, 3 ... mm"),
    ],
)
def test_a_brain_config_out_of_range_names_its_key(tiny_heads, overrides, words):
    with pytest.raises(ConfigError, match=words):
        config(tiny_heads, *overrides)


def test_chain_puts_the_brain_stage_in_front_and_drops_the_figures_measured_without_it(brain_model, tmp_path, capsys):
    tissue = write_tiny_model(tmp_path / "tissue")
    card = yaml.safe_load((tissue / "model.yaml").read_text())
    (tissue / "model.yaml").write_text(yaml.safe_dump({**card, "metrics": {"test": {"dice": 0.9}}}))
    (tissue / "README.md").write_text("tissue\n")
    out = tmp_path / "chained"
    argv = ["chain", "--model", str(tissue), "--brain-mask", str(brain_model), "--out", str(out), "--version", "2.0.0"]
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["model"] == str(out)
    assert len(check_model_dir(out)) == 7
    chained = yaml.safe_load((out / "model.yaml").read_text())
    assert chained["inference"]["brain_mask"] is True and chained["version"] == "2.0.0" and chained["metrics"] == {}
    assert (out / "brain_mask" / "model.safetensors").read_bytes() == (brain_model / "model.safetensors").read_bytes()
    assert "brain_mask: true" in (out / "README.md").read_text()
    assert Segmenter.from_pretrained(out, device="cpu").brain_mask is not None

    assert main(argv) == 1  # the folder exists now
    assert "already exists: name a new folder" in capsys.readouterr().err
    argv[4] = str(tissue)  # a tissue model (3 classes) as the brain stage
    argv[6] = str(tmp_path / "other")
    assert main(argv) == 1
    assert "lists 3 classes: a brain mask has 2" in capsys.readouterr().err

    argv[4], argv[6] = str(brain_model), str(tmp_path / "thresholded")
    assert main([*argv, "--brain-mask-threshold", "1.5"]) == 1
    assert "the brain mask threshold must be in (0, 1), got 1.5" in capsys.readouterr().err
    assert not (tmp_path / "thresholded").exists()  # refused before anything was written
    assert main([*argv, "--brain-mask-threshold", "0.25"]) == 0
    capsys.readouterr()
    assert Segmenter.from_pretrained(tmp_path / "thresholded", device="cpu").card.inference.brain_mask_threshold == 0.25


def test_chain_keeps_the_setting_whose_validation_heads_agree_best(brain_model, tiny_heads, spheres, tmp_path, capsys):
    tissue = write_tiny_model(tmp_path / "tissue")
    (tissue / "README.md").write_text("tissue\n")
    base = ["chain", "--model", str(tissue), "--brain-mask", str(brain_model), "--version", "2.0.0"]
    thresholds = ["--brain-mask-threshold", "0.35", "0.25"]  # the tiny stage: ~0.5 everywhere

    assert main([*base, "--out", str(tmp_path / "no-data"), *thresholds]) == 1
    assert "several brain mask settings need --data" in capsys.readouterr().err
    assert main([*base, "--out", str(tmp_path / "no-heads"), *thresholds, "--data", str(spheres)]) == 1
    assert "lists no full-head validation cases" in capsys.readouterr().err
    assert main([*base, "--out", str(tmp_path / "bad"), *thresholds, "1.5", "--data", str(tiny_heads)]) == 1
    assert "the brain mask threshold must be in (0, 1), got 1.5" in capsys.readouterr().err
    edges = ["--brain-mask-edge", "none", "0.3:2", "--data", str(tiny_heads)]
    assert main([*base, "--out", str(tmp_path / "bad-edge"), *thresholds, *edges]) == 1
    assert "brain_mask_edge.threshold must be below inference.brain_mask_threshold (0.25), got 0.3" in (
        capsys.readouterr().err
    )
    surface = ["--surface-head", str(tiny_heads)]
    assert main([*base, "--out", str(tmp_path / "lone-surface"), *thresholds, *surface, "--data", str(tiny_heads)]) == 1
    assert "--surface-head and --foramen-magnum-z go together" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*base, "--out", str(tmp_path / "unparsed"), "--brain-mask-edge", "0.2"])
    assert "expected THRESHOLD:MM (e.g. 0.2:2) or none, got '0.2'" in capsys.readouterr().err
    refused = ("no-data", "no-heads", "bad", "bad-edge", "lone-surface", "unparsed")
    assert not any((tmp_path / name).exists() for name in refused)  # refused before writing
    high = ["--brain-mask-threshold", "0.9", "0.8", "--data", str(tiny_heads), "--device", "cpu"]
    assert main([*base, "--out", str(tmp_path / "no-brain"), *high]) == 1
    assert "the brain-extraction stage found no brain" in capsys.readouterr().err
    assert not (tmp_path / "no-brain").exists()  # the chain is removed when its setting could not be chosen

    out = tmp_path / "chosen"
    edges = ["--brain-mask-edge", "none", "0.2:2"]
    assert main([*base, "--out", str(out), *thresholds, *edges, "--data", str(tiny_heads), "--device", "cpu"]) == 0
    choice = json.loads(capsys.readouterr().out)["brain_mask"]
    # each setting measured on its own chain, as `python -m train evaluate --split validation` would
    cases = validation_heads(tiny_heads)
    settings = [BrainMaskSetting(t, e) for t in (0.35, 0.25) for e in (None, (0.2, 2.0))]
    worst, outside = [], []
    for i, setting in enumerate(settings):
        alone = chain_models(tissue, brain_model, tmp_path / f"alone-{i}", version="2.0.0", setting=setting)
        summary = evaluate_heads(alone, cases, device="cpu")
        worst.append(min(figures["min"] for figures in summary["agreement_dice"].values()))
        outside.append(summary["outside_fraction"]["max"])
    assert [row["worst_agreement_dice"] for row in choice["settings"]] == worst
    assert [row["validation_heads"]["outside_fraction_max"] for row in choice["settings"]] == outside
    assert [row["within_outside_goal"] for row in choice["settings"]] == [f <= 0.01 for f in outside]
    eligible = [i for i, f in enumerate(outside) if f <= 0.01] or list(range(4))
    best = settings[max(eligible, key=lambda i: worst[i])]
    assert choice["chosen"] == best.card_values()
    card = yaml.safe_load((out / "model.yaml").read_text())
    assert card["brain_mask_choice"]["chosen"] == choice["chosen"] and card["brain_mask_choice"]["date"]
    assert card["brain_mask_choice"]["settings"] == choice["settings"]
    assert card["brain_mask_choice"]["command"] == (
        f"python -m train chain --model {tissue} --brain-mask {brain_model} --out {out} --version 2.0.0 "
        f"--brain-mask-threshold 0.35 0.25 --brain-mask-edge none 0.2:2 --data {tiny_heads}"
    )
    inference = Segmenter.from_pretrained(out, device="cpu").card.inference
    assert inference.brain_mask_threshold == best.threshold
    edge = inference.brain_mask_edge
    assert (edge and (edge.threshold, edge.within_mm)) == best.edge


def test_a_real_head_with_surfaces_joins_the_choice_with_its_cerebrum_and_its_neck(
    brain_model, tiny_heads, tmp_path, capsys
):
    tissue = write_tiny_model(tmp_path / "tissue")
    (tissue / "README.md").write_text("tissue\n")
    subject = write_surface_subject(tmp_path / "S9")
    argv = ["chain", "--model", str(tissue), "--brain-mask", str(brain_model), "--version", "2.0.0"]
    argv += ["--out", str(tmp_path / "chosen"), "--brain-mask-threshold", "0.35", "0.25", "--data", str(tiny_heads)]
    assert main([*argv, "--surface-head", str(subject), "--foramen-magnum-z", "-10", "--device", "cpu"]) == 0
    choice = json.loads(capsys.readouterr().out)["brain_mask"]
    cases = validation_heads(tiny_heads)
    for row, threshold in zip(choice["settings"], (0.35, 0.25), strict=True):
        alone = chain_models(tissue, brain_model, tmp_path / f"alone-{threshold}", version="2.0.0",
                             setting=BrainMaskSetting(threshold))  # fmt: skip
        head = measure_surface_head(Segmenter.from_pretrained(alone, device="cpu"), subject, -10.0)
        assert row["surface_head"] == {key: head[key] for key in SURFACE_FIGURES}
        heads = evaluate_heads(alone, cases, device="cpu")
        lowest = [figures["min"] for figures in heads["agreement_dice"].values()]
        assert row["worst_agreement_dice"] == min(*lowest, *head["cerebrum_agreement_dice"].values())
        outside = max(heads["outside_fraction"]["max"], head["below_foramen_magnum_fraction"] or 0.0)
        assert row["within_outside_goal"] == (outside <= 0.01)


def test_a_real_head_with_its_brain_mask_joins_the_choice_under_its_name(brain_model, tiny_heads, tmp_path, capsys):
    tissue = write_tiny_model(tmp_path / "tissue")
    (tissue / "README.md").write_text("tissue\n")
    given = dataset_heads(tiny_heads, "test")[0]  # a head no setting was chosen on stands in for a real one
    head, brain = given.head, given.brain
    argv = ["chain", "--model", str(tissue), "--brain-mask", str(brain_model), "--version", "2.0.0"]
    argv += ["--data", str(tiny_heads), "--real-head", str(head), str(brain), "--device", "cpu"]
    assert main([*argv, "--out", str(tmp_path / "single")]) == 1
    assert "--real-head joins a choice: give several brain mask settings" in capsys.readouterr().err
    assert main([*argv, "--out", str(tmp_path / "lost"), "--brain-mask-threshold", "0.35", "0.25",
                 "--real-head", str(head), str(tmp_path / "none.nii.gz")]) == 1  # fmt: skip
    assert "none.nii.gz is not a file: a real head is given as its scan and its brain mask" in capsys.readouterr().err
    assert not (tmp_path / "single").exists() and not (tmp_path / "lost").exists()

    out = tmp_path / "chosen"
    assert main([*argv, "--out", str(out), "--brain-mask-threshold", "0.35", "0.25"]) == 0
    choice = json.loads(capsys.readouterr().out)["brain_mask"]
    cases = validation_heads(tiny_heads)
    for row, threshold in zip(choice["settings"], (0.35, 0.25), strict=True):
        alone = chain_models(tissue, brain_model, tmp_path / f"alone-{threshold}", version="2.0.0",
                             setting=BrainMaskSetting(threshold))  # fmt: skip
        real = evaluate_heads(alone, [real_head(head, brain)], device="cpu")["cases"][0]
        assert row["real_heads"] == {str(head): {key: real[key] for key in REAL_FIGURES}}
        heads = evaluate_heads(alone, cases, device="cpu")
        lowest = [figures["min"] for figures in heads["agreement_dice"].values()]
        assert row["worst_agreement_dice"] == min(*lowest, *real["agreement_dice"].values())
        assert row["within_outside_goal"] == (max(heads["outside_fraction"]["max"], real["outside_fraction"]) <= 0.01)
    card = yaml.safe_load((out / "model.yaml").read_text())
    assert card["brain_mask_choice"]["command"].endswith(f"--data {tiny_heads} --real-head {head} {brain}")


ROOT = Path(__file__).resolve().parents[2]
ROBEX = Path("data") / "robex-ref"


@pytest.mark.slow
@pytest.mark.skipif(not (ROOT / ROBEX / "atlas.nii.gz").is_file(), reason="needs scripts/get-robex-head.sh")
def test_the_shipped_model_on_robex_s_reference_head_gives_the_figures_its_brain_mask_choice_recorded(
    monkeypatch,
):
    """A real full head with a brain mask that chose the brain mask setting (validation): the figures the card
    keeps for the chosen setting re-measure."""
    monkeypatch.chdir(ROOT)  # the card names the head by the path the choice was given
    model = Path("models") / "unet3d-brain-tissue"
    choice = yaml.safe_load((model / "model.yaml").read_text())["brain_mask_choice"]
    keys = ("brain_mask_threshold", "brain_mask_edge")
    chosen = next(r for r in choice["settings"] if all(r.get(k) == choice["chosen"].get(k) for k in keys))
    head = ROBEX / "atlas.nii.gz"
    recorded = chosen["real_heads"][str(head)]
    measured = evaluate_heads(model, [real_head(head, ROBEX / "atlas_mask.nii.gz")], device="cpu")["cases"][0]
    assert measured["outside_fraction"] == pytest.approx(recorded["outside_fraction"], abs=0.0005)
    for name, value in recorded["agreement_dice"].items():
        assert measured["agreement_dice"][name] == pytest.approx(value, abs=0.002), name
