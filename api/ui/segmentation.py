"""The UI's calls into the service for an uploaded file: segment a volume into a new `Review`, compare a reference
mask with one. Errors a user can fix come out as `gr.Error` messages (see `errors.py`)."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

from unet3d import Prediction

from ..service import SegmentationService
from ..tempfiles import make_work_folder
from ..uploads import display_name
from .errors import uploaded_path, user_errors
from .review import Review, attach_reference, start_review
from .sessions import header_voxels
from .state import SegmentOptions

STAGE_LABELS = {
    "load": "Loading the volume",
    "preprocess": "Preprocessing",
    "infer": "Running the network",
    "postprocess": "Post-processing",
}


def segment_upload(
    service: SegmentationService,
    volume: Any,
    options: SegmentOptions,
    progress: Any,
    files: Sequence[Any] = (),
    *,
    reserve: Callable[[int], None] | None = None,
) -> tuple[Review, Prediction]:
    """Segment an uploaded volume (NIfTI, or a DICOM series as a .zip) or, with no volume, the uploaded DICOM `files`
    of one series into a new review (its files in a fresh folder), reporting each stage to `progress` (a
    `gr.Progress`); `reserve(voxels)` is called before the model runs, with the volume's voxels as its header
    declares them (0 when it has no NIfTI header to read), to hold memory for the review. The prediction comes too,
    for the review store.

    Raises:
        gr.Error: a file is not an upload, not a readable volume, or the server (or the UI's memory) is busy.
    """
    source: Path | list[Path] = uploaded_path(volume) if volume or not files else [uploaded_path(f) for f in files]
    first = source if isinstance(source, Path) else source[0]
    name = display_name(first.name) if isinstance(source, Path) else None  # several files: the series names itself
    with user_errors():
        service.check(source)
        if reserve is not None:
            progress(0.0, desc="Waiting for memory for the review")
            reserve(header_voxels(first) or 0)
        progress(0.0, desc="Waiting for a free inference slot")
        wanted = options.uncertainty or options.save_probabilities  # both are made from the probabilities
        predict_options = service.options(tta=options.tta, probabilities=wanted)
        report = partial(_report, progress)
        job = partial(service.predict, source, name=name, options=predict_options, progress=report)
        with service.slots.admit():
            prediction = service.slots.run(job)
        progress(0.96, desc="Writing the mask")
        review = _start_review(prediction, save_probabilities=options.save_probabilities)
        return replace(review, source=first), prediction


def with_reference(service: SegmentationService, review: Review, reference: Any) -> Review:
    """`review` compared with the uploaded `reference` mask; with no file, `review` without a reference.

    Raises:
        gr.Error: the file is not an upload, or not a mask on the review's grid with the model's labels.
    """
    if not reference:
        return replace(review, metrics=None, layers=replace(review.layers, reference=None))
    path = uploaded_path(reference)
    with user_errors():
        service.check(path)
        return attach_reference(review, path, max_voxels=service.limits.max_voxels)


def _report(progress: Any, fraction: float, stage: str) -> None:
    progress(min(fraction, 0.95), desc=STAGE_LABELS.get(stage, stage))


def _start_review(prediction: Prediction, *, save_probabilities: bool) -> Review:
    workdir = make_work_folder("ui")
    try:
        return start_review(prediction, workdir, save_probabilities=save_probabilities)
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
