import csv
import itertools
import json
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch

from train.__main__ import main
from train.config import ConfigError
from train.optim import learning_rate_factor
from train.pipeline import fit_and_export
from train.trainer import Trainer
from unet3d import Segmenter, load_volume
from unet3d.hub import check_model_dir
from unet3d.metrics import dice


def test_fit_exports_a_model_directory_the_library_loads(tiny_config, spheres, tmp_path):
    model_dir = fit_and_export(tiny_config(), tmp_path / "run")
    assert model_dir is not None
    assert check_model_dir(model_dir) == ["config.json", "model.safetensors", "model.yaml", "README.md"]
    segmenter = Segmenter.from_pretrained(model_dir, device="cpu")
    card = segmenter.info()
    assert card["classes"][2]["name"] == "core" and card["training"]["epochs_run"] == 2
    assert "python -m train fit" in card["training"]["command"]
    assert card["training"]["steps_run"] == 6 and card["training"]["time_limited"] is False
    rows = list(csv.DictReader((tmp_path / "run" / "metrics.csv").open()))
    assert [row["epoch"] for row in rows] == ["1", "2"]
    assert {"train_loss", "lr", "dice_shell", "iou_core", "mIoU", "mDice"} <= set(rows[0])


def test_training_learns_the_spheres(tiny_config, spheres, tmp_path):
    config = tiny_config(
        "loop.epochs=8", "loop.steps_per_epoch=12", "optim.lr=0.01", "optim.warmup_steps=5", "model.base_channels=8"
    )
    result = Trainer(config, tmp_path / "run", progress=False).fit()
    assert result.best_metrics["mDice"] > 0.8, result.history
    assert result.best_metrics["mDice"] > result.history[0]["mDice"] + 0.4
    first, last = result.history[0]["train_loss"], result.history[-1]["train_loss"]
    assert last < first


def test_resume_continues_from_the_last_checkpoint(tiny_config, tmp_path):
    config = tiny_config("loop.epochs=3")
    Trainer(config, tmp_path / "run", progress=False).fit(epoch_callback=lambda epoch, _: epoch == 2)
    resumed = Trainer(config, tmp_path / "run", progress=False)
    result = resumed.fit(resume=True)
    assert result.epochs_run == 3 and [h["epoch"] for h in result.history] == [1, 2, 3]
    assert resumed.step == 9


def _weights(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}


def _assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_fine_tuning_starts_from_a_models_weights_and_the_card_says_which(tiny_config, tmp_path):
    first = fit_and_export(tiny_config(), tmp_path / "first")
    assert first is not None
    started = Trainer(tiny_config(f"model.init={first}"), tmp_path / "unused", progress=False)
    _assert_same_weights(_weights(started), dict(Segmenter.from_pretrained(first, device="cpu").model.state_dict()))
    tuned = fit_and_export(tiny_config(f"model.init={first}", "optim.lr=0.0001"), tmp_path / "tuned")
    assert tuned is not None
    card = Segmenter.from_pretrained(tuned, device="cpu").info()
    source = Segmenter.from_pretrained(first, device="cpu").source
    assert card["training"]["init"] == {"model": str(first), "revision": "local", "sha256": source.sha256}
    assert card["training"]["config"]["model"]["init"] == str(first)
    plain = Segmenter.from_pretrained(fit_and_export(tiny_config(), tmp_path / "plain"), device="cpu").info()
    assert "init" not in plain["training"]


def test_fine_tuning_from_another_network_shape_or_no_model_is_a_clear_error(tiny_config, tmp_path):
    first = fit_and_export(tiny_config(), tmp_path / "first")
    with pytest.raises(ConfigError, match=r"model.init: .* base_channels 4 \(this config: 8\)"):
        Trainer(tiny_config(f"model.init={first}", "model.base_channels=8"), tmp_path / "wide", progress=False)
    with pytest.raises(ConfigError, match=r"num_classes 3 \(this config: 2\).*card.classes"):
        Trainer(tiny_config(f"model.init={first}", "card.classes=[background, ball]"), tmp_path / "two")
    with pytest.raises(ConfigError, match=r"^model.init: .*nowhere"):
        Trainer(tiny_config(f"model.init={tmp_path / 'nowhere'}"), tmp_path / "missing", progress=False)


