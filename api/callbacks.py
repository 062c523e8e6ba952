"""Gradio callbacks of the review UI: translate component values to `Review` / `views` calls and back.

Errors a user can fix (a `Unet3dError`, a full queue, a missing input) become `gr.Error` messages through
`user_error`, which Gradio logs without a traceback; anything else is a bug, logged by Gradio with its traceback.
Per-user data travels in `gr.State`; the service is reached through a getter, never a module global.
`ReviewBlocks` gives Gradio's own refusal of a file that was not uploaded the same kind of message.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
from gradio.block_function import BlockFunction
from gradio.exceptions import InvalidPathError
from gradio.state_holder import SessionState
from gradio.utils import get_upload_folder
from PIL import Image
from pydantic import ValidationError

from unet3d import Prediction
from unet3d.errors import Unet3dError

from . import views
from .errors import ServiceBusyError
from .review import PROBABILITIES_SUFFIX, Review, attach_reference, default_cursor, most_uncertain, start_review
from .service import SegmentationService
from .uploads import display_name

logger = logging.getLogger(__name__)

STAGE_LABELS = {
    "load": "Loading the volume",
    "preprocess": "Preprocessing",
    "infer": "Running the network",
    "postprocess": "Post-processing",
}
NO_VOLUME = "Choose a volume first: upload a .nii or .nii.gz file, or click 'Try the MNI152 T1 example'."
NOT_UPLOADED = "Only files uploaded through this page are accepted: upload the file again."
NOT_A_FILE = (
    "An input is not in the form this page sends: with gradio_client, send the file with gradio_client's "
    "handle_file(path), e.g. client.predict(handle_file('t1.nii.gz'), api_name='/segment')."
)
# Rendered views older than this are deleted from the session folder (Gradio has copied them by then).
VIEW_FILE_TTL_S = 60.0


@dataclass(frozen=True)
class SegmentOptions:
    """The UI's segmentation options (the /segment API uses the defaults)."""

    uncertainty: bool = True
    tta: bool = False
    save_probabilities: bool = False


@dataclass(frozen=True)
class ViewInputs:
    """Slice indices and display controls, as the components deliver them."""

    indices: tuple[int, int, int]
    window: float
    level: float
    opacity: float
    visible: tuple[str, ...]
    overlay: views.Overlay
    crosshair: bool


def user_error(message: str) -> gr.Error:
    """An error the user can fix: shown in the UI until closed (capitalised, as a sentence), and no traceback in the
    server log (Gradio prints one otherwise)."""
    return gr.Error(message[:1].upper() + message[1:], duration=None, print_exception=False)


def uploaded_path(value: Any) -> Path:
    """The path of a file a user uploaded through Gradio, refusing anything outside Gradio's upload folder.

    Raises:
        gr.Error: nothing was chosen, or the path is not an upload (a raw API call naming a server file).
    """
    if not value:
        raise user_error(NO_VOLUME)
    raw = value if isinstance(value, str) else getattr(value, "path", None) or ""
    path = Path(raw).resolve()
    if not path.is_relative_to(Path(get_upload_folder()).resolve()) or not path.is_file():
        raise user_error(NOT_UPLOADED)
    return path


def _chosen_path(value: Any) -> Path | None:
    """The uploaded file in a box, or None when the box is empty or holds something that is not an upload."""
    try:
        return uploaded_path(value)
    except gr.Error:
        return None


