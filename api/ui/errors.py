"""How the UI refuses: every error a user can fix becomes a `gr.Error` that says what to do, with no traceback.

Errors a user can fix (a `Unet3dError`, a full queue, a missing or foreign file) go through `user_error`, which
Gradio logs without a traceback; anything else is a bug, logged by Gradio with its traceback and shown to nobody
(`show_error=False`). `ReviewBlocks` gives Gradio's own refusals of malformed inputs the same kind of message.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import gradio as gr
from gradio.block_function import BlockFunction
from gradio.exceptions import InvalidPathError
from gradio.state_holder import SessionState
from gradio.utils import get_upload_folder
from pydantic import ValidationError

from unet3d.errors import Unet3dError

from ..errors import PreconditionFailedError, ServiceBusyError, ServiceError, ShuttingDownError

logger = logging.getLogger(__name__)

NO_VOLUME = (
    "Choose a volume first: upload a .nii or .nii.gz file, a DICOM series (a .zip, or its .dcm files), or click "
    "'Try the MNI152 T1 example'."
)
NO_REVIEW = "Segment a volume first."
NOT_UPLOADED = "Only files uploaded through this page are accepted: upload the file again."
NOT_A_FILE = (
    "An input is not in the form this page sends: with gradio_client, send the file with gradio_client's "
    "handle_file(path), e.g. client.predict(handle_file('t1.nii.gz'), api_name='/segment')."
)


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


def chosen_path(value: Any) -> Path | None:
    """The uploaded file in a box, or None when the box is empty or holds something that is not an upload."""
    try:
        return uploaded_path(value)
    except gr.Error:
        return None


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
    except ShuttingDownError as e:
        raise user_error(f"The server is restarting: try again in about {e.retry_after_s} s.") from e


STALE = (
    "{name} changed since this tab loaded it (someone else recorded a verdict or saved a correction): press "
    "'Reload case' to see the change, then try again."
)


@contextmanager
def case_errors(name: str = "The case") -> Iterator[None]:
    """Turn the review store's refusals into messages: a stale change says to reload, the others say what is wrong
    (storage problems included: the user can only retry)."""
    try:
        with user_errors():
            yield
    except PreconditionFailedError as e:
        logger.info("UI change refused: %s", e)
        raise user_error(STALE.format(name=name)) from e
    except ServiceError as e:
        logger.info("UI request refused: %s", e)
        raise user_error(str(e)) from e


class ReviewBlocks(gr.Blocks):
    """gr.Blocks whose refusals of malformed inputs tell the caller why, without a traceback in the log.

    Gradio refuses them while preprocessing: a path that was not uploaded (a raw API call naming /etc/passwd) with an
    InvalidPathError, a plain string where a file belongs (gradio_client without handle_file) with pydantic's
    ValidationError — both answered as `{"error": null}` under `show_error=False` — and a file of another type with a
    gr.Error; all three are logged with a full traceback.

    Attributes:
        review_events: the page's handlers (`build_ui` sets them), reached at startup to apply the settings.
    """

    review_events: Any

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