def test_a_seed_fixes_the_run_bit_for_bit(tiny_config, tmp_path):
    runs = []
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        trainer = Trainer(tiny_config(f"loop.seed={seed}"), tmp_path / name, progress=False)
        result = trainer.fit()
        runs.append((_weights(trainer), result.history))
    _assert_same_weights(runs[0][0], runs[1][0])
    assert runs[0][1] == [{**row} for row in runs[1][1]]
    assert any(not torch.equal(runs[0][0][k], runs[2][0][k]) for k in runs[0][0])


def test_an_interrupted_run_resumes_exactly_where_it_stopped(tiny_config, tmp_path):
    config = tiny_config("loop.epochs=3", "augment.noise_probability=1.0", "augment.elastic_probability=0.5")
    whole = Trainer(config, tmp_path / "whole", progress=False)
    whole.fit()
    # The first attempt dies after epoch 2 (the callback stands in for a kill between two checkpoints).
    Trainer(config, tmp_path / "parts", progress=False).fit(epoch_callback=lambda epoch, _: epoch == 2)
    resumed = Trainer(config, tmp_path / "parts", progress=False)
    result = resumed.fit(resume=True)
    assert result.epochs_run == 3 and resumed.step == whole.step
    _assert_same_weights(_weights(whole), _weights(resumed))
    assert [row["train_loss"] for row in result.history] == [row["train_loss"] for row in whole.history]


def test_a_checkpoint_from_an_older_trainer_is_a_clear_error(tiny_config, spheres, tmp_path, capsys):
    from helpers import TINY_CONFIG

    trainer = Trainer(tiny_config(), tmp_path / "run", progress=False)
    trainer.fit()
    state = torch.load(tmp_path / "run" / "last_checkpoint.pt", weights_only=True)
    for key in ("rng", "sampler_rng"):
        del state[key]
    torch.save(state, tmp_path / "run" / "last_checkpoint.pt")
    assert main(["fit", "--config", str(TINY_CONFIG), "--out", str(tmp_path / "run"), "--set", f"data.root={spheres}",
                 "--resume", "--no-progress"]) == 1  # fmt: skip
    err = capsys.readouterr().err
    assert "lacks rng, sampler_rng" in err and "start the run afresh without --resume" in err


def test_a_time_limit_that_shortens_the_schedule_is_recorded(tiny_config, tmp_path):
    unlimited = Trainer(tiny_config(), tmp_path / "a", progress=False).fit()
    assert not unlimited.time_limited and unlimited.steps_run == 6
    limited = Trainer(tiny_config("loop.epochs=5", "loop.time_limit_min=0.00001"), tmp_path / "b", progress=False)
    result = limited.fit()
    assert result.time_limited and result.stopped_early and result.epochs_run == 1


