"""`python -m train {prepare-mni152,prepare-spheres,fit,evaluate,calibrate-qc,search,chain,surface-head,push}`."""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from unet3d import Unet3dError
from unet3d.hub import push_model

from .chain_cli import add_chain, run_chain
from .config import ConfigError, load_config
from .data import DatasetError, cases
from .errors import CheckpointError, ComparisonError
from .search import SPACE

# The training extras each command needs beyond the core (fit needs none: a bare GPU machine with the core's
# dependencies trains); prepare-mni152 reads the template from nilearn unless --source names a folder.
EXTRAS = {"prepare-mni152": ("nilearn",), "evaluate": ("matplotlib",), "search": ("optuna",)}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _require_extras(args)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return COMMANDS[args.command](args)
    except (ConfigError, DatasetError, CheckpointError, ComparisonError, Unet3dError, FileNotFoundError) as e:
        print(f"train: error: {e}", file=sys.stderr)
        return 1


Command = Callable[[str, str], argparse.ArgumentParser]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m train",
        description="Train, evaluate and publish unet3d models. A dataset is an MSD / nnU-Net folder: imagesTr/, "
        'labelsTr/ and a dataset.json listing {"image", "label"} pairs under "training", "validation" and "test".',
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, text: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=text, description=text, formatter_class=_DefaultsShown)

    for add in (_add_prepare, _add_fit, _add_evaluate, _add_others, add_chain, _add_surface_head):
        add(command)
    return parser


def _add_prepare(command: Command) -> None:
    prepare = command(
        "prepare-mni152",
        "build the MNI152 brain-tissue dataset: the template, generated heads, held-out perturbed and full-head copies",
    )
    prepare.add_argument("--out", required=True, type=Path, help="dataset folder to write")
    prepare.add_argument(
        "--source", type=Path, default=None, help="folder with the template files (default: nilearn's)"
    )
    prepare.add_argument("--jobs", type=_positive, default=1, help="worker processes building the cases")
    prepare.add_argument(
        "--no-test", action="store_true", help="skip the test cases (a GPU machine needs training + validation only)"
    )
    spheres = command("prepare-spheres", "build a tiny synthetic dataset (24³ spheres in shells) for smoke runs")
    spheres.add_argument("--out", required=True, type=Path, help="dataset folder to write (tiny.yaml reads data/tiny)")


def _add_fit(command: Command) -> None:
    fit = command("fit", "train a model from a YAML config and export its best weights to OUT/model")
    fit.add_argument("--config", required=True, type=Path, help="YAML config, e.g. train/configs/brain-tissue.yaml")
    fit.add_argument("--out", type=Path, default=Path("runs/latest"), help="run folder (metrics.csv, model/)")
    fit.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override a config value, parsed as YAML (repeatable; e.g. loop.epochs=10, card.inference.overlap=0.5)",
    )
    fit.add_argument(
        "--resume", action="store_true", help="continue OUT's run from OUT/last_checkpoint.pt (same config)"
    )
    fit.add_argument("--no-progress", action="store_true", help="no progress bars (logs and metrics.csv only)")


def _add_evaluate(command: Command) -> None:
    ev = command("evaluate", "write a JSON + PNG evaluation report of a model on a dataset split")
    ev.add_argument("--model", required=True, help="model directory or Hub repo id")
    ev.add_argument("--data", required=True, type=Path, help="dataset folder (dataset.json)")
    ev.add_argument("--out", required=True, type=Path, help="report folder: report.json and the PNG figures")
    ev.add_argument("--split", default="test", help="dataset.json split with image/label pairs, e.g. validation")
    ev.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    ev.add_argument("--limit", type=_positive, default=None, help="only the first N cases")
    ev.add_argument("--update-card", action="store_true", help="store the measured metrics in the model's model.yaml")
    ev.add_argument(
        "--compare",
        metavar="MODEL_DIR",
        help="compare per-class Dice (and the generated heads' agreement and outside fraction) with this model's card "
        "(e.g. models/unet3d-brain-tissue); exit 1 beyond tolerance",
    )
    ev.add_argument("--tolerance", type=float, default=0.01, help="largest Dice difference --compare accepts")
    ev.add_argument(
        "--external-head",
        type=Path,
        help="a real full-head scan for the full-head consistency figures, e.g. mricron-data's "
        "/usr/share/mricron/templates/ch2.nii.gz (with --external-stripped)",
    )
    ev.add_argument(
        "--external-stripped",
        type=Path,
        help="the same scan skull-stripped; its voxels > 0 are the brain mask (e.g. .../ch2bet.nii.gz)",
    )


