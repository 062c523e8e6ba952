"""`python -m train chain`'s command line: its arguments, the settings they name, and the command the card records.

The chaining and the choice themselves are train/chain.py's, imported when the command runs (they load models).
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .config import ConfigError

__all__ = ["add_chain", "parse_edge", "run_chain"]


def add_chain(command: Callable[[str, str], argparse.ArgumentParser]) -> None:
    """The chain subcommand's arguments (`command` makes a subparser: name, help)."""
    chain = command(
        "chain",
        "write a chained model: a tissue model with a brain-extraction model (synth.target=brain) as its first stage, "
        "so that full heads are segmented inside the brain it finds",
    )
    chain.add_argument("--model", required=True, type=Path, help="the tissue model directory")
    chain.add_argument("--brain-mask", required=True, type=Path, help="the brain-extraction model directory")
    chain.add_argument("--out", required=True, type=Path, help="new folder for the chained model")
    chain.add_argument("--version", required=True, help="the chained model's card version, e.g. 2.0.0")
    chain.add_argument("--description", default=None, help="the chained model's card description")
    chain.add_argument(
        "--brain-mask-threshold",
        type=float,
        nargs="+",
        default=None,
        help="brain probability from which a voxel is kept (default 0.5); given several (e.g. 0.5 0.3, with --data), "
        "the one whose full-head validation cases agree best with and without their skull",
    )
    chain.add_argument(
        "--brain-mask-edge",
        type=parse_edge,
        nargs="+",
        default=None,
        metavar="THRESHOLD:MM|none",
        help="a lower brain probability that also keeps a voxel within MM of the brain (e.g. 0.2:2), or none "
        "(default); several are tried with every --brain-mask-threshold, as those are",
    )
    chain.add_argument("--data", type=Path, default=None, help="dataset folder whose full-head validation cases choose")
    chain.add_argument(
        "--surface-head",
        type=Path,
        default=None,
        help="a real head with FreeSurfer surfaces (as for surface-head) whose figures join the choice",
    )
    chain.add_argument("--foramen-magnum-z", type=float, default=None, help="with --surface-head, as for surface-head")
    chain.add_argument(
        "--real-head",
        type=Path,
        nargs=2,
        action="append",
        default=None,
        metavar=("HEAD", "BRAIN"),
        help="a real full-head scan and its brain mask whose figures join the choice (stripped: the head inside the "
        "mask), e.g. ROBEX's reference head from scripts/get-robex-head.sh; may be given several times",
    )
    chain.add_argument("--device", default="auto", help="for choosing: auto, cpu, cuda, cuda:N or mps")


def run_chain(args: argparse.Namespace) -> int:
    """Assemble the chain, choose its brain mask setting when given several, and print the result as JSON."""
    from .chain import BrainMaskSetting, SurfaceHead, chain_models, check_settings, choose_brain_mask, validation_heads
    from .consistency import real_head

    settings = [
        BrainMaskSetting(threshold, edge)
        for threshold in args.brain_mask_threshold or [None]
        for edge in args.brain_mask_edge or [None]
    ]
    check_settings(settings)  # all of them, and the validation heads, before anything is written
    if len(settings) > 1 and args.data is None:
        raise ConfigError("several brain mask settings need --data, the dataset whose validation heads choose")
    if (args.surface_head is None) != (args.foramen_magnum_z is None) or (args.surface_head and len(settings) < 2):
        raise ConfigError("--surface-head and --foramen-magnum-z go together, with several settings to choose from")
    if args.real_head and len(settings) < 2:
        raise ConfigError("--real-head joins a choice: give several brain mask settings to choose from")
    cases = validation_heads(args.data) if len(settings) > 1 else []
    real = [real_head(head, brain) for head, brain in args.real_head or []]
    surface = SurfaceHead(args.surface_head, args.foramen_magnum_z) if args.surface_head else None
    out = chain_models(
        args.model,
        args.brain_mask,
        args.out,
        version=args.version,
        description=args.description,
        setting=settings[0],
    )
    result: dict[str, Any] = {"model": str(out)}
    if cases:
        try:
            command = _chain_command(args)
            result["brain_mask"] = choose_brain_mask(
                out, settings, cases, real=real, surface=surface, device=args.device, command=command
            )
        except BaseException:
            shutil.rmtree(out)  # a chain whose brain mask was never chosen is not the model asked for
            raise
    print(json.dumps({**result, "next": "python -m train evaluate, then python -m train calibrate-qc"}))
    return 0


def _chain_command(args: argparse.Namespace) -> str:
    """The chain command that chose, as the card records it (without --device)."""
    words = ["python", "-m", "train", "chain", "--model", str(args.model), "--brain-mask", str(args.brain_mask)]
    words += ["--out", str(args.out), "--version", args.version]
    if args.description:
        words += ["--description", args.description]
    words += ["--brain-mask-threshold", *(f"{t:g}" for t in args.brain_mask_threshold or [0.5])]
    if args.brain_mask_edge:
        words += ["--brain-mask-edge", *("none" if e is None else f"{e[0]:g}:{e[1]:g}" for e in args.brain_mask_edge)]
    words += ["--data", str(args.data)]
    if args.surface_head:
        words += ["--surface-head", str(args.surface_head), "--foramen-magnum-z", f"{args.foramen_magnum_z:g}"]
    for head, brain in args.real_head or []:
        words += ["--real-head", str(head), str(brain)]
    return shlex.join(words)


def parse_edge(text: str) -> tuple[float, float] | None:
    """`python -m train chain --brain-mask-edge`'s THRESHOLD:MM, or none (argparse's type: an ArgumentTypeError
    says what was expected)."""
    if text.strip().lower() == "none":
        return None
    try:
        threshold, mm = (float(part) for part in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected THRESHOLD:MM (e.g. 0.2:2) or none, got {text!r}") from None
    return threshold, mm
