import csv

import pytest
import yaml

from train.config import ConfigError, TrainConfig, from_dict
from train.search import search


def test_search_runs_trials_and_writes_results_and_best_config(tiny_config, tmp_path):
    summary = search(tiny_config("loop.epochs=2", "loop.steps_per_epoch=2"), tmp_path, trials=2)
    assert summary["trials"] == 2
    rows = list(csv.DictReader((tmp_path / "results.csv").open()))
    assert [row["state"] for row in rows] == ["COMPLETE", "COMPLETE"]
    assert {"optim.lr", "model.base_channels"} <= set(rows[0])
    best = yaml.safe_load((tmp_path / "best.yaml").read_text())
    config = from_dict(TrainConfig, best, "best")
    assert config.optim.lr == summary["best_params"]["optim.lr"]
    assert (tmp_path / "best.yaml").read_text().startswith("# best of 2 trials by mIoU")


def test_search_by_training_loss_minimises_it(tiny_config, tmp_path):
    summary = search(tiny_config("loop.epochs=2", "loop.steps_per_epoch=1", "loop.monitor=loss"), tmp_path, trials=1)
    rows = list(csv.DictReader((tmp_path / "results.csv").open()))
    assert rows[0]["state"] == "COMPLETE" and float(rows[0]["value"]) == summary["best_value"] > 0
    assert (tmp_path / "best.yaml").read_text().startswith("# best of 1 trials by loss")


def test_search_refuses_zero_trials_and_a_folder_with_a_search(tiny_config, tmp_path):
    with pytest.raises(ConfigError, match="--trials must be at least 1, got 0"):
        search(tiny_config(), tmp_path, trials=0)
    (tmp_path / "trial_000").mkdir()
    with pytest.raises(ConfigError, match="already holds a search: choose another --out"):
        search(tiny_config(), tmp_path, trials=1)