class ReviewBlocks(gr.Blocks):
    """gr.Blocks whose refusals of malformed inputs tell the caller why, without a traceback in the log.

    Gradio refuses them while preprocessing: a path that was not uploaded (a raw API call naming /etc/passwd) with an
    InvalidPathError, a plain string where a file belongs (gradio_client without handle_file) with pydantic's
    ValidationError — both answered as `{"error": null}` under `show_error=False` — and a file of another type with a
    gr.Error; all three are logged with a full traceback.
    """

    async def preprocess_data(
        self, block_fn: BlockFunction, inputs: list[Any], state: SessionState | None, explicit_call: bool = False
    ) -> Any:
        try:
            return await super().preprocess_data(block_fn, inputs, state, explicit_call)
        except InvalidPathError as e:
            logger.warning("UI request refused: %s", e)
            raise user_error(NOT_UPLOADED) from e
        except ValidationError as e:
            logger.info("UI request refused: %s", " ".join(str(e).split())[:300])
            raise user_error(NOT_A_FILE) from e
        except gr.Error as e:
            if not e.print_exception:
                raise
            logger.info("UI request refused: %s", e.message)
            raise user_error(e.message) from e


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn the errors a user can fix into `gr.Error` messages that say what to do."""
    try:
        yield
    except Unet3dError as e:
        logger.info("UI request refused: %s", e)
        raise user_error(str(e)) from e
    except ServiceBusyError as e:
        raise user_error(f"The server is busy with other segmentations: try again in about {e.retry_after_s} s.") from e


class ReviewCallbacks:
    """The UI's event handlers, bound to a getter of the loaded service."""

    def __init__(self, get_service: Callable[[], SegmentationService | None]) -> None:
        self._get_service = get_service

    def service(self) -> SegmentationService:
        service = self._get_service()
        if service is None:
            raise user_error("The model is still loading: try again in a few seconds.")
        return service

    def segment(
        self, volume: Any, options: SegmentOptions | None, previous: Review | None, progress: Any = gr.Progress()
    ) -> tuple[str, dict[str, Any], Review]:
        """Segment the chosen volume: returns the mask file, the summary JSON and the new review state."""
        options = options or SegmentOptions()
        path = uploaded_path(volume)
        service = self.service()
        report = _progress_reporter(progress)
        with user_errors():
            service.check(path)
            progress(0.0, desc="Waiting for a free inference slot")
            wanted = options.uncertainty or options.save_probabilities  # both are made from the probabilities
            predict_options = service.options(tta=options.tta, probabilities=wanted)
            job = partial(service.predict, path, name=display_name(path.name), options=predict_options, progress=report)
            with service.slots.admit():
                prediction = service.slots.run(job)
            progress(0.96, desc="Writing the mask")
            review = replace(_start_review(prediction, save_probabilities=options.save_probabilities), source=path)
        if previous is not None:
            previous.close()
        return str(review.files[0]), review.summary, review

    def segment_with_options(
        self, volume: Any, tta: bool, probabilities: bool, previous: Review | None, progress: Any = gr.Progress()
    ) -> tuple[str, dict[str, Any], str | None, Review]:
        """Segment with test-time augmentation (tta: flips, about 4× slower) and/or the class probabilities
        (probabilities: a float32 (I, J, K, C) .nii.gz on the input's grid). Returns the mask file, the summary JSON,
        the probabilities file (None unless asked for) and the new review state."""
        options = SegmentOptions(uncertainty=False, tta=bool(tta), save_probabilities=bool(probabilities))
        mask, summary, review = self.segment(volume, options, previous, progress)
        saved = [str(f) for f in review.files if f.name.endswith(PROBABILITIES_SUFFIX)]
        return mask, summary, saved[0] if saved else None, review

    def reference_owner(self, review: Review | None, volume: Any) -> Path | None:
        """The volume a reference mask uploaded now belongs to: the chosen volume (None before any is chosen).

        A reference uploaded before its volume was segmented (or while it is being segmented) waits in its box and is
        compared once that segmentation finishes; one uploaded with no other volume chosen goes to the review shown.
        """
        chosen = _chosen_path(volume)
        if review is not None and chosen is None:
            return review.source
        return chosen

    def attach(self, review: Review | None, reference: Any) -> Review | None:
        """Attach (or, with no file, remove) the reference mask."""
        if review is None:
            if reference:
                raise user_error("Segment a volume first, then upload its reference mask.")
            return None
        if not reference:
            return replace(review, metrics=None, layers=replace(review.layers, reference=None))
        path = uploaded_path(reference)
        with user_errors():
            self.service().check(path)
            return attach_reference(review, path, max_voxels=self.service().limits.max_voxels)

    def render(self, review: Review | None, inputs: ViewInputs) -> list[Any]:
        """The three views as PNG paths (`gr.skip()` before the first segmentation)."""
        if review is None:
            return [gr.skip()] * 3
        style = style_for(review, inputs)
        views_folder = review.workdir / "views"
        views_folder.mkdir(exist_ok=True)
        _prune(views_folder)
        # One folder per render, so that a downloaded view keeps a name that says what it shows.
        folder = views_folder / uuid.uuid4().hex[:8]
        folder.mkdir()
        stem = review.files[0].name.removesuffix("_mask.nii.gz")
        return [
            _write_png(views.render(review.layers, plane, index, style), folder / f"{stem}_{plane}_{index:03d}.png")
            for plane, index in zip(views.PLANES, inputs.indices, strict=True)
        ]

    def navigate(
        self, review: Review | None, plane: views.Plane, pixel: Any, indices: tuple[int, int, int]
    ) -> tuple[int, int, int]:
        """Slice indices (axial, coronal, sagittal) through the voxel under `pixel` ([column, row] of the picture
        of `plane` drawn at `indices`): a click on one view moves the other two there."""
        if review is None:
            raise user_error("Segment a volume first.")
        if not isinstance(pixel, list | tuple) or len(pixel) != 2:
            return indices  # not a point on the picture (Gradio sends [column, row] for an image)
        cursor = _cursor_from_indices(indices)
        voxel = views.voxel_at(review.layers, plane, cursor[views.PLANE_AXIS[plane]], (pixel[0], pixel[1]))
        return _plane_indices(voxel)

    def jump_target(self, review: Review | None) -> tuple[int, int, int]:
        """Slice indices (axial, coronal, sagittal) of the most uncertain slices."""
        if review is None:
            raise user_error("Segment a volume first.")
        target = most_uncertain(review.layers)
        if target is None:
            raise user_error("No uncertainty map: tick 'Uncertainty map' and segment again.")
        return _plane_indices(target)


