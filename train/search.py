"""Hyper-parameter search with Optuna (median pruning on the validation metric)."""

from __future__ import annotations

import copy
import csv
from pathlib import Path
from typing import Any, Literal

import yaml

from .config import ConfigError, TrainConfig
from .trainer import Trainer, monitored

# Each entry: dotted config key → (kind, low, high or choices). Kept small: the loop is the expensive part.
SPACE: dict[str, tuple[Any, ...]] = {
    "optim.lr": ("log", 3e-4, 5e-3),
    "optim.weight_decay": ("log", 1e-6, 1e-3),
    "data.foreground_fraction": ("float", 0.2, 0.8),
    "model.base_channels": ("choice", [8, 16]),
    "model.dropout": ("choice", [0.0, 0.1]),
}


def search(config: TrainConfig, out: Path, trials: int, *, seed: int = 0) -> dict[str, Any]:
    """Run `trials` trials, each a full `Trainer.fit` with pruning per epoch; write results.csv and best.yaml."""
    import optuna

    if trials < 1:
        raise ConfigError(f"--trials must be at least 1, got {trials}")
    if (out / "results.csv").exists() or any(out.glob("trial_*")):
        raise ConfigError(f"{out} already holds a search: choose another --out (or delete it)")
    out.mkdir(parents=True, exist_ok=True)
    monitor = config.loop.monitor
    direction: Literal["minimize", "maximize"] = "minimize" if monitor == "loss" else "maximize"
    study = optuna.create_study(
        direction=direction,
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1),
    )

    def objective(trial: optuna.Trial) -> float:
        trial_config = _suggest(config, trial)

        def report(epoch: int, metrics: dict[str, float]) -> bool:
            trial.report(monitored(metrics, monitor), epoch)
            return trial.should_prune()

        result = Trainer(trial_config, out / f"trial_{trial.number:03d}", progress=False).fit(epoch_callback=report)
        if trial.should_prune():
            raise optuna.TrialPruned()
        return monitored(result.best_metrics, monitor)

    study.optimize(objective, n_trials=trials)
    _write_results(study, out / "results.csv")
    best = _apply(config, study.best_params)
    (out / "best.yaml").write_text(
        f"# best of {trials} trials by {monitor} = {study.best_value:.4f}\n"
        + yaml.safe_dump(best.to_dict(), sort_keys=False),
        encoding="utf-8",
    )
    return {"best_value": study.best_value, "best_params": study.best_params, "trials": len(study.trials)}


def _suggest(config: TrainConfig, trial: Any) -> TrainConfig:
    params = {}
    for key, (kind, *args) in SPACE.items():
        if kind == "log":
            params[key] = trial.suggest_float(key, args[0], args[1], log=True)
        elif kind == "float":
            params[key] = trial.suggest_float(key, args[0], args[1])
        else:
            params[key] = trial.suggest_categorical(key, args[0])
    return _apply(config, params)


def _apply(config: TrainConfig, params: dict[str, Any]) -> TrainConfig:
    updated = copy.deepcopy(config)
    for key, value in params.items():
        section, name = key.split(".")
        setattr(getattr(updated, section), name, value)
    return updated


def _write_results(study: Any, path: Path) -> None:
    keys = list(SPACE)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["trial", "state", "value", *keys])
        for trial in study.trials:
            writer.writerow([trial.number, trial.state.name, trial.value, *(trial.params.get(k) for k in keys)])
