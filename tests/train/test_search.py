import csv

import yaml

from train.config import TrainConfig, from_dict
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
