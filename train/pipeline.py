"""End-to-end steps behind the CLI: fit → export a model directory; evaluate → report (+ card metrics)."""

from __future__ import annotations

import datetime as dt
import json
import logging
import platform
import shlex
from pathlib import Path
from typing import Any

import torch
import yaml

from .config import TrainConfig
from .export import build_card, export_model, read_card, write_card
from .provenance import training_data
from .trainer import Trainer

logger = logging.getLogger(__name__)


def fit_and_export(
    config: TrainConfig,
    out: Path,
    *,
    config_path: Path | None = None,
    overrides: list[str] | None = None,
    resume: bool = False,
    progress: bool = True,
) -> Path | None:
    """Train, then (on rank 0) export the best weights to `out/model`; returns that folder."""
    trainer = Trainer(config, out, progress=progress)
    is_main = trainer.dist.is_main
    result = trainer.fit(resume=resume)
    if not is_main:
        return None
    command = "python -m train fit" + (f" --config {config_path}" if config_path else "")
    command += "".join(f" --set {shlex.quote(o)}" for o in overrides or [])  # as a shell takes it back
    card = build_card(config)
    card["training"] = {
        "command": command,
        "seed": config.loop.seed,
        "config": config.to_dict(),
        "epochs_run": result.epochs_run,
        "best_epoch": result.best_epoch,
        "stopped_early": result.stopped_early,
        "steps_run": result.steps_run,
        "time_limited": result.time_limited,
        "minutes": round(result.seconds / 60, 2),
        "device": str(trainer.device) + (f" ({torch.cuda.get_device_name()})" if trainer.device.type == "cuda" else ""),
        "torch": str(torch.__version__),
        "python": platform.python_version(),
        # None when the best epoch was chosen by training loss without a validation run in that epoch.
        "validation": {k: round(v, 4) for k, v in result.best_metrics.items()}
        if "mIoU" in result.best_metrics
        else None,
        "data": training_data(
            config.data.root,
            heads=config.synth.enabled,
            validation=trainer.validation,
            full_heads=config.synth.brain_mask,
        ),
    }
    if trainer.init is not None:  # fine-tuned: the exact weights it started from
        start = trainer.init
        card["training"]["init"] = {"model": start.id, "revision": start.revision, "sha256": start.sha256}
    model_dir = export_model(result.model, card, out / "model")
    (out / "config.yaml").write_text(yaml.safe_dump(config.to_dict(), sort_keys=False), encoding="utf-8")
    logger.info("exported %s (best epoch %d: %s)", model_dir, result.best_epoch, result.best_metrics)
    return model_dir


def evaluate_and_record(
    model: str | Path,
    data: Path,
    out: Path,
    *,
    split: str = "test",
    device: str = "auto",
    limit: int | None = None,
    update_card: bool = False,
    compare: str | Path | None = None,
    tolerance: float = 0.01,
    external: tuple[Path, Path] | None = None,
) -> dict[str, Any]:
    """Write the evaluation report; with `update_card`, store its means in the model's model.yaml; with
    `compare`, add how far its per-class Dice lies from a reference model's card (report["comparison"]).

    The full-head consistency figures (train/consistency.py) join the report as report["consistency"]: on the
    dataset's generated heads of `split` when it lists any, and on `external` (a real head scan and the same scan
    skull-stripped, brain mask = stripped > 0) when given."""
    from .report import compare_with_reference, evaluate_model  # matplotlib: evaluation's extra, not fit's

    report = evaluate_model(model, data, out, split=split, device=device, limit=limit)
    consistency = _consistency(model, data, split, device, limit, external)
    if consistency:
        report["consistency"] = consistency
    if compare is not None:
        report["comparison"] = compare_with_reference(report, compare, tolerance=tolerance)
    (out / "report.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    if update_card:
        directory = Path(model)
        card = read_card(directory)
        card.setdefault("metrics", {})[split] = {
            "measured_on": report["dataset"],
            "per_class": report["mean"],
            "per_case_dice": {case["case"]: _dice_per_class(case) for case in report["cases"]},
            "mean_dice": report["mean_dice"],
            "mean_iou": report["mean_iou"],
            "date": dt.date.today().isoformat(),
            "command": _command(model, data, out, split, external),
        }
        if consistency:
            card["metrics"][split]["consistency"] = {
                where: {k: v for k, v in figures.items() if k != "cases"} for where, figures in consistency.items()
            }
        write_card(card, directory)
    return report


def _consistency(
    model: str | Path, data: Path, split: str, device: str, limit: int | None, external: tuple[Path, Path] | None
) -> dict[str, Any]:
    from .consistency import HeadCase, dataset_heads, evaluate_heads

    figures = {}
    generated = dataset_heads(data, split)[:limit] if limit else dataset_heads(data, split)
    if generated:
        figures["generated_heads"] = evaluate_heads(model, generated, device=device)
    if external is not None:
        head, stripped = (Path(p) for p in external)
        for path in (head, stripped):
            if not path.is_file():
                raise FileNotFoundError(f"{path} not found (--external-head / --external-stripped)")
        case = HeadCase(head.name.split(".")[0], head, stripped)
        figures["external"] = evaluate_heads(model, [case], device=device, describe_files=True)
    return figures


def _command(model: str | Path, data: Path, out: Path, split: str, external: tuple[Path, Path] | None) -> str:
    command = f"python -m train evaluate --model {model} --data {data} --out {out} --split {split}"
    if external is not None:
        command += f" --external-head {external[0]} --external-stripped {external[1]}"
    return command


def _dice_per_class(case: dict[str, Any]) -> dict[str, float | None]:
    """Foreground Dice of one evaluated case, to 4 decimals; None for a class absent from both masks."""
    return {c["name"]: None if c["dice"] is None else round(c["dice"], 4) for c in case["classes"][1:]}
