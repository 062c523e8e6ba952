"""The `unet3d` command: predict, evaluate, stats, info, serve, push."""

from __future__ import annotations

import argparse
import importlib
import io
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points
from typing import Any

import numpy as np

from . import __version__
from .card import load_card
from .errors import ParameterError, Unet3dError
from .geometry import same_grid
from .hub import default_model, model_info, push_model, resolve_source
from .io import load_mask, load_volume
from .metrics import evaluate
from .options import MODES, PRECISIONS
from .stats import LabelMasks, label_masks, mask_statistics

logger = logging.getLogger("unet3d")

# Commands that other packages add: entry points `name = "module:function"` in this group; the function takes the
# arguments after the command word and returns the exit code. They are imported only when their command runs.
PLUGIN_GROUP = "unet3d.commands"
# The serve extra's commands, also found by module path: an editable install whose metadata predates their entry
# points (pip install -e . registers them) still runs them.
KNOWN_PLUGINS = {
    "review": ("api.cases.cli:review_main", "review cases: import a batch run or mask pairs, migrate the database"),
    "users": ("api.cases.cli:users_main", "add reviewers to UNET3D_USERS_FILE, or list them"),
}
PluginMain = Callable[[Sequence[str]], int]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit code."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    if isinstance(sys.stderr, io.TextIOWrapper):  # a file name that is not UTF-8 is shown escaped, as Python's own
        sys.stderr.reconfigure(errors="backslashreplace")  # stderr does, whatever stream it was given
    parser = _parser()
    plugin = _plugin_for(arguments, parser)
    if plugin is not None:
        name, run = plugin
        return run(arguments[arguments.index(name) + 1 :])
    args = parser.parse_args(arguments)
    if args.command != "serve":  # the server logs like uvicorn, at INFO (api.main), whichever way it is started
        logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        code = int(args.handler(args))
        sys.stdout.flush()  # a reader that went away (`| head`) shows up here, not at interpreter exit
        return code
    except Unet3dError as e:
        print(f"unet3d: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("unet3d: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return _stop_quietly_on_closed_pipe()


def _plugin_for(arguments: list[str], parser: argparse.ArgumentParser) -> tuple[str, PluginMain] | None:
    """The plugin command named by the first non-option argument, when it is not a built-in command."""
    command = next((a for a in arguments if not a.startswith("-")), None)
    built_in = {"predict", "evaluate", "stats", "info", "serve", "push"}
    if command is None or command in built_in or "-h" in arguments[: arguments.index(command)]:
        return None
    found = [ep.value for ep in entry_points(group=PLUGIN_GROUP, name=command)]
    target = found[0] if found else KNOWN_PLUGINS.get(command, ("", ""))[0]
    if not target:
        return None
    module, _, function = target.partition(":")
    try:
        run: PluginMain = getattr(importlib.import_module(module), function)
    except ImportError as e:
        missing = getattr(e, "name", None) or str(e)
        message = f"unet3d {command} needs the 'serve' extra ({missing} is missing): pip install 'unet3d[serve]'"
        return command, lambda _: _fail(message)
    return command, run


def _fail(message: str) -> int:
    print(f"unet3d: error: {message}", file=sys.stderr)
    return 1


def _plugin_names() -> dict[str, str]:
    """Plugin commands for the help text (metadata only: nothing is imported)."""
    names = {name: text for name, (_, text) in KNOWN_PLUGINS.items()}
    for ep in entry_points(group=PLUGIN_GROUP):
        names.setdefault(ep.name, f"(from {ep.value.partition(':')[0]})")
    return names


def _stop_quietly_on_closed_pipe() -> int:
    """Stdout's reader has gone (`unet3d evaluate a b | head -3`): end without a traceback, as `cat` does."""
    # Python's recipe (https://docs.python.org/3/library/signal.html#note-on-sigpipe): point stdout at devnull so
    # that the flush at interpreter exit does not raise a second BrokenPipeError.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return 128 + 13  # what the shell reports for a command ended by SIGPIPE (13), like `yes | head`


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="unet3d", description="3D segmentation of NIfTI volumes with UNet3D.")
    parser.add_argument("--version", action="version", version=f"unet3d {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details to stderr")
    sub = parser.add_subparsers(dest="command", required=True)

    _add_predict(sub)

    ev = sub.add_parser("evaluate", help="compare a predicted mask with a reference mask")
    ev.add_argument("prediction", metavar="PRED")
    ev.add_argument("reference", metavar="GT")
    _class_arguments(ev, classes="highest label in either mask + 1", printed="metrics")
    ev.set_defaults(handler=_evaluate)

    stats = sub.add_parser(
        "stats",
        help="measure an existing mask: volumes, centroids, boxes, border contact, intensities",
        description="Measure each class of a label mask without segmenting again: voxels, volume (mL), centroid "
        "(scanner mm), bounding box, whether it touches the edge of the field of view, and with --image the "
        "intensities under it.",
    )
    stats.add_argument("mask", metavar="MASK", help="a .nii/.nii.gz label mask or a DICOM SEG (.dcm)")
    stats.add_argument(
        "--image", default=None, help="a volume (or DICOM series) on the mask's grid: intensity statistics per class"
    )
    _class_arguments(stats, classes="highest label + 1", printed="measurements")
    stats.set_defaults(handler=_stats)

    info = sub.add_parser("info", help="print the model card and the resolved source as JSON")
    _model_arguments(info)
    info.set_defaults(handler=_info)

    _add_serve(sub)

    push = sub.add_parser("push", help="upload a model directory to the Hugging Face Hub")
    push.add_argument("model_dir", metavar="MODEL_DIR")
    push.add_argument("repo_id", metavar="REPO_ID")
    push.add_argument("--revision", default=None, help="branch to commit to (created if missing)")
    push.add_argument("--private", action="store_true")
    push.set_defaults(handler=_push)
    for name, text in _plugin_names().items():
        sub.add_parser(name, help=text, add_help=False)  # listed in --help; main() runs them before parsing
    return parser


