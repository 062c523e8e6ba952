"""`unet3d predict`: one volume to one file, or a cohort to a folder through a resumable batch run; a DICOM input's
mask can also be written as a DICOM SEG (`--dicom-seg`)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from .batch import (
    Engine,
    LocalEngine,
    Outcome,
    PredictOptions,
    find_sources,
    parse_shard,
    plan_cases,
    prepare_batch,
    run_batch,
    select_shard,
)
from .batch.inputs import Source
from .errors import ParameterError, Unet3dError
from .formats import looks_like_dicom
from .io import stem_of
from .segmenter import Segmenter


def predict(args: argparse.Namespace) -> int:
    """Run `unet3d predict` with its parsed arguments; returns the exit code (1 when any case failed)."""
    sources = find_sources(args.inputs)
    output = Path(args.output)
    options = PredictOptions(tta=args.tta, mode=args.mode, probabilities=args.probabilities)
    if _names_one_file(args.inputs, [s.path for s in sources], output):
        if args.shard or args.engine != "local":
            raise ParameterError("--shard and --engine ray run cohorts: pass -o a folder, e.g. -o masks/")
        seg = _single_seg_path(args.dicom_seg, sources[0].path, output)
        return _predict_one(args, sources[0].path, output, options, seg)
    return _predict_cohort(args, sources, output, options)


def _predict_one(
    args: argparse.Namespace, source: Path, target: Path, options: PredictOptions, seg: Path | None
) -> int:
    """One input, `-o` a file name: write that file (and the SEG; no results.csv), with a progress bar on a
    terminal."""
    segmenter = Segmenter.from_pretrained(args.model, args.revision, device=args.device, precision=args.precision)
    with tqdm(total=100, desc=source.name, leave=False, file=sys.stderr, disable=not sys.stderr.isatty()) as bar:
        try:
            progress = _bar_updater(bar)
            prediction = segmenter.predict(source, tta=options.tta, mode=options.mode, series=args.series,
                                           probabilities=options.probabilities, progress=progress)  # fmt: skip
            prediction.save(target)
            if options.probabilities:
                prediction.save_probabilities(
                    target.with_name(f"{stem_of(target.name).removesuffix('_mask')}_probabilities.nii.gz")
                )
            written = {"dicom_seg": str(prediction.save_dicom_seg(seg))} if seg is not None else {}
        except Unet3dError as e:
            bar.write(f"unet3d: error: {source}: {e}", file=sys.stderr)  # which input, as a cohort run says it
            return 1
    for warning in prediction.qc.warnings if prediction.qc is not None else ():  # advice: the exit code stays 0
        print(f"unet3d: QC warning: {source.name}: {warning}", file=sys.stderr)
    if args.json:
        print(json.dumps({**prediction.summary(), "output": str(target), **written}), flush=True)
    return 0


def _single_seg_path(option: str | None, source: Path, mask: Path) -> Path | None:
    """Where `--dicom-seg` puts one input's SEG: the path given (a .dcm file, or a folder for `<stem>_seg.dcm`), or
    with no value the mask's folder; refused up front for an input that is not DICOM."""
    if option is None:
        return None
    if not looks_like_dicom(source):
        raise ParameterError(
            f"--dicom-seg writes a DICOM SEG, which must reference DICOM images, but '{source.name}' is not DICOM: "
            "leave --dicom-seg out (the NIfTI mask is written), or segment the DICOM series itself"
        )
    return Path(option) if option else mask.parent


def _predict_cohort(args: argparse.Namespace, sources: Sequence[Source], folder: Path, options: PredictOptions) -> int:
    """Inputs to a folder: a resumable batch run recorded in results.csv (see docs/batch.md)."""
    shard = parse_shard(args.shard) if args.shard else (0, 1)
    segs = _seg_folder(args.dicom_seg, folder)
    planned = plan_cases(sources, folder, probabilities=options.probabilities, seg_folder=segs, series=args.series)
    cases = select_shard(planned, *shard)
    folder.mkdir(parents=True, exist_ok=True)
    engine = _engine(args, options)
    batch = prepare_batch(cases, folder, engine, shard=shard, overwrite=args.overwrite)
    if batch.skipped:
        print(
            f"unet3d: {len(batch.skipped)} of {len(cases)} cases already done in {folder} (skipped; --overwrite "
            "redoes them)",
            file=sys.stderr,
        )
    bar = tqdm(total=batch.remaining, desc="cases", unit="case", file=sys.stderr, disable=batch.remaining < 2)
    with bar:
        report = run_batch(batch, engine.outcomes(batch.todo), _case_reporter(bar, json_lines=args.json))
    if report.failed:
        print(f"unet3d: {report.failed} of {len(cases)} cases failed: see {report.results}", file=sys.stderr)
        return 1
    return 0


