"""The review UI as an app: the Blocks (layout + events), mounted into the FastAPI app at /ui, behind its login.

Named endpoints for gradio_client: `/segment` (a NIfTI file or a zipped DICOM series in; the mask file and the summary
JSON out), `/segment_with_options` (also tta and probabilities; the probabilities file as a third output),
`/segment_dicom` (a zipped DICOM series in; the DICOM SEG, the mask file and the summary JSON out) and `/review` (a
verdict for a stored case; the case JSON out). Every other event is private; a file path that was not uploaded
through the page is refused with a message. Inside the mount, the viewer's assets and the case files it reads and
writes (`viewer.install_viewer_assets`, `casefiles.install_case_files`) sit behind the same login.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import gradio as gr
from fastapi import FastAPI
from gradio.utils import get_upload_folder
from pydantic import SecretStr
from starlette.routing import Mount

from ..cases.service import CaseService
from ..cors import defer_mounted_cors
from ..service import SegmentationService
from ..settings import Settings
from ..tempfiles import UPLOAD_TTL_S
from . import theme
from .casefiles import install_case_files
from .errors import ReviewBlocks
from .events import EXAMPLE_VOLUME, ReviewEvents
from .identity import ui_login
from .layout import build_layout
from .viewer import HEAD, install_viewer_assets

UI_PATH = "/ui"


def build_ui(
    get_service: Callable[[], SegmentationService | None],
    get_cases: Callable[[], CaseService | None] = lambda: None,
) -> ReviewBlocks:
    """The review UI; `get_service` returns the loaded service and `get_cases` the review store (each None until
    the lifespan has opened it)."""
    blocks = ReviewBlocks(
        title="unet3d · segmentation review", analytics_enabled=False, delete_cache=(900, UPLOAD_TTL_S)
    )
    with blocks:
        blocks.review_events = ReviewEvents(get_service, build_layout(), get_cases)
        blocks.review_events.wire(blocks)
    return blocks


def configure_ui(blocks: ReviewBlocks, settings: Settings) -> None:
    """Apply the settings read at startup: the upload cap, the tabs' memory budget and their time to live.

    Gradio reads the upload cap from the Blocks, and the browser from the config built at mount.
    """
    blocks.max_file_size = settings.max_upload_bytes
    blocks.config["max_file_size"] = settings.max_upload_bytes
    blocks.review_events.memory.configure(settings)
    blocks.review_events.ui.session.time_to_live = settings.session_ttl_s


def upload_folder() -> Path:
    """Where Gradio keeps uploads and the files it serves (GRADIO_TEMP_DIR)."""
    return Path(get_upload_folder())


def mount_ui(app: FastAPI, blocks: gr.Blocks) -> None:
    """Mount the UI at /ui with analytics and run history off, then close two holes of mounted Gradio apps.

    Gradio 6.31 skips its "was this file uploaded?" check unless `has_launched` is set, which mount_gradio_app
    never does: without the flag a raw API call naming /etc/passwd reaches the handlers (notes/stack-verified.md).
    And its CORS middleware allows every origin with credentials on any non-localhost host: it is removed, so
    UNET3D_ALLOW_ORIGINS (closed by default) governs /ui as it governs the API.
    """
    blocks.queue(max_size=64, default_concurrency_limit=None)
    gr.mount_gradio_app(
        app,
        blocks,
        path=UI_PATH,
        footer_links=["api"],
        run_history=False,
        allowed_paths=[str(EXAMPLE_VOLUME.parent)],
        show_error=False,
        ssr_mode=False,
        theme=theme.theme(),
        css=theme.CSS,
        js=theme.JS,
        head=HEAD,
    )
    blocks.has_launched = True
    mounted = mounted_app(app)
    defer_mounted_cors(mounted)
    install_viewer_assets(mounted)
    install_case_files(mounted, lambda: getattr(app.state, "cases", None))


def mounted_app(app: FastAPI) -> Any:
    """The Gradio app mounted at /ui (a gradio.routes.App).

    Raises:
        RuntimeError: nothing is mounted there.
    """
    for route in app.routes:
        if isinstance(route, Mount) and route.path == UI_PATH:
            return route.app
    raise RuntimeError(f"no app is mounted at {UI_PATH}")


def require_key_for_ui(
    app: FastAPI, blocks: gr.Blocks, api_key: SecretStr | None, users_file: Path | None = None
) -> None:
    """The UI's login (`identity.ui_login`): with UNET3D_USERS_FILE a user of the file and their password; else with
    UNET3D_API_KEY any user name and the key as password; else none.

    Gradio checks its login cookie on every route that runs or reads something (upload, call, queue, file=,
    config, info, and the case files); gradio_client logs in with `Client(url, auth=(name, password))`. The
    settings are only known at startup, after the UI was mounted, hence the late assignment to Gradio's app.
    """
    login, message = ui_login(api_key, users_file)
    mounted_app(app).auth = login
    blocks.auth_message = message