def _add_predict(sub: Any) -> None:
    """`unet3d predict`: one volume, or a cohort with results.csv."""
    predict = sub.add_parser(
        "predict",
        help="segment one volume or a cohort",
        description="Segment volumes. With -o DIR: DIR/<case>_mask.nii.gz per input and DIR/results.csv (one row per "
        "case, written as each finishes); running the same command again skips the cases already done.",
    )
    predict.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help=".nii/.nii.gz files, DICOM series (a folder or .zip each), folders or globs of them, or a .csv/.txt list",
    )
    predict.add_argument("-o", "--output", required=True, help="output file (one input) or folder")
    predict.add_argument(
        "--dicom-seg",
        nargs="?",
        const="",
        metavar="PATH",
        help="also write each DICOM input's mask as a DICOM SEG: to PATH (a .dcm file, or a folder for "
        "<case>_seg.dcm), or beside the mask when PATH is left out",
    )
    predict.add_argument("--series", metavar="UID", help="the SeriesInstanceUID to read from a DICOM upload")
    _model_arguments(predict)
    predict.add_argument("--device", default=os.environ.get("UNET3D_DEVICE", "auto"), help="auto, cpu, cuda, cuda:N")
    predict.add_argument("--mode", default="auto", choices=MODES)
    predict.add_argument(
        "--precision",
        default=os.environ.get("UNET3D_PRECISION", "auto"),
        choices=PRECISIONS,
        help="autocast precision (default: $UNET3D_PRECISION or auto: bf16 on CPUs with native bf16, fp16 on CUDA)",
    )
    predict.add_argument("--tta", action="store_true", help="flip test-time augmentation (4× slower)")
    predict.add_argument("--probabilities", action="store_true", help="also write <case>_probabilities.nii.gz")
    predict.add_argument("--json", action="store_true", help="print one summary JSON object per segmented input")
    predict.add_argument("--overwrite", action="store_true", help="redo cases whose outputs already exist in -o")
    predict.add_argument("--shard", metavar="I/N", help="process shard I (from 0) of N, e.g. a Slurm array task")
    predict.add_argument("--engine", default="local", choices=["local", "ray"], help="ray: a Ray cluster (extra)")
    predict.add_argument(
        "--ray-address", metavar="ADDR", help="the Ray cluster to join (default: $RAY_ADDRESS or local)"
    )
    predict.set_defaults(handler=_predict)