def test_resume_without_a_checkpoint_is_a_clear_error(tiny_config, tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint to resume from"):
        Trainer(tiny_config(), tmp_path / "empty", progress=False).fit(resume=True)


def test_early_stopping_stops_after_patience_validations_without_improvement(tiny_config, tmp_path):
    config = tiny_config("loop.epochs=10", "loop.patience=2", "loop.min_delta=0.99", "optim.lr=0.0")
    result = Trainer(config, tmp_path / "run", progress=False).fit()
    assert result.stopped_early and result.epochs_run == 3 and result.best_epoch == 1


def test_target_metric_stops_training(tiny_config, tmp_path):
    result = Trainer(tiny_config("loop.epochs=5", "loop.target=0.0"), tmp_path / "run", progress=False).fit()
    assert result.stopped_early and result.epochs_run == 1


def test_schedule_warms_up_then_decays_to_zero_by_steps_or_by_time(tiny_config):
    config = tiny_config("optim.warmup_steps=10")
    factors = [learning_rate_factor(step, 100, config) for step in range(100)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == 1.0
    assert factors[-1] < 0.01 and all(a >= b for a, b in itertools.pairwise(factors[10:]))
    assert learning_rate_factor(20, 100, config, elapsed_fraction=1.0) == pytest.approx(0.0)


def test_cli_fit_evaluate_round_trip(spheres, tmp_path, capsys):
    from helpers import TINY_CONFIG

    out = tmp_path / "cli"
    assert main(["fit", "--config", str(TINY_CONFIG), "--out", str(out), "--set", f"data.root={spheres}",
                 "--set", "augment.noise_std=[0.0, 0.05]", "--no-progress"]) == 0  # fmt: skip
    report_dir = tmp_path / "report"
    assert main(["evaluate", "--model", str(out / "model"), "--data", str(spheres), "--out", str(report_dir),
                 "--device", "cpu", "--update-card"]) == 0  # fmt: skip
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(summary["mean"]) == {"shell", "core"}
    card = Segmenter.from_pretrained(out / "model", device="cpu").info()
    assert card["metrics"]["test"]["measured_on"]["cases"] == ["sphere_test_00", "sphere_test_01"]
    command = shlex.split(card["training"]["command"])  # the card's command, pasted into a shell, is the same run
    assert command[command.index("--config") :] == ["--config", str(TINY_CONFIG), "--set", f"data.root={spheres}",
                                                    "--set", "augment.noise_std=[0.0, 0.05]"]  # fmt: skip
    report = json.loads((report_dir / "report.json").read_text())
    assert report["mean_dice"] == card["metrics"]["test"]["mean_dice"]
    for figure in ("iou_per_class.png", "iou_along_z.png", "predictions.png", "error_overlays.png"):
        assert (report_dir / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = load_volume(spheres / "imagesTs" / "sphere_test_00_0000.nii.gz")
    mask = Segmenter.from_pretrained(out / "model", device="cpu").predict(image).mask
    reference = np.rint(load_volume(spheres / "labelsTs" / "sphere_test_00.nii.gz").data).astype(np.uint8)
    assert report["cases"][0]["classes"][1]["dice"] == pytest.approx(dice(mask, reference, 1))


def test_cli_evaluate_compares_with_a_reference_card(spheres, tmp_path, capsys):
    from helpers import TINY_CONFIG

    def fit(name: str, *extra: str) -> Path:
        out = tmp_path / name
        assert main(["fit", "--config", str(TINY_CONFIG), "--out", str(out), "--set", f"data.root={spheres}",
                     "--no-progress", *extra]) == 0  # fmt: skip
        return out / "model"

    def evaluate(model: Path, *extra: str) -> int:
        return main(["evaluate", "--model", str(model), "--data", str(spheres), "--out", str(tmp_path / "report"),
                     "--device", "cpu", *extra])  # fmt: skip

    reference, other = fit("reference"), fit("other", "--set", "loop.seed=1")
    assert evaluate(reference, "--compare", str(reference)) == 1
    assert "has no per-case Dice for the test split" in capsys.readouterr().err
    assert evaluate(reference, "--update-card") == 0
    assert evaluate(reference, "--compare", str(reference), "--tolerance", "0") == 0
    comparison = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["comparison"]
    assert comparison["within_tolerance"] and comparison["cases"] == ["sphere_test_00", "sphere_test_01"]
    assert {c["difference"] for c in comparison["classes"].values()} == {0.0}
    saved = json.loads((tmp_path / "report" / "report.json").read_text())
    assert saved["comparison"] == comparison
    assert evaluate(other, "--compare", str(reference), "--tolerance", "0") == 1
    assert f"the evaluation differs from {reference} by more than 0.0: shell " in capsys.readouterr().err
    assert evaluate(other, "--compare", str(reference), "--tolerance", "1") == 0


def test_cli_reports_config_errors_in_one_line(tmp_path, capsys):
    from helpers import TINY_CONFIG

    assert main(["fit", "--config", str(TINY_CONFIG), "--set", "loop.nope=1", "--out", str(tmp_path)]) == 1
    assert "train: error: unknown key(s) in config.loop: nope" in capsys.readouterr().err
