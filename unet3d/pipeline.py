"""Cohorts: reading case n+1 and writing case n−1 on worker threads while the device works on case n.

`overlap` runs three stages per item — read (worker threads), compute (the calling thread, which owns the device),
write (worker threads) — with bounded look-ahead, yielding results in input order. `Segmenter.predict_many` is built
on it; the batch runner's local engine consumes that iterator. Queues are bounded, so at most `prefetch` items wait
read and `prefetch` wait to be written, whatever the cohort's size.
"""

from __future__ import annotations

import itertools
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import torch

if TYPE_CHECKING:
    from .prediction import Prediction
    from .segmenter import PredictCall, Segmenter, VolumeInput

Item = TypeVar("Item")
Read = TypeVar("Read")
Computed = TypeVar("Computed")
Written = TypeVar("Written")


@dataclass(frozen=True)
class Stage(Generic[Item, Written]):
    """One item's result: what the write stage returned, or the first exception any stage raised for it."""

    item: Item
    value: Written | None
    error: Exception | None


def default_workers(device: torch.device) -> int:
    """Reader (and writer) threads: one per four cores, 1 to 4 (gzip inflate/deflate release the GIL); none when
    the network itself runs on every core (a CPU device using them all): a thread beside it would only take cores
    from its parallel convolutions, whose threads then wait for each other (measured slower on 2 cores)."""
    cores = os.cpu_count() or 1
    if device.type == "cpu" and torch.get_num_threads() >= cores:
        return 0
    return max(1, min(4, cores // 4))


def overlap(
    items: Iterable[Item],
    read: Callable[[Item], Read],
    compute: Callable[[Read], Computed],
    write: Callable[[Computed], Written],
    *,
    prefetch: int = 2,
    workers: int = 1,
) -> Iterator[Stage[Item, Written]]:
    """Run `read → compute → write` over `items`, overlapping the stages of neighbouring items.

    Args:
        items: the inputs, consumed lazily (at most `prefetch` ahead of the computation).
        read: runs on a reader thread.
        compute: runs on the thread iterating the result (the device's thread), one item at a time, in order.
        write: runs on a writer thread.
        prefetch: items read ahead of `compute`, and items computed but not yet yielded (>= 1).
        workers: reader threads and writer threads each; 0 runs every stage on the calling thread, one item after
            another.

    Yields:
        One `Stage` per item, in input order; an exception in any stage of an item is its `error` (the other items
        go on). Closing the iterator early cancels what has not started and waits for what has.
    """
    if prefetch < 1:
        raise ValueError(f"prefetch must be at least 1, got {prefetch}")
    if workers == 0:
        yield from _in_turn(items, read, compute, write)
        return
    readers = ThreadPoolExecutor(workers, thread_name_prefix="unet3d-read")
    writers = ThreadPoolExecutor(workers, thread_name_prefix="unet3d-write")
    source = iter(items)
    reading: deque[tuple[Item, Future[Read]]] = deque()
    writing: deque[tuple[Item, Future[Written]]] = deque()
    try:
        _top_up(reading, source, readers, read, prefetch)
        while reading:
            item, loaded = reading.popleft()
            _top_up(reading, source, readers, read, prefetch)
            try:
                computed = compute(loaded.result())
            except Exception as error:  # one item's failure is its result, not the cohort's end
                writing.append((item, _failed(error)))  # queued behind the items before it: order holds
            else:
                writing.append((item, writers.submit(write, computed)))
            while writing and (writing[0][1].done() or len(writing) > prefetch):
                yield _finished(*writing.popleft())
        while writing:
            yield _finished(*writing.popleft())
    finally:
        for pool in (readers, writers):
            pool.shutdown(wait=True, cancel_futures=True)


def _in_turn(
    items: Iterable[Item],
    read: Callable[[Item], Read],
    compute: Callable[[Read], Computed],
    write: Callable[[Computed], Written],
) -> Iterator[Stage[Item, Written]]:
    for item in items:
        try:
            yield Stage(item, write(compute(read(item))), None)
        except Exception as error:  # one item's failure is its result, not the cohort's end
            yield Stage(item, None, error)


def _top_up(
    reading: deque[tuple[Item, Future[Read]]],
    source: Iterator[Item],
    pool: ThreadPoolExecutor,
    read: Callable[[Item], Read],
    prefetch: int,
) -> None:
    while len(reading) < prefetch:
        item = next(source, _END)
        if item is _END:
            return
        reading.append((item, pool.submit(read, item)))  # type: ignore[arg-type]


def _failed(error: Exception) -> Future[Written]:
    future: Future[Written] = Future()
    future.set_exception(error)
    return future


def _finished(item: Item, future: Future[Written]) -> Stage[Item, Written]:
    try:
        return Stage(item, future.result(), None)
    except Exception as error:
        return Stage(item, None, error)


_END = object()


@dataclass
class CaseResult:
    """One input of `Segmenter.predict_many`, in input order.

    Attributes:
        input: the input as given.
        prediction: the result (None when the case failed).
        output: the mask file written, when outputs were given.
        probabilities_output: the probabilities file written, when asked for.
        dicom_seg_output: the DICOM SEG written, when asked for.
        summary: `prediction.summary()`, computed on a writer thread.
        error: why the case failed (a `Unet3dError` for a bad input), None when it succeeded.
        runtime_ms: this case's own time in its stages (read, device, write), not counting waits between them.
    """

    input: VolumeInput
    prediction: Prediction | None = None
    output: Path | None = None
    probabilities_output: Path | None = None
    dicom_seg_output: Path | None = None
    summary: dict[str, Any] | None = None
    error: Exception | None = None
    runtime_ms: float = 0.0


@dataclass(frozen=True)
class _Job:
    input: VolumeInput
    output: str | Path | None
    probabilities_output: str | Path | None
    dicom_seg_output: str | Path | None
    series: str | None


def predict_cohort(
    segmenter: Segmenter,
    inputs: Iterable[VolumeInput],
    outputs: str | Path | Sequence[str | Path | None] | None,
    probabilities_outputs: str | Path | Sequence[str | Path | None] | None,
    options: PredictCall,
    *,
    dicom_seg_outputs: str | Path | Sequence[str | Path | None] | None = None,
    series: Sequence[str | None] | None = None,
    prefetch: int,
    workers: int | None,
) -> Iterator[CaseResult]:
    """`Segmenter.predict_many`'s work: read on worker threads, segment here, clean up, write and summarise on
    worker threads."""
    stages = _CaseStages(segmenter, options)
    count = default_workers(segmenter.device) if workers is None else workers
    # A folder target repeats for ever: the inputs end the cohort (predict_many checked the lengths of lists).
    each_series = itertools.repeat(None) if series is None else iter(series)
    targets = zip(
        inputs, _per_input(outputs), _per_input(probabilities_outputs), _per_input(dicom_seg_outputs), each_series,
        strict=False,
    )  # fmt: skip
    jobs = (_Job(*job) for job in targets)
    for done in overlap(jobs, stages.read, stages.compute, stages.write, prefetch=prefetch, workers=count):
        if done.value is not None:
            yield done.value
        else:
            yield CaseResult(done.item.input, error=done.error)


def _per_input(target: str | Path | Sequence[str | Path | None] | None) -> Iterator[str | Path | None]:
    """A folder (or None) for every input, or one path per input in order."""
    if target is None or isinstance(target, str | Path):
        if target is not None:
            Path(target).mkdir(parents=True, exist_ok=True)
        return itertools.repeat(target)
    return iter(target)


class _CaseStages:
    """The three stages of one case; the case's `StageReporter` travels with it between threads."""

    def __init__(self, segmenter: Segmenter, options: PredictCall) -> None:
        self.segmenter = segmenter
        self.options = options

    def read(self, job: _Job) -> tuple[_Job, Any, Any]:
        report = self.segmenter.reporter(None)
        read = self.segmenter._read(job.input, None, job.series, report)
        report.pause()
        return job, read, report

    def compute(self, loaded: tuple[_Job, Any, Any]) -> tuple[_Job, Any, Any]:
        job, read, report = loaded
        segmented = self.segmenter._segment(read, self.options, report)
        report.pause()
        return job, segmented, report

    def write(self, computed: tuple[_Job, Any, Any]) -> CaseResult:
        job, segmented, report = computed
        prediction = self.segmenter._finish(segmented, report)
        output = None if job.output is None else prediction.save(job.output)
        started = time.perf_counter()
        probabilities = None
        if job.probabilities_output is not None:
            probabilities = prediction.save_probabilities(job.probabilities_output)
        seg = None if job.dicom_seg_output is None else prediction.save_dicom_seg(job.dicom_seg_output)
        extra_ms = (time.perf_counter() - started) * 1000.0
        summary = prediction.summary()
        runtime = sum(prediction.timings_ms.values()) + extra_ms
        return CaseResult(job.input, prediction, output, probabilities, seg, summary, None, runtime)