def _add_serve(sub: Any) -> None:
    """`unet3d serve`: the HTTP API and the review UI (the UI left out with --no-ui)."""
    serve = sub.add_parser(
        "serve",
        help="run the HTTP API and the review UI (needs the 'serve' extra)",
        description="Run the HTTP API and the review UI (/ui/). Every other setting is a UNET3D_* environment "
        "variable (see the README's HTTP API section).",
    )
    serve.add_argument(
        "--host", default="0.0.0.0", help="interface to listen on (default: all; 127.0.0.1 for this machine only)"
    )
    serve.add_argument(
        "--port", type=int, default=int(os.environ.get("PORT", "8000")), help="default: $PORT, else 8000"
    )
    serve.add_argument(
        "--model", default=None, help="model directory, .safetensors file or Hub repo id (sets UNET3D_MODEL)"
    )
    serve.add_argument("--revision", default=None, help="with a Hub --model: branch, tag or commit sha")
    serve.add_argument("--device", default=None, help="auto, cpu, cuda, cuda:N (sets UNET3D_DEVICE)")
    serve.add_argument(
        "--no-ui", action="store_true", help="the HTTP API alone, without the review UI (an inference node)"
    )
    serve.set_defaults(handler=_serve)


def _class_arguments(parser: argparse.ArgumentParser, *, classes: str, printed: str) -> None:
    """--num-classes, --model (class names), --revision and --json of the commands that read masks."""
    parser.add_argument("--num-classes", type=int, default=None, help=f"default: {classes}")
    parser.add_argument(
        "--model", default=None, help="name the classes after this model's card (folder, .safetensors or Hub id)"
    )
    parser.add_argument("--revision", default=None, help="with a Hub --model: branch, tag or commit sha")
    parser.add_argument("--json", action="store_true", help=f"print the {printed} as JSON")


def _model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        default=os.environ.get("UNET3D_MODEL") or os.environ.get("UNET3D_MODEL_PATH") or default_model(),
        help="model directory, .safetensors file or Hub repo id (default: $UNET3D_MODEL or the shipped model)",
    )
    parser.add_argument("--revision", default=os.environ.get("UNET3D_MODEL_REVISION") or None)


def _predict(args: argparse.Namespace) -> int:
    from .predict_command import predict

    return predict(args)


def _usage(message: str) -> Unet3dError:
    return ParameterError(message)


def _evaluate(args: argparse.Namespace) -> int:
    pred = load_mask(args.prediction)
    ref = load_mask(args.reference)
    if not same_grid(pred, ref):
        raise _usage(
            f"prediction {pred.shape} and reference {ref.shape} are not on the same voxel grid (shape and affine)"
        )
    read = _label_masks(args, (args.prediction, pred.data), (args.reference, ref.data))
    p, r = read.labels
    metrics = evaluate(
        p, r, num_classes=read.num_classes, spacing_mm=ref.spacing_mm, affine=ref.affine, class_names=read.names
    )
    if args.json:
        print(json.dumps(metrics))
    else:
        _print_metrics(metrics)
    return 0


def _stats(args: argparse.Namespace) -> int:
    mask = load_mask(args.mask)
    image = load_volume(args.image) if args.image else None
    if image is not None and not same_grid(image, mask):
        raise _usage(
            f"image {image.shape} and mask {mask.shape} are not on the same voxel grid (shape and affine): give "
            "--image the volume the mask was made from"
        )
    read = _label_masks(args, (args.mask, mask.data))
    measured = mask_statistics(
        read.labels[0],
        mask.affine,
        num_classes=read.num_classes,
        class_names=read.names,
        image=image.data if image else None,
    )
    if args.json:
        print(json.dumps({"mask": args.mask, "image": args.image, **measured}))
    else:
        _print_statistics(measured)
    return 0


def _print_statistics(measured: dict[str, Any]) -> None:
    with_image = "intensity" in measured["classes"][0]
    head = f"{'class':<16}{'voxels':>10}{'mL':>10}  {'centroid mm (x, y, z)':<24}{'edge':<6}"
    print((head + (f"{'mean':>10}{'std':>10}{'median':>10}" if with_image else "")).rstrip())
    for c in measured["classes"]:
        centroid = "" if c["centroid_mm"] is None else "(" + ", ".join(_mm(v) for v in c["centroid_mm"]) + ")"
        edge = {None: "", True: "yes", False: "no"}[c["touches_border"]]
        row = f"{c['name']:<16}{c['voxels']:>10}{c['volume_ml']:>10.2f}  {centroid:<24}{edge:<6}"
        if with_image and c["intensity"] is not None:
            row += "".join(f"{c['intensity'][k]:>10.4g}" for k in ("mean", "std", "median"))
        print(row.rstrip())
    print(f"foreground: {measured['foreground_volume_ml']:.2f} mL")
    cut = [c["name"] for c in measured["classes"][1:] if c["touches_border"]]
    if cut:
        print(
            f"touching the edge of the field of view: {', '.join(cut)}; these may continue outside the scan, so "
            "their volumes are lower bounds"
        )


