"""`python -m train {prepare-mni152,fit,evaluate,search,push}`."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from unet3d import Unet3dError
from unet3d.hub import push_model

try:  # the service's venv has none of these: say how to get them instead of a traceback
    import matplotlib  # noqa: F401
    import nilearn  # noqa: F401
    import optuna  # noqa: F401
except ModuleNotFoundError as e:
    sys.exit(
        f"python -m train: error: training needs its extras ({e.name} is missing): "
        "run scripts/setup.sh --train (or pip install -r requirements-train.txt)"
    )

from .config import ConfigError, load_config
from .data import DatasetError
from .report import ComparisonError
from .trainer import CheckpointError


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train", description="Train, evaluate and publish unet3d models.")
    sub = parser.add_subparsers(dest="command", required=True)

    prepare = sub.add_parser("prepare-mni152", help="build the MNI152 brain-tissue dataset + held-out perturbed copies")
    prepare.add_argument("--out", required=True, type=Path)
    prepare.add_argument(
        "--source", type=Path, default=None, help="folder with the template files (default: nilearn's)"
    )

    fit = sub.add_parser("fit", help="train a model from a YAML config")
    fit.add_argument("--config", required=True, type=Path)
    fit.add_argument("--out", type=Path, default=Path("runs/latest"))
    fit.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override a config value")
    fit.add_argument("--resume", action="store_true", help="continue from OUT/last_checkpoint.pt")
    fit.add_argument("--no-progress", action="store_true")

    ev = sub.add_parser("evaluate", help="write a JSON + PNG evaluation report")
    ev.add_argument("--model", required=True)
    ev.add_argument("--data", required=True, type=Path)
    ev.add_argument("--out", required=True, type=Path)
    ev.add_argument("--split", default="test")
    ev.add_argument("--device", default="auto")
    ev.add_argument("--limit", type=int, default=None, help="only the first N cases")
    ev.add_argument("--update-card", action="store_true", help="store the measured metrics in the model's model.yaml")
    ev.add_argument(
        "--compare",
        metavar="MODEL_DIR",
        help="compare per-class Dice with this model's card (e.g. models/unet3d-brain-tissue); exit 1 beyond tolerance",
    )
    ev.add_argument("--tolerance", type=float, default=0.01, help="largest Dice difference --compare accepts")

    search = sub.add_parser("search", help="Optuna hyper-parameter search")
    search.add_argument("--config", required=True, type=Path)
    search.add_argument("--trials", type=int, default=10)
    search.add_argument("--out", type=Path, default=Path("runs/search"))
    search.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")

    push = sub.add_parser("push", help="upload a model directory to the Hugging Face Hub")
    push.add_argument("--model", required=True, type=Path)
    push.add_argument("--repo-id", required=True)
    push.add_argument("--revision", default=None)
    push.add_argument("--private", action="store_true")

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return _run(args)
    except (ConfigError, DatasetError, CheckpointError, ComparisonError, Unet3dError, FileNotFoundError) as e:
        print(f"train: error: {e}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace) -> int:
    if args.command == "prepare-mni152":
        from .mni152 import prepare

        dataset = prepare(args.out, source=args.source)
        print(json.dumps({k: len(dataset[k]) for k in ("training", "validation", "test")}))
    elif args.command == "fit":
        from .pipeline import fit_and_export

        fit_and_export(
            load_config(args.config, args.set),
            args.out,
            config_path=args.config,
            overrides=args.set,
            resume=args.resume,
            progress=not args.no_progress,
        )
    elif args.command == "evaluate":
        from .pipeline import evaluate_and_record

        report = evaluate_and_record(
            args.model,
            args.data,
            args.out,
            split=args.split,
            device=args.device,
            limit=args.limit,
            update_card=args.update_card,
            compare=args.compare,
            tolerance=args.tolerance,
        )
        summary = {"mean": report["mean"], "mean_dice": report["mean_dice"]}
        comparison = report.get("comparison")
        print(json.dumps(summary | ({"comparison": comparison} if comparison else {})))
        if comparison and not comparison["within_tolerance"]:
            print(
                f"train: per-class Dice differs from {args.compare} by more than {args.tolerance}: "
                + ", ".join(f"{name} {c['difference']:+.4f}" for name, c in comparison["classes"].items()),
                file=sys.stderr,
            )
            return 1
    elif args.command == "search":
        from .search import search

        print(json.dumps(search(load_config(args.config, args.set), args.out, args.trials)))
    elif args.command == "push":
        sha = push_model(args.model, args.repo_id, revision=args.revision, private=args.private)
        print(json.dumps({"repo_id": args.repo_id, "commit": sha}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