def style_for(review: Review, inputs: ViewInputs) -> views.Style:
    """The views.Style for these control values; overlays that lack their data fall back to classes."""
    overlay = inputs.overlay
    if (overlay == "errors" and review.layers.reference is None) or (
        overlay == "uncertainty" and review.layers.entropy is None
    ):
        overlay = "classes"
    names = review.class_names
    visible = frozenset(names.index(n) for n in inputs.visible if n in names)
    half = max(float(inputs.window), 1e-3) / 2
    x, y, z = _cursor_from_indices(inputs.indices)
    return views.Style(
        window=(float(inputs.level) - half, float(inputs.level) + half),
        opacity=float(inputs.opacity),
        visible=visible,
        overlay=overlay,
        cursor=(x, y, z) if inputs.crosshair else None,
    )


def initial_indices(review: Review) -> tuple[int, int, int]:
    """(axial, coronal, sagittal) slice indices through the foreground's centre of mass."""
    return _plane_indices(default_cursor(review.layers))


def _plane_indices(cursor: tuple[int, int, int]) -> tuple[int, int, int]:
    # cursor is (x, y, z); planes are (axial → z, coronal → y, sagittal → x).
    x, y, z = cursor
    return z, y, x


def _cursor_from_indices(indices: tuple[int, int, int]) -> tuple[int, int, int]:
    axial, coronal, sagittal = (int(i) for i in indices)
    return sagittal, coronal, axial


def _start_review(prediction: Prediction, *, save_probabilities: bool) -> Review:
    workdir = Path(tempfile.mkdtemp(prefix="unet3d-ui-"))
    try:
        return start_review(prediction, workdir, save_probabilities=save_probabilities)
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise


def _progress_reporter(progress: Any) -> Callable[[float, str], None]:
    def report(fraction: float, stage: str) -> None:
        progress(min(fraction, 0.95), desc=STAGE_LABELS.get(stage, stage))

    return report


def _write_png(picture: np.ndarray, path: Path) -> str:
    # compress_level=1: ~7 ms instead of ~30 ms for Pillow's default, at ~15% more bytes.
    Image.fromarray(picture).save(path, format="png", compress_level=1)
    return str(path)


def _prune(folder: Path) -> None:
    cutoff = time.time() - VIEW_FILE_TTL_S
    for old in folder.iterdir():
        if old.stat().st_mtime < cutoff:
            shutil.rmtree(old, ignore_errors=True)
