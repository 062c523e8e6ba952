"""The FastAPI application: `create_app()` wires routes, metrics, CORS and the UI; the lifespan loads the model.

Run it with `uvicorn api.main:app` or `unet3d serve`; the HTTP API alone (an inference node: Gradio is never imported)
with `uvicorn --factory api.main:create_api_app` or `unet3d serve --no-ui`. Importing this module builds no app,
reads no settings and loads no model;
if the settings are invalid or the model cannot load at startup, the process logs why in one line (no traceback) and
exits non-zero.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from pydantic import ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from unet3d import __version__
from unet3d.errors import Unet3dError

from .admission import Admission, AdmissionMiddleware
from .cases.routes import router as cases_router
from .cases.service import open_cases
from .cors import SettingsCORSMiddleware
from .docs import install_docs
from .errors import StorageUnavailableError, install_error_handlers
from .lifecycle import Lifecycle
from .metrics import MetricsMiddleware, ServiceMetrics
from .routes import router, v1
from .service import SegmentationService, SettingsConflictError
from .settings import Settings, get_settings
from .tempfiles import TempQuota, remove_leftovers, sweep_strays

logger = logging.getLogger(__name__)

MODEL_SETTINGS_HINT = "check UNET3D_MODEL, UNET3D_MODEL_REVISION and UNET3D_DEVICE, then restart"

DESCRIPTION = (
    "3D segmentation of NIfTI volumes with UNet3D. `POST /v1/predict` returns a JSON summary or the mask "
    "(`return_binary=true`) on the input's exact voxel grid.{ui} Research/demo use, not for clinical use."
)


class StartupError(RuntimeError):
    """Startup cannot succeed for a reason the lifespan has already logged in one line."""


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Read the settings and load the model once; refuse to start (non-zero exit) if either fails."""
    _show_logs()
    try:
        settings = get_settings()
    except ValidationError as e:
        logger.critical("unet3d: invalid UNET3D_* settings (fix them and restart): %s", _describe_settings_error(e))
        raise StartupError("invalid settings") from e
    uploads = _ui_upload_folder(app)
    remove_leftovers(temp_dir=Path(tempfile.gettempdir()), upload_dir=uploads, data_dir=settings.data_dir)
    metrics: ServiceMetrics = app.state.metrics
    try:
        service = SegmentationService.from_settings(settings, observe_seconds=metrics.observe_inference)
    except SettingsConflictError as e:
        logger.critical("unet3d: a setting does not fit the model %r: %s; then restart", settings.model, e)
        raise StartupError("a setting does not fit the model") from e
    except Unet3dError as e:  # ModelLoadError, or CardError for an invalid model.yaml
        logger.critical("unet3d: cannot load the model %r: %s; %s", settings.model, e, MODEL_SETTINGS_HINT)
        raise StartupError("the model cannot load") from e
    try:
        app.state.cases = open_cases(settings)
    except StorageUnavailableError as e:
        service.slots.shutdown()
        logger.critical("unet3d: the review storage cannot open: %s; then restart", e)
        raise StartupError("the review storage cannot open") from e
    app.state.service = service
    source = service.segmenter.source
    metrics.model.info(
        {"id": source.id, "revision": source.revision, "sha256": source.sha256, "device": str(service.segmenter.device)}
    )
    metrics.queue_depth.set_function(lambda: service.slots.waiting)
    metrics.in_progress.set_function(lambda: service.slots.running)
    if app.state.blocks is not None:
        _start_ui(app, settings)
    restore_sigterm = _guard(app, settings, service, uploads)
    strays = asyncio.create_task(sweep_strays(uploads)) if uploads is not None else None
    logger.info("model %s@%s loaded on %s", source.id, source.revision, service.segmenter.device)
    try:
        yield
    finally:
        if strays is not None:
            strays.cancel()
        restore_sigterm()
        app.state.lifecycle.drain()
        app.state.service = None
        service.slots.shutdown()
        app.state.cases.close()
        app.state.cases = None


def _ui_upload_folder(app: FastAPI) -> Path | None:
    """Gradio's upload cache when the review UI is served; None for the API alone (Gradio is not imported)."""
    if app.state.blocks is None:
        return None
    from .ui import upload_folder

    return upload_folder()


def _start_ui(app: FastAPI, settings: Settings) -> None:
    """Apply the settings to the review UI and put it behind the API key or the login."""
    from .ui import configure_ui, require_key_for_ui

    configure_ui(app.state.blocks, settings)
    require_key_for_ui(app, app.state.blocks, settings.api_key, settings.users_file)
    metrics: ServiceMetrics = app.state.metrics
    metrics.ui_session_bytes.set_function(lambda: app.state.blocks.review_events.memory.budget.total)


