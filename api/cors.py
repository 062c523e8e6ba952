"""CORS from UNET3D_ALLOW_ORIGINS, built on the first request so that creating the app reads no settings."""

from __future__ import annotations

from typing import Any

from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from .settings import get_settings


class SettingsCORSMiddleware:
    """Starlette's CORSMiddleware with the allowed origins taken from the settings; closed when none are set."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._cors: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self._cors is None:
            origins = get_settings().allow_origins
            self._cors = (
                CORSMiddleware(
                    self.app,
                    allow_origins=origins,
                    allow_methods=["GET", "POST", "OPTIONS"],
                    allow_headers=["Authorization", "X-API-Key", "Content-Type"],
                    expose_headers=["Content-Disposition", "Retry-After"],
                )
                if origins
                else self.app
            )
        await self._cors(scope, receive, send)


def defer_mounted_cors(mounted: Any) -> None:
    """Drop the CORS middleware of a mounted Gradio app, so that this app's policy covers it too.

    Gradio 6.31's own CORS middleware answers any Origin with `Access-Control-Allow-Origin: <that origin>` and
    `Access-Control-Allow-Credentials: true` whenever the Host is not localhost, i.e. on every deployment. It only
    stands aside for a parent app that uses starlette's CORSMiddleware directly, which this lazily configured one
    does not; the mounted app has not built its middleware stack yet, so the entry can still be removed.

    Raises:
        RuntimeError: Gradio no longer adds that middleware (re-check the hole).
    """
    from gradio.route_utils import CustomCORSMiddleware  # the UI's alone: the HTTP API imports no Gradio

    kept = [m for m in mounted.user_middleware if m.cls is not CustomCORSMiddleware]
    if len(kept) == len(mounted.user_middleware):
        raise RuntimeError("no Gradio CORS middleware found on the mounted UI app")
    mounted.user_middleware = kept
