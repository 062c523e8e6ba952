"""CORS from UNET3D_ALLOW_ORIGINS, built on the first request so that creating the app reads no settings."""

from __future__ import annotations

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