def _guard(app: FastAPI, settings: Settings, service: SegmentationService, uploads: Path | None) -> Callable[[], None]:
    """Admission (rate limit, uploads, temp quota) and the drain on SIGTERM; returns what undoes the SIGTERM hook."""
    lifecycle = Lifecycle()
    lifecycle.on_drain(service.slots.drain)
    app.state.lifecycle = lifecycle
    quota = TempQuota(settings.temp_quota_bytes, kept=[uploads] if uploads is not None else [])
    app.state.admission = Admission(settings, quota, lifecycle)
    metrics: ServiceMetrics = app.state.metrics
    metrics.uploads_in_flight.set_function(lambda: app.state.admission.places.in_flight)
    metrics.temp_bytes.set_function(quota.usage)
    return lifecycle.drain_on_sigterm(settings.drain_s)


class OneLineStartupFailure:
    """ASGI middleware: a `StartupError` fails startup with the lifespan's one logged line, not a traceback.

    Starlette reports any lifespan failure with the formatted traceback as the `lifespan.startup.failed` message, and
    uvicorn logs that message (starlette/routing.py `Router.lifespan`, uvicorn/lifespan/on.py `LifespanOn.send`).
    The message is held until the exception says whether it is a `StartupError`; any other failure is a bug and
    keeps its traceback.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return
        failure: list[Message] = []

        async def hold_startup_failure(message: Message) -> None:
            if message["type"] == "lifespan.startup.failed":
                failure.append(message)
            else:
                await send(message)

        try:
            await self.app(scope, receive, hold_startup_failure)
        except StartupError:
            failure[:] = [{"type": "lifespan.startup.failed", "message": ""}]  # the reason is logged already
            raise
        finally:
            for message in failure:
                await send(message)


def _show_logs() -> None:
    """Log our INFO lines (which model loaded, refused UI requests) beside uvicorn's, in its format.

    uvicorn configures its own loggers only, so without a handler Python prints just warnings and worse, bare. Where
    the host application has configured logging (a root handler), it decides instead.
    """
    if logging.getLogger().handlers:
        return
    for name in ("api", "unet3d"):
        package = logging.getLogger(name)
        if not package.handlers:
            handler = logging.StreamHandler()
            handler.setFormatter(logging.Formatter("%(levelname)s:     %(message)s"))
            package.addHandler(handler)
            package.setLevel(logging.INFO)


def _describe_settings_error(error: ValidationError) -> str:
    # One line, and no input values: pydantic's own text spans lines and echoes every value, secrets included.
    return "; ".join(f"{'.'.join(map(str, item['loc']))}: {item['msg']}" for item in error.errors())


def create_app(*, ui: bool = True) -> FastAPI:
    """Build the app: /health, /metrics, /v1/*, OpenAPI docs and, unless `ui` is False, the Gradio review UI at
    /ui (without it Gradio is not imported: an inference node needs neither its start-up nor its dependencies)."""
    described = ""
    if ui:
        from .ui import UI_PATH

        described = f" The review UI lives at [{UI_PATH}/]({UI_PATH}/)."
    app = FastAPI(
        title="unet3d",
        version=__version__,
        description=DESCRIPTION.format(ui=described),
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.metrics = ServiceMetrics()
    app.state.service = None
    app.state.cases = None
    app.state.admission = None
    app.state.lifecycle = Lifecycle()
    app.state.blocks = None
    install_error_handlers(app)
    app.add_middleware(OneLineStartupFailure)
    app.add_middleware(AdmissionMiddleware, get_admission=lambda: app.state.admission)
    app.add_middleware(SettingsCORSMiddleware)
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)
    app.include_router(router)
    app.include_router(v1)
    app.include_router(cases_router)
    install_docs(app)
    if ui:
        from .ui import build_ui, mount_ui

        app.state.blocks = build_ui(
            lambda: getattr(app.state, "service", None), lambda: getattr(app.state, "cases", None)
        )
        mount_ui(app, app.state.blocks)
    return app


def create_api_app() -> FastAPI:
    """The HTTP API without the review UI: `uvicorn --factory api.main:create_api_app` (`unet3d serve --no-ui`)."""
    return create_app(ui=False)


def __getattr__(name: str) -> Any:
    """`api.main:app` (uvicorn's target): the full app, built on first use, so that importing this module for
    `create_api_app` imports no Gradio."""
    if name != "app":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    built = globals().get("_app")
    if built is None:
        built = globals()["_app"] = create_app()
    return built