def _add_others(command: Command) -> None:
    """calibrate-qc, search and push."""
    qc = command(
        "calibrate-qc",
        "choose a model's QC limits and prior on a dataset's validation scans and synthetic negatives (never the test "
        "split) and write them into its model.yaml as qc:",
    )
    qc.add_argument("--model", required=True, type=Path, help="model directory (its model.yaml and README.md change)")
    qc.add_argument("--data", required=True, type=Path, help="dataset folder with validation scans, e.g. data/mni152")
    qc.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")

    search = command(
        "search",
        "Optuna search (TPE, median pruning on loop.monitor) over "
        + ", ".join(f"{key} {_span(kind, *args)}" for key, (kind, *args) in SPACE.items())
        + "; writes OUT/results.csv and OUT/best.yaml",
    )
    search.add_argument("--config", required=True, type=Path, help="YAML config every trial starts from")
    search.add_argument("--trials", type=_positive, default=10, help="number of trials (each a full fit)")
    search.add_argument("--out", type=Path, default=Path("runs/search"), help="folder for the trials and results")
    search.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="as for fit")

    push = command("push", "upload a model directory to the Hugging Face Hub (needs HF_TOKEN or `hf auth login`)")
    push.add_argument("--model", required=True, type=Path, help="model directory (checked before anything is sent)")
    push.add_argument("--repo-id", required=True, help="owner/name; created if missing")
    push.add_argument("--revision", default=None, help="branch to commit to (created if missing; default: main)")
    push.add_argument("--private", action="store_true", help="create the repo as private")


def _add_surface_head(command: Command) -> None:
    surface = command(
        "surface-head",
        "measure a model on a real full-head scan with FreeSurfer surfaces and no brain mask (pycortex's subject S1): "
        "grey + white matter labelled below the foramen magnum, the cerebrum's agreement with and without skull, and "
        "each result's Dice against FreeSurfer's surfaces",
    )
    surface.add_argument("--model", required=True, help="model directory or Hub repo id")
    surface.add_argument(
        "--subject",
        required=True,
        type=Path,
        help="a pycortex subject folder (anatomicals/raw.nii.gz, surfaces/{pia,wm}_{lh,rh}.gii), e.g. the "
        "filestore/db/S1 of pycortex 1.4.0's source archive",
    )
    surface.add_argument(
        "--foramen-magnum-z",
        required=True,
        type=float,
        help="world z (mm) of the axial plane below which no brain lies (S1: -66)",
    )
    surface.add_argument("--out", type=Path, default=None, help="also write the figures to this JSON file")
    surface.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    surface.add_argument(
        "--update-card",
        action="store_true",
        help="store the figures in the model directory's model.yaml, under metrics.surface_heads.<subject folder>",
    )


def _prepare_mni152(args: argparse.Namespace) -> int:
    from .mni152 import prepare

    dataset = prepare(args.out, source=args.source, test=not args.no_test, jobs=args.jobs)
    counts = {k: len(dataset[k]) for k in ("training", "validation", "test")}
    heads = {"heads": len(dataset["heads"]["training"])} | {
        f"fullhead_{split}": len(entries) for split, entries in dataset["fullhead"].items()
    }
    print(json.dumps(counts | heads))
    return 0


def _prepare_spheres(args: argparse.Namespace) -> int:
    from .synthetic import make_spheres_dataset

    make_spheres_dataset(args.out)
    print(json.dumps({k: len(cases(args.out, k)) for k in ("training", "validation", "test")}))
    return 0


