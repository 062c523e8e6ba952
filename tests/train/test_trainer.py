import csv
import itertools
import json

import numpy as np
import pytest

from train.__main__ import main
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
    Trainer(tiny_config("loop.epochs=2"), tmp_path / "run", progress=False).fit()
    resumed = Trainer(tiny_config("loop.epochs=3"), tmp_path / "run", progress=False)
    result = resumed.fit(resume=True)
    assert result.epochs_run == 3 and [h["epoch"] for h in result.history] == [1, 2, 3]
    assert resumed.step == 9


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
                 "--no-progress"]) == 0  # fmt: skip
    report_dir = tmp_path / "report"
    assert main(["evaluate", "--model", str(out / "model"), "--data", str(spheres), "--out", str(report_dir),
                 "--device", "cpu", "--update-card"]) == 0  # fmt: skip
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(summary["mean"]) == {"shell", "core"}
    card = Segmenter.from_pretrained(out / "model", device="cpu").info()
    assert card["metrics"]["test"]["measured_on"]["cases"] == ["sphere_test_00", "sphere_test_01"]
    report = json.loads((report_dir / "report.json").read_text())
    assert report["mean_dice"] == card["metrics"]["test"]["mean_dice"]
    for figure in ("iou_per_class.png", "iou_along_z.png", "predictions.png", "error_overlays.png"):
        assert (report_dir / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = load_volume(spheres / "imagesTs" / "sphere_test_00_0000.nii.gz")
    mask = Segmenter.from_pretrained(out / "model", device="cpu").predict(image).mask
    reference = np.rint(load_volume(spheres / "labelsTs" / "sphere_test_00.nii.gz").data).astype(np.uint8)
    assert report["cases"][0]["classes"][1]["dice"] == pytest.approx(dice(mask, reference, 1))


def test_cli_reports_config_errors_in_one_line(tmp_path, capsys):
    from helpers import TINY_CONFIG

    assert main(["fit", "--config", str(TINY_CONFIG), "--set", "loop.nope=1", "--out", str(tmp_path)]) == 1
    assert "train: error: unknown key(s) in config.loop: nope" in capsys.readouterr().err
