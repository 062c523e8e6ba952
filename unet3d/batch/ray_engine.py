"""The Ray engine: one cohort over a Ray cluster with Ray Data (needs the `ray` extra: `pip install unet3d[ray]`).

Three streaming stages: reading volumes (CPU tasks), segmenting them on actors that each load the model once (one
GPU each where the cluster has GPUs, else one CPU), and writing the masks (CPU tasks). Results stream back to the
driver, which writes results.csv exactly as a local run does. Paths must be visible to every node (a shared file
system). Ray is imported here only, when a run asks for this engine.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ..card import load_card
from ..errors import ParameterError
from ..hub import CARD_NAME, ModelSource, resolve_source
from ..io import load_volume
from .inputs import Case
from .manifest import Outcome
from .runner import PredictOptions, describe_error

logger = logging.getLogger(__name__)
Row = dict[str, Any]
# Ray Data warns about two choices made here on purpose: its own progress bars are off (the CLI draws one for the
# cohort), and stages hand each other Python objects (volumes, predictions), pickled by Ray instead of Arrow columns.
_EXPECTED_WARNINGS = ("ray.data._internal.progress", "ray.data._internal.tensor_extensions.arrow")


class RayEngine:
    """Segments cases on a Ray cluster: `address` as `ray.init` takes it (None: `RAY_ADDRESS`, else a local Ray)."""

    def __init__(
        self,
        model: str | Path,
        revision: str | None,
        options: PredictOptions,
        *,
        address: str | None = None,
        device: str = "auto",
    ) -> None:
        try:
            import ray.data  # noqa: F401  (only to fail early with advice)
        except ImportError as e:
            raise ParameterError("--engine ray needs the 'ray' extra: pip install 'unet3d[ray]'") from e
        if device not in ("auto", "cpu") and not device.startswith("cuda"):
            raise ParameterError(f"--device must be auto, cpu or cuda with --engine ray, got {device!r}")
        source = resolve_source(model, revision)
        self.card = load_card(source.directory / CARD_NAME)
        self.model: dict[str, str] = source.as_dict()
        self.options = options
        self.address = address
        self.device = device
        self._load = _actor_model(source)

    def outcomes(self, cases: Sequence[Case]) -> Iterator[Outcome]:
        """Run the cases through Ray Data and yield each outcome as its mask is written."""
        if not cases:
            return
        import ray

        started_here = not ray.is_initialized()
        if started_here:
            _connect(self.address)
        try:
            by_case = {case.case: case for case in cases}
            for row in self._dataset(cases).iter_rows():
                yield self._outcome(by_case[str(row["case"])], row)
        finally:
            if started_here:
                ray.shutdown()  # leaves a cluster we joined running; ends a local Ray we started

    def _dataset(self, cases: Sequence[Case]) -> Any:
        import ray
        import ray.data

        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        context.print_on_execution_start = False
        _quiet()
        for handler in logging.getLogger("ray.data").handlers:  # its log file in the Ray session keeps the INFO
            if isinstance(handler, logging.StreamHandler):
                handler.setLevel(logging.WARNING)
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0)) if self.device != "cpu" else 0
        if self.device.startswith("cuda") and not gpus:
            raise ParameterError(f"--device {self.device}: the Ray cluster has no GPU; pass --device cpu or auto")
        actors = gpus or max(1, int(resources.get("CPU", 1)))
        rows = [_case_row(case) for case in cases]
        return (
            ray.data.from_items(rows, override_num_blocks=len(rows))  # one block per case: any actor takes any case
            .map(_read)
            .map_batches(
                _Segment,
                batch_size=1,
                fn_constructor_kwargs={
                    "load": self._load,
                    "device": "cuda" if gpus else "cpu",  # Ray points each actor's CUDA_VISIBLE_DEVICES at its GPU
                    "options": self.options,
                },
                compute=ray.data.ActorPoolStrategy(min_size=1, max_size=actors),
                num_gpus=1 if gpus else 0,
                num_cpus=1,
            )
            .map(_write)
        )

    def _outcome(self, case: Case, row: Row) -> Outcome:
        runtime_ms = float(row["elapsed_ms"])
        if row["error"]:
            return Outcome(case, "failed", error=str(row["error"]), model=self.model)
        summary, model = json.loads(row["summary"]), json.loads(row["model"])
        return Outcome(case, "ok", runtime_ms=runtime_ms, summary=summary, model=model)


def _connect(address: str | None) -> None:
    import ray

    if address is None:  # RAY_ADDRESS, else a new local Ray on this machine's CPUs and GPUs
        ray.init(logging_level=logging.WARNING, include_dashboard=False)
    else:
        ray.init(address=address, logging_level=logging.WARNING)


def _actor_model(source: ModelSource) -> dict[str, str | None]:
    """What each actor loads: a Hub model at the commit the driver resolved, a local model by its absolute path
    (actors run in other working directories), and the id to report, as the user gave it."""
    if source.revision == "local":
        return {"location": str(source.weights.resolve()), "revision": None, "id": source.id}
    return {"location": source.id, "revision": source.revision, "id": source.id}


def _case_row(case: Case) -> Row:
    probabilities = "" if case.probabilities is None else str(case.probabilities)
    row: Row = {"case": case.case, "input": str(case.input), "output": str(case.output)}
    dicom = {"dicom_seg": str(case.dicom_seg or ""), "series": case.series or ""}
    return {**row, "probabilities": probabilities, **dicom, "error": "", "elapsed_ms": 0.0, "payload": None}


def _read(row: Row) -> Row:
    """Stage 1 (a CPU task): read the volume."""
    _quiet()
    started = time.perf_counter()
    try:
        row["payload"] = load_volume(row["input"], series=row["series"] or None)
    except Exception as e:  # recorded as the case's error; the run goes on
        row["error"] = describe_error(e)
    return _timed(row, started)


class _Segment:
    """Stage 2 (an actor holding the model): segment each volume and summarise the prediction."""

    def __init__(self, load: dict[str, str | None], device: str, options: PredictOptions) -> None:
        from ..segmenter import Segmenter

        _quiet()
        self.segmenter = Segmenter.from_pretrained(str(load["location"]), load["revision"], device=device)
        self.segmenter.source = replace(self.segmenter.source, id=str(load["id"]))
        self.options = options

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = [{name: values[k] for name, values in batch.items()} for k in range(len(batch["case"]))]
        return _columns([self._segment(row) for row in rows])

    def _segment(self, row: Row) -> Row:
        if row["error"]:
            return row
        started = time.perf_counter()
        options = self.options
        try:
            prediction = self.segmenter.predict(
                row["payload"], tta=options.tta, mode=options.mode, probabilities=options.probabilities
            )
            row["summary"] = json.dumps(prediction.summary())  # here, while the prediction holds the image
            row["model"] = json.dumps(self.segmenter.source.as_dict())
            # The writer needs the geometry, not the intensities: do not ship the image across the cluster again.
            prediction.volume = replace(prediction.volume, data=np.empty((0, 0, 0), np.float32))
            row["payload"] = prediction
        except Exception as e:
            row["error"], row["payload"] = describe_error(e), None
        return _timed(row, started)


def _write(row: Row) -> Row:
    """Stage 3 (a CPU task): write the mask (and probabilities, the DICOM SEG), atomically as every unet3d write."""
    prediction, row["payload"] = row["payload"], None
    if row["error"]:
        return row
    started = time.perf_counter()
    try:
        prediction.volume = replace(prediction.volume, data=np.broadcast_to(np.float32(0), prediction.mask.shape))
        prediction.save(row["output"])
        if row["probabilities"]:
            prediction.save_probabilities(row["probabilities"])
        if row["dicom_seg"]:
            prediction.save_dicom_seg(row["dicom_seg"])
    except Exception as e:
        row["error"] = describe_error(e)
    return _timed(row, started)


def _quiet() -> None:
    for name in _EXPECTED_WARNINGS:
        logging.getLogger(name).setLevel(logging.ERROR)


def _timed(row: Row, started: float) -> Row:
    row["elapsed_ms"] = float(row["elapsed_ms"]) + (time.perf_counter() - started) * 1000.0
    row.setdefault("summary", "")
    row.setdefault("model", "")
    return row


def _columns(rows: list[Row]) -> dict[str, np.ndarray]:
    columns: dict[str, np.ndarray] = {}
    for name in rows[0]:
        values = np.empty(len(rows), dtype=object)  # filled one by one: numpy must not unpack the objects
        values[:] = [row[name] for row in rows]
        columns[name] = values
    return columns