def _mm(value: float) -> str:
    shown = f"{value:.1f}"
    return "0.0" if shown == "-0.0" else shown


def _label_masks(args: argparse.Namespace, *masks: tuple[str, np.ndarray]) -> LabelMasks:
    """The masks' labels and classes: --num-classes, else --model's card, else the highest label + 1."""
    names = _class_names(args.model, args.revision) if args.model else None
    return label_masks(masks, option="--num-classes", num_classes=args.num_classes, names=names, model=args.model)


def _class_names(model: str, revision: str | None) -> list[str]:
    return [c.name for c in load_card(resolve_source(model, revision).directory / "model.yaml").classes]


def _print_metrics(metrics: dict[str, Any]) -> None:
    print(f"{'class':<16}{'dice':>8}{'iou':>8}{'hd95 mm':>10}{'pred mL':>10}{'ref mL':>10}")
    for c in metrics["classes"]:
        print(
            f"{c['name']:<16}{_cell(c['dice'], 8, 4)}{_cell(c['iou'], 8, 4)}{_cell(c.get('hd95_mm', ''), 10, 2)}"
            f"{c['volume_ml_pred']:>10.2f}{c['volume_ml_ref']:>10.2f}"
        )
    if metrics["mean_dice"] is None:
        print("mean (foreground): none, no foreground class is in either mask")
    else:
        print(f"mean (foreground): dice {metrics['mean_dice']:.4f}  iou {metrics['mean_iou']:.4f}")
    absent = [c["name"] for c in metrics["classes"] if c["dice"] is None]
    if absent:
        print(f"absent from both masks (no dice, iou or hd95; left out of the means): {', '.join(absent)}")
    _print_slice_iou(metrics["iou_along_last_axis"])


def _print_slice_iou(curves: dict[str, list[float | None]]) -> None:
    """Per class: in how many slices along the last axis it appears, its worst and median IoU there, and where."""
    print("\nIoU along the last axis, over the slices where the class is in either mask")
    print(f"{'class':<16}{'slices':>8}{'min':>8}{'median':>8}{'worst slice':>13}")
    for name, curve in curves.items():
        shown = [(v, k) for k, v in enumerate(curve) if v is not None]
        lowest, where = min(shown, default=(None, "-"))
        if lowest == 1.0:  # every slice agrees exactly: no slice is worst
            where = "-"
        median = float(np.median([v for v, _ in shown])) if shown else None
        print(f"{name:<16}{f'{len(shown)}/{len(curve)}':>8}{_cell(lowest, 8, 4)}{_cell(median, 8, 4)}{where:>13}")


def _cell(value: float | str | None, width: int, digits: int) -> str:
    """A right-aligned table cell: the number rounded, '-' for None (no score), a string as it is."""
    if value is None:
        return f"{'-':>{width}}"
    return f"{value:>{width}}" if isinstance(value, str) else f"{value:>{width}.{digits}f}"


def _info(args: argparse.Namespace) -> int:
    source = resolve_source(args.model, args.revision)
    card = load_card(source.directory / "model.yaml")
    print(json.dumps(model_info(source, card), indent=2, default=str))
    return 0


def _serve(args: argparse.Namespace) -> int:
    # The app reads its settings from the environment when it starts, in this process.
    options = {"UNET3D_MODEL": args.model, "UNET3D_MODEL_REVISION": args.revision, "UNET3D_DEVICE": args.device}
    os.environ.update({name: value for name, value in options.items() if value is not None})
    try:  # by name: the library never imports the service (api/server.py passes the settings on to uvicorn)
        serve = importlib.import_module("api.server").serve
    except ImportError as e:
        missing = getattr(e, "name", None) or str(e)
        return _fail(f"serving needs the 'serve' extra ({missing} is missing): pip install 'unet3d[serve]'")
    serve(args.host, args.port, ui=not args.no_ui)
    return 0


def _push(args: argparse.Namespace) -> int:
    sha = push_model(args.model_dir, args.repo_id, revision=args.revision, private=args.private)
    print(json.dumps({"repo_id": args.repo_id, "revision": args.revision or "main", "commit": sha}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