def _fit(args: argparse.Namespace) -> int:
    from .pipeline import fit_and_export

    fit_and_export(
        load_config(args.config, args.set),
        args.out,
        config_path=args.config,
        overrides=args.set,
        resume=args.resume,
        progress=not args.no_progress,
    )
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    """The report's summary on stdout; exit 1 when --compare finds a Dice beyond the tolerance."""
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
        external=_external(args),
    )
    summary = {"mean": report["mean"], "mean_dice": report["mean_dice"]}
    if "consistency" in report:
        summary["consistency"] = {
            where: {k: v for k, v in figures.items() if k not in ("cases", "files", "goals")}
            for where, figures in report["consistency"].items()
        }
    comparison = report.get("comparison")
    print(json.dumps(summary | ({"comparison": comparison} if comparison else {})))
    if comparison and not comparison["within_tolerance"]:
        print(
            f"train: the evaluation differs from {args.compare} by more than {args.tolerance}: "
            + ", ".join(
                f"{name} {c['difference']:+.4f}"
                for name, c in (comparison["classes"] | comparison.get("generated_heads", {})).items()
            ),
            file=sys.stderr,
        )
        return 1
    return 0


def _calibrate_qc(args: argparse.Namespace) -> int:
    from .qc_calibration import calibrate_model

    section = calibrate_model(args.model, args.data, device=args.device)
    print(json.dumps({"skull_stripped_input": section["skull_stripped_input"], "limits": section["limits"]}))
    return 0


def _search(args: argparse.Namespace) -> int:
    from .search import search

    print(json.dumps(search(load_config(args.config, args.set), args.out, args.trials)))
    return 0


def _surface_head(args: argparse.Namespace) -> int:
    from unet3d import Segmenter

    from .surface_head import measure_surface_head, record_surface_head

    if args.update_card and not (Path(args.model) / "model.yaml").is_file():
        raise ConfigError(f"--update-card needs a model directory with its model.yaml, got {args.model}")
    segmenter = Segmenter.from_pretrained(args.model, device=args.device)
    figures = {"model": str(args.model), **measure_surface_head(segmenter, args.subject, args.foramen_magnum_z)}
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(figures, indent=2) + "\n")
    if args.update_card:
        command = f"python -m train surface-head --model {args.model} --subject {args.subject} --foramen-magnum-z "
        record_surface_head(Path(args.model), args.subject.name, figures, command + f"{args.foramen_magnum_z:g}")
    print(json.dumps(figures))
    return 0


def _push(args: argparse.Namespace) -> int:
    sha = push_model(args.model, args.repo_id, revision=args.revision, private=args.private)
    print(json.dumps({"repo_id": args.repo_id, "commit": sha}))
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "prepare-mni152": _prepare_mni152,
    "prepare-spheres": _prepare_spheres,
    "fit": _fit,
    "evaluate": _evaluate,
    "calibrate-qc": _calibrate_qc,
    "search": _search,
    "chain": run_chain,
    "surface-head": _surface_head,
    "push": _push,
}


def _external(args: argparse.Namespace) -> tuple[Path, Path] | None:
    if (args.external_head is None) != (args.external_stripped is None):
        raise ConfigError("--external-head and --external-stripped go together: the scan and the same scan stripped")
    return None if args.external_head is None else (args.external_head, args.external_stripped)


def _require_extras(args: argparse.Namespace) -> None:
    """Exit with how to install them when the command's extras are missing (instead of a traceback)."""
    needed = EXTRAS.get(args.command, ())
    if args.command == "prepare-mni152" and args.source is not None:
        needed = ()
    for name in needed:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError:
            sys.exit(
                f"python -m train: error: {args.command} needs the training extras ({name} is missing): "
                "run scripts/setup.sh --train (or pip install -r requirements-train.txt)"
            )


class _DefaultsShown(argparse.HelpFormatter):
    """Help that names an option's default where it has one (not for flags and required options)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default not in (None, False, [], argparse.SUPPRESS):
            text += " (default: %(default)s)"
        return text


def _span(kind: str, *args: Any) -> str:
    """One search dimension for the help: [low, high] or {choice, ...}."""
    if kind == "choice":
        return "{" + ", ".join(map(str, args[0])) + "}"
    return f"[{args[0]:g}, {args[1]:g}]"


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


if __name__ == "__main__":
    raise SystemExit(main())
