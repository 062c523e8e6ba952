"""The FastAPI application: `create_app()` wires routes, metrics, CORS and the UI; the lifespan loads the model.

Run it with `uvicorn api.main:app` or `unet3d serve`. Importing this module reads no settings and loads no model;
if the model cannot load at startup, the process logs why and exits non-zero.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from pydantic import ValidationError

from unet3d import __version__
from unet3d.errors import Unet3dError

from .cors import SettingsCORSMiddleware
from .errors import install_error_handlers
from .metrics import MetricsMiddleware, ServiceMetrics
from .routes import router, v1
from .service import SegmentationService
from .settings import get_settings
from .ui import UI_PATH, build_ui, mount_ui, require_key_for_ui

logger = logging.getLogger(__name__)

DESCRIPTION = (
    "3D segmentation of NIfTI volumes with UNet3D. `POST /v1/predict` returns a JSON summary or the mask "
    "(`return_binary=true`) on the input's exact voxel grid. The review UI lives at "
    f"[{UI_PATH}/]({UI_PATH}/). Research/demo use, not for clinical use."
)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Read the settings and load the model once; refuse to start (non-zero exit) if either fails."""
    try:
        settings = get_settings()
    except ValidationError as e:
        logger.critical("unet3d: invalid UNET3D_* settings: %s", e)
        raise
    metrics: ServiceMetrics = app.state.metrics
    try:
        service = SegmentationService.from_settings(settings, observe_seconds=metrics.observe_inference)
    except Unet3dError as e:  # ModelLoadError, or CardError for an invalid model.yaml
        logger.critical("unet3d: cannot load the model %r: %s", settings.model, e)
        raise
    app.state.service = service
    source = service.segmenter.source
    metrics.model.info(
        {"id": source.id, "revision": source.revision, "sha256": source.sha256, "device": str(service.segmenter.device)}
    )
    metrics.queue_depth.set_function(lambda: service.slots.waiting)
    metrics.in_progress.set_function(lambda: service.slots.running)
    _limit_ui_uploads(app.state.blocks, settings.max_upload_bytes)
    require_key_for_ui(app, app.state.blocks, settings.api_key)
    logger.info("model %s@%s loaded on %s", source.id, source.revision, service.segmenter.device)
    try:
        yield
    finally:
        app.state.service = None
        service.slots.shutdown()


def _limit_ui_uploads(blocks: Any, max_bytes: int) -> None:
    # Gradio reads the cap per upload from the Blocks, and the browser reads it from the config built at mount.
    blocks.max_file_size = max_bytes
    blocks.config["max_file_size"] = max_bytes


def create_app() -> FastAPI:
    """Build the app: /health, /metrics, /v1/*, OpenAPI docs and the Gradio review UI at /ui."""
    app = FastAPI(title="unet3d", version=__version__, description=DESCRIPTION, lifespan=lifespan)
    app.state.metrics = ServiceMetrics()
    app.state.service = None
    install_error_handlers(app)
    app.add_middleware(SettingsCORSMiddleware)
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)
    app.include_router(router)
    app.include_router(v1)
    app.state.blocks = build_ui(lambda: getattr(app.state, "service", None))
    mount_ui(app, app.state.blocks)
    return app


app = create_app()
