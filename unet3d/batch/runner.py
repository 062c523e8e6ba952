"""A batch run: skip what is done, segment the rest through an engine, record each outcome as it arrives."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from ..card import ModelCard
from ..errors import Unet3dError
from ..options import Mode
from .inputs import Case
from .manifest import MANIFEST_NAME, Manifest, Outcome, manifest_columns, merge_shards, outcome_row, read_rows
from .manifest import shard_manifest_name as _shard_name
from .resume import check_same_model, is_complete, remove_temporaries, skipped_outcome

if TYPE_CHECKING:
    from ..segmenter import Segmenter

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PredictOptions:
    """How each case is segmented (the `Segmenter.predict` options a batch run passes on)."""

    tta: bool = False
    mode: Mode = "auto"
    probabilities: bool = False


class Engine(Protocol):
    """Segments cases and yields one `Outcome` per case, in any order (local loop, Ray Data, a GPU pipeline)."""

    card: ModelCard
    model: dict[str, str]  # ModelSource.as_dict() of the weights it runs: id, revision, sha256

    def outcomes(self, cases: Sequence[Case]) -> Iterator[Outcome]:
        """Segment `cases`, yielding each outcome as soon as that case is written (or has failed)."""
        ...


@dataclass
class Batch:
    """A planned run: what is already done (`skipped`), the inputs that do not exist (`missing`, failed before any
    engine sees them, so every engine reports them alike), what is left (`todo`), and where the rows go."""

    folder: Path
    manifest: Path
    columns: list[str]
    skipped: list[Outcome]
    missing: list[Outcome]
    todo: list[Case]
    shard: tuple[int, int]

    @property
    def remaining(self) -> int:
        """The cases this run still reports: the missing ones and those left to segment."""
        return len(self.missing) + len(self.todo)


@dataclass
class BatchReport:
    """How many cases ended which way, and the results file users read."""

    ok: int
    failed: int
    skipped: int
    results: Path


def prepare_batch(
    cases: Sequence[Case], folder: Path, engine: Engine, *, shard: tuple[int, int] = (0, 1), overwrite: bool = False
) -> Batch:
    """Remove a killed run's temporary files, find the complete outputs (unless `overwrite`) and the earlier rows.

    Raises:
        ParameterError: complete outputs were made by other weights than the engine's (see `check_same_model`).
    """
    index, count = shard
    manifest = folder / (MANIFEST_NAME if count == 1 else _shard_name(index, count))
    remove_temporaries(folder, cases)
    # A shard's own rows are newer than the merged file's.
    sources = dict.fromkeys([folder / MANIFEST_NAME, manifest])
    previous = {row["case"]: row for path in sources for row in read_rows(path)}
    done = [] if overwrite else [case for case in cases if is_complete(case)]
    check_same_model(done, previous, engine.model)
    skipped = [skipped_outcome(case, previous.get(case.case), engine.card) for case in done]
    finished = {case.case for case in done}
    left = [case for case in cases if case.case not in finished]
    missing = [_missing(case, engine.model) for case in left if not case.input.exists()]
    todo = [case for case in left if case.input.exists()]
    columns = manifest_columns([c.name for c in engine.card.classes])
    return Batch(folder, manifest, columns, skipped, missing, todo, shard)


def _missing(case: Case, model: dict[str, str]) -> Outcome:
    return Outcome(case, "failed", error=f"no such file: '{case.input}'", model=model)


def run_batch(
    batch: Batch, outcomes: Iterable[Outcome], report: Callable[[Outcome], None] | None = None
) -> BatchReport:
    """Record the skipped cases, the missing ones, then each outcome as it arrives (synced after every row).

    Args:
        batch: from `prepare_batch`.
        outcomes: the engine's outcomes for `batch.todo`, in any order.
        report: called with each outcome after its row is on disk (progress bars, JSON lines).

    Returns:
        The counts; `results` is results.csv (for a shard: rebuilt from every shard's rows once this one is done).
    """
    counts = {"ok": 0, "failed": 0, "skipped": len(batch.skipped)}
    first = [outcome_row(outcome, batch.columns) for outcome in batch.skipped]
    with Manifest(batch.manifest, batch.columns, first) as manifest:
        for outcome in chain(batch.missing, outcomes):
            manifest.append(outcome_row(outcome, batch.columns))
            counts[outcome.status] += 1
            if report is not None:
                report(outcome)
    results = batch.manifest
    if batch.shard[1] > 1:
        results = merge_shards(batch.folder, batch.shard[1], batch.columns)
    return BatchReport(counts["ok"], counts["failed"], counts["skipped"], results)


class LocalEngine:
    """Segments cases in this process with one loaded `Segmenter`, through `Segmenter.predict_many`: reading the
    next cases and writing the previous ones overlap the network's work on the current one."""

    def __init__(self, segmenter: Segmenter, options: PredictOptions) -> None:
        self.segmenter = segmenter
        self.options = options
        self.card: ModelCard = segmenter.card
        self.model: dict[str, str] = segmenter.source.as_dict()

    def outcomes(self, cases: Sequence[Case]) -> Iterator[Outcome]:
        """Yield each case's outcome, in order, as soon as its files are written."""
        results = self.segmenter.predict_many(
            [case.input for case in cases],
            [case.output for case in cases],
            probabilities_outputs=[case.probabilities for case in cases] if self.options.probabilities else None,
            dicom_seg_outputs=[case.dicom_seg for case in cases],
            series=[case.series for case in cases],
            tta=self.options.tta,
            mode=self.options.mode,
            probabilities=self.options.probabilities,
        )
        for case, result in zip(cases, results, strict=True):
            if result.error is not None:
                yield Outcome(case, "failed", error=describe_error(result.error), model=self.model)
            else:
                yield Outcome(case, "ok", runtime_ms=result.runtime_ms, summary=result.summary, model=self.model)


def predict_case(segmenter: Segmenter, case: Case, options: PredictOptions) -> Outcome:
    """Segment one case and write its files; any error becomes a failed outcome with a one-line reason."""
    model = segmenter.source.as_dict()
    started = time.perf_counter()
    try:
        prediction = segmenter.predict(
            case.input, tta=options.tta, mode=options.mode, probabilities=options.probabilities, series=case.series
        )
        prediction.save(case.output)
        if case.probabilities is not None:
            prediction.save_probabilities(case.probabilities)
        if case.dicom_seg is not None:
            prediction.save_dicom_seg(case.dicom_seg)
        summary = prediction.summary()
    except Exception as e:  # one bad case must not stop a cohort: record it and go on
        return Outcome(case, "failed", error=describe_error(e), model=model)
    runtime_ms = (time.perf_counter() - started) * 1000.0
    return Outcome(case, "ok", runtime_ms=runtime_ms, summary=summary, model=model)


def describe_error(error: Exception) -> str:
    """One line for the manifest: our own errors as they are, anything else with its type (and logged in full)."""
    if isinstance(error, Unet3dError):
        return str(error)
    logger.debug("unexpected error", exc_info=error)  # the traceback with -v
    return f"{type(error).__name__}: {error}"