def _seg_folder(option: str | None, folder: Path) -> Path | None:
    """Where a batch's SEGs go: beside the masks (`--dicom-seg` alone), or in the folder given."""
    if option is None:
        return None
    if option.lower().endswith(".dcm") and not Path(option).is_dir():
        raise ParameterError(
            f"--dicom-seg '{option}' names one file, but a batch writes one SEG per DICOM input: pass --dicom-seg "
            "alone (each SEG beside its mask) or a folder"
        )
    return Path(option) if option else folder


def _engine(args: argparse.Namespace, options: PredictOptions) -> Engine:
    if args.engine == "ray":
        from .batch.ray_engine import RayEngine

        return RayEngine(args.model, args.revision, options, address=args.ray_address, device=args.device)
    segmenter = Segmenter.from_pretrained(args.model, args.revision, device=args.device, precision=args.precision)
    return LocalEngine(segmenter, options)


def _case_reporter(bar: Any, *, json_lines: bool) -> Callable[[Outcome], None]:
    """Per finished case: advance the bar (with the failures so far), say why a case failed, print its JSON line."""
    failed = 0

    def report(outcome: Outcome) -> None:
        nonlocal failed
        if outcome.status == "failed":
            failed += 1
            bar.write(f"unet3d: error: {outcome.case.input}: {outcome.error}", file=sys.stderr)  # above the bar
        elif json_lines and outcome.summary is not None:
            seg = {"dicom_seg": str(outcome.case.dicom_seg)} if outcome.case.dicom_seg is not None else {}
            print(json.dumps({**outcome.summary, "output": str(outcome.case.output), **seg}), flush=True)
        bar.set_postfix(failed=failed, refresh=False)
        bar.update(1)

    return report


def _bar_updater(bar: Any) -> Callable[[float, str], None]:
    def update(fraction: float, stage: str) -> None:
        bar.set_postfix_str(stage, refresh=False)
        bar.update(round(fraction * 100) - bar.n)

    return update


# Suffixes of files that are not NIfTI: an -o ending so is a mistake, not the name of a folder to create.
_OTHER_FILE_TYPES = frozenset({
    ".gz", ".zip", ".mgz", ".mgh", ".nrrd", ".nhdr", ".mha", ".mhd", ".hdr", ".img", ".dcm",
    ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".npy", ".npz", ".txt", ".json", ".csv",
})  # fmt: skip


def _names_one_file(inputs: Sequence[str], files: Sequence[Path], output: Path) -> bool:
    """Whether `-o` names the one output file (DESIGN.md: one input → that file, else a folder); refuses an `-o`
    that is neither a NIfTI name nor a folder, and a file name for several inputs."""
    is_file_name = not output.is_dir() and output.name.lower().endswith((".nii", ".nii.gz"))
    # One input that is itself the case: a file, or the folder of one DICOM series.
    one_file = len(files) == 1 and (Path(inputs[0]).is_file() or files[0] == Path(inputs[0]))
    if is_file_name and one_file:
        return True
    several = f"{len(files)} inputs need" if len(files) > 1 else "a folder input needs"
    if is_file_name:
        raise ParameterError(f"-o '{output}' is a file name, but {several} -o to be a folder: pass e.g. -o masks/")
    instead = f"-o {stem_of(files[0].name)}_mask.nii.gz, or a folder" if one_file else "a folder, e.g. -o masks/"
    if output.exists() and not output.is_dir():
        raise ParameterError(f"-o '{output}' is an existing file, not a folder or a .nii/.nii.gz name: pass {instead}")
    if output.suffix.lower() in _OTHER_FILE_TYPES:  # a typo'd file name, not a folder to create
        raise ParameterError(
            f"-o '{output}' names a {output.suffix} file, but masks are written as NIfTI: pass {instead}"
        )
    return False
