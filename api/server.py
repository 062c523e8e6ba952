"""Run the app under uvicorn as `unet3d serve` (and the Docker image) do: the graceful timeout and the trusted proxies
from the settings, and exit status 0 after a SIGTERM.

uvicorn handles SIGTERM itself (a graceful shutdown), then raises the signal again with the handler the process had
before it started; with Python's default that ends the process "killed by SIGTERM" (status 143), which some
supervisors count as a crash. Here that earlier handler only notes the signal, so a drained server exits 0.
"""

from __future__ import annotations

import signal
from types import FrameType

from pydantic import ValidationError

from .settings import get_settings


def _after_uvicorn(signum: int, frame: FrameType | None) -> None:
    """SIGTERM once uvicorn has shut down gracefully: nothing is left to do, and the process exits 0."""


def serve(host: str, port: int, *, ui: bool = True) -> None:
    """Serve `api.main:app` (with `ui=False`, `api.main:create_api_app`: the HTTP API alone) on host:port until
    SIGTERM or SIGINT.

    uvicorn waits up to UNET3D_GRACEFUL_SHUTDOWN_S for requests in flight, and believes X-Forwarded-For from the
    peers in UNET3D_TRUSTED_PROXIES only (as `api/clients.py` does). Invalid settings are reported by the app's
    startup, in one line.
    """
    import uvicorn

    try:
        settings = get_settings()
        graceful_s: float | None = settings.graceful_shutdown_s
        proxies = ",".join(settings.trusted_proxies)
    except ValidationError:  # the lifespan says what is wrong, and the process exits 1
        graceful_s, proxies = None, ""
    signal.signal(signal.SIGTERM, _after_uvicorn)
    uvicorn.run(
        "api.main:app" if ui else "api.main:create_api_app",
        factory=not ui,
        host=host,
        port=port,
        timeout_graceful_shutdown=None if graceful_s is None else max(round(graceful_s), 1),
        forwarded_allow_ips=proxies,
    )
