"""The `unet3d` command: predict, evaluate, info, serve, push."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .card import load_card
from .errors import ParameterError, Unet3dError
from .hub import default_model, push_model, resolve_source
from .io import load_volume, stem_of
from .metrics import evaluate

logger = logging.getLogger("unet3d")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if not args.verbose else logging.INFO, format="%(levelname)s %(message)s")
    try:
        return int(args.handler(args))
    except Unet3dError as e:
        print(f"unet3d: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("unet3d: interrupted", file=sys.stderr)
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="unet3d", description="3D segmentation of NIfTI volumes with UNet3D.")
    parser.add_argument("--version", action="version", version=f"unet3d {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details to stderr")
    sub = parser.add_subparsers(dest="command", required=True)

    predict = sub.add_parser("predict", help="segment one or more volumes")
    predict.add_argument("inputs", nargs="+", metavar="INPUT", help=".nii/.nii.gz files or folders of them")
    predict.add_argument("-o", "--output", required=True, help="output file (one input) or folder")
    _model_arguments(predict)
    predict.add_argument("--device", default=os.environ.get("UNET3D_DEVICE", "auto"), help="auto, cpu, cuda, cuda:N")
    predict.add_argument("--mode", default="auto", choices=["auto", "whole", "sliding"])
    predict.add_argument("--tta", action="store_true", help="flip test-time augmentation (4× slower)")
    predict.add_argument("--probabilities", action="store_true", help="also write <stem>_probabilities.nii.gz")
    predict.add_argument("--json", action="store_true", help="print one summary JSON object per input on stdout")
    predict.set_defaults(handler=_predict)

    ev = sub.add_parser("evaluate", help="compare a predicted mask with a reference mask")
    ev.add_argument("prediction", metavar="PRED")
    ev.add_argument("reference", metavar="GT")
    ev.add_argument("--num-classes", type=int, default=None, help="default: highest label in either mask + 1")
    ev.add_argument("--json", action="store_true", help="print the metrics as JSON")
    ev.set_defaults(handler=_evaluate)

    info = sub.add_parser("info", help="print the model card and the resolved source as JSON")
    _model_arguments(info)
    info.set_defaults(handler=_info)

    serve = sub.add_parser("serve", help="run the HTTP API and the review UI (needs the 'serve' extra)")
    serve.add_argument("--host", default="0.0.0.0")
    serve.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    serve.set_defaults(handler=_serve)

    push = sub.add_parser("push", help="upload a model directory to the Hugging Face Hub")
    push.add_argument("model_dir", metavar="MODEL_DIR")
    push.add_argument("repo_id", metavar="REPO_ID")
    push.add_argument("--revision", default=None, help="branch to commit to (created if missing)")
    push.add_argument("--private", action="store_true")
    push.set_defaults(handler=_push)
    return parser


def _model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        default=os.environ.get("UNET3D_MODEL") or os.environ.get("UNET3D_MODEL_PATH") or default_model(),
        help="model directory, .safetensors file or Hub repo id (default: $UNET3D_MODEL or the shipped model)",
    )
    parser.add_argument("--revision", default=os.environ.get("UNET3D_MODEL_REVISION") or None)


def _predict(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .segmenter import Segmenter

    jobs = _plan_outputs(args.inputs, Path(args.output))
    segmenter = Segmenter.from_pretrained(args.model, args.revision, device=args.device)
    failures = 0
    show_bar = sys.stderr.isatty() or len(jobs) > 1
    for source, target in tqdm(jobs, desc="volumes", unit="vol", disable=len(jobs) < 2, file=sys.stderr):
        bar = tqdm(total=100, desc=source.name, leave=False, file=sys.stderr, disable=not show_bar)
        try:
            prediction = segmenter.predict(
                source, tta=args.tta, mode=args.mode, probabilities=args.probabilities, progress=_bar_updater(bar)
            )
            prediction.save(target)
            if args.probabilities:
                prediction.save_probabilities(
                    target.with_name(f"{stem_of(target.name).removesuffix('_mask')}_probabilities.nii.gz")
                )
        except Unet3dError as e:
            failures += 1
            tqdm.write(f"unet3d: error: {source}: {e}", file=sys.stderr)  # on its own line, bars redrawn below
            continue
        finally:
            bar.close()
        if args.json:
            print(json.dumps({**prediction.summary(), "output": str(target)}), flush=True)
    return 1 if failures else 0


def _bar_updater(bar: Any) -> Callable[[float, str], None]:
    def update(fraction: float, stage: str) -> None:
        bar.set_postfix_str(stage, refresh=False)
        bar.update(round(fraction * 100) - bar.n)

    return update


def _plan_outputs(inputs: Sequence[str], output: Path) -> list[tuple[Path, Path]]:
    """Pair each input file with its output path (see DESIGN.md: one file → that file, else DIR/<stem>_mask)."""
    files: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.name.lower().endswith((".nii", ".nii.gz")))
            if not found:
                raise _usage(f"folder '{item}' holds no .nii or .nii.gz files")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise _usage(f"input '{item}' does not exist")
    single = len(files) == 1 and not Path(inputs[0]).is_dir()
    if single and not output.is_dir() and output.name.lower().endswith((".nii", ".nii.gz")):
        return [(files[0], output)]
    if output.exists() and not output.is_dir():
        raise _usage(f"output '{output}' is a file: several inputs need an output folder")
    stems = [stem_of(f.name) for f in files]
    duplicates = sorted({s for s in stems if stems.count(s) > 1})
    if duplicates:
        raise _usage(f"several inputs share the name '{duplicates[0]}': their masks would overwrite each other")
    output.mkdir(parents=True, exist_ok=True)
    return [(f, output / f"{stem}_mask.nii.gz") for f, stem in zip(files, stems, strict=True)]


def _usage(message: str) -> Unet3dError:
    return ParameterError(message)


def _evaluate(args: argparse.Namespace) -> int:
    pred = load_volume(args.prediction)
    ref = load_volume(args.reference)
    if pred.shape != ref.shape or not np.allclose(pred.affine, ref.affine, atol=1e-3):
        raise _usage(
            f"prediction {pred.shape} and reference {ref.shape} are not on the same voxel grid (shape and affine)"
        )
    p, r = np.rint(pred.data).astype(np.int64), np.rint(ref.data).astype(np.int64)
    if p.min() < 0 or r.min() < 0:
        raise _usage("masks must hold non-negative integer labels")
    num_classes = args.num_classes or int(max(p.max(), r.max())) + 1
    metrics = evaluate(p, r, num_classes=max(num_classes, 2), spacing_mm=ref.spacing_mm)
    if args.json:
        print(json.dumps(metrics))
        return 0
    print(f"{'class':<16}{'dice':>8}{'iou':>8}{'hd95 mm':>10}{'pred mL':>10}{'ref mL':>10}")
    for c in metrics["classes"]:
        hd = c.get("hd95_mm")
        print(
            f"{c['name']:<16}{c['dice']:>8.4f}{c['iou']:>8.4f}{'' if hd is None else f'{hd:.2f}':>10}"
            f"{c['volume_ml_pred']:>10.2f}{c['volume_ml_ref']:>10.2f}"
        )
    print(f"mean (foreground): dice {metrics['mean_dice']:.4f}  iou {metrics['mean_iou']:.4f}")
    return 0


def _info(args: argparse.Namespace) -> int:
    source = resolve_source(args.model, args.revision)
    card = load_card(source.directory / "model.yaml")
    print(json.dumps({**card.to_dict(), **source.as_dict()}, indent=2, default=str))
    return 0


def _serve(args: argparse.Namespace) -> int:
    try:
        import uvicorn
    except ImportError:
        print("unet3d: error: serving needs the 'serve' extra: pip install 'unet3d[serve]'", file=sys.stderr)
        return 1
    uvicorn.run("api.main:app", host=args.host, port=args.port)
    return 0


def _push(args: argparse.Namespace) -> int:
    sha = push_model(args.model_dir, args.repo_id, revision=args.revision, private=args.private)
    print(json.dumps({"repo_id": args.repo_id, "revision": args.revision or "main", "commit": sha}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
