"""Request bodies that must keep arriving: a `receive` that cuts off a body that stalls or crawls.

A body from which nothing arrives for UNET3D_UPLOAD_STALL_S, or that after that long has arrived slower than
UNET3D_UPLOAD_MIN_RATE_KIB_S on average, is cut off by raising from the route's `receive()`. The error is a
`ServiceError` (the routes' handlers map it to 408) and a Starlette `MultiPartException`, which multipart parsers
(Gradio's upload route, which cannot be changed, included) catch to delete their temp file before they answer;
`api/admission.py` then answers with the refusal itself. A client that disconnects mid-body is handled the same way.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from starlette.formparsers import MultiPartException
from starlette.requests import ClientDisconnect
from starlette.types import Message, Receive, Scope

from unet3d.errors import VolumeTooLargeError

from .errors import UploadTimeoutError


class UploadCutError(UploadTimeoutError, MultiPartException):
    """A body cut off for stalling or crawling, as raised into the route (see the module docstring)."""

    def __init__(self, message: str) -> None:
        UploadTimeoutError.__init__(self, message)
        self.message = message


class BodyTooLargeError(VolumeTooLargeError, MultiPartException):
    """A body of undeclared length that passed what it reserved."""

    def __init__(self, message: str) -> None:
        VolumeTooLargeError.__init__(self, message)
        self.message = message


class ClientGoneError(ClientDisconnect, MultiPartException):
    """The client disconnected mid-body."""

    def __init__(self) -> None:
        ClientDisconnect.__init__(self)
        self.message = "the client disconnected during the upload"


@dataclass(frozen=True)
class BodyRules:
    """How fast a body must arrive (UNET3D_UPLOAD_STALL_S, UNET3D_UPLOAD_MIN_RATE_KIB_S) and the size reserved
    for one of unknown length."""

    stall_s: float
    min_rate_bytes_s: float
    undeclared_bytes: int


class GuardedBody:
    """A `receive` that enforces the body rules and cuts the body off by raising (see the module docstring).

    Args:
        receive: the server's.
        rules: how fast the body must arrive.
        limit: the most bytes it may have (None: the server checks its declared Content-Length).
        on_complete: called once, when nothing more is to be guarded (the body ended or was refused).
    """

    def __init__(self, receive: Receive, rules: BodyRules, limit: int | None, on_complete: Callable[[], None]) -> None:
        self.receive, self.rules, self.limit, self.on_complete = receive, rules, limit, on_complete
        self.started = self.last_byte = time.monotonic()
        self.received = 0
        self.complete = False  # nothing more to guard: the body ended, or was refused
        self.ended = False  # its last part arrived
        self.refusal: Exception | None = None

    async def __call__(self) -> Message:
        if self.complete:
            return await self.receive()
        try:
            async with asyncio.timeout(self._deadline() - time.monotonic()):
                message = await self.receive()
        except TimeoutError:
            raise self._refuse(UploadCutError(self._why_cut())) from None
        if message["type"] == "http.disconnect":
            raise self._refuse(ClientGoneError())
        self.received += len(message.get("body", b""))
        self.last_byte = time.monotonic()
        if self.limit is not None and self.received > self.limit:
            raise self._refuse(
                BodyTooLargeError(
                    f"the body passed {self.limit / 2**20:.3g} MiB without a Content-Length: send a smaller file, or "
                    "declare its length"
                )
            )
        if not message.get("more_body", False):
            self.ended = True
            self._finish()
        return message

    def _deadline(self) -> float:
        """When the body is cut if nothing more arrives: stalled, or below the minimum average rate."""
        stalled = self.last_byte + self.rules.stall_s
        if self.rules.min_rate_bytes_s <= 0:
            return stalled
        crawling = self.started + max(self.rules.stall_s, self.received / self.rules.min_rate_bytes_s)
        return min(stalled, crawling)

    def _why_cut(self) -> str:
        elapsed = time.monotonic() - self.started
        if time.monotonic() - self.last_byte >= 0.9 * self.rules.stall_s:  # both deadlines may fall together
            reason = f"nothing arrived for {self.rules.stall_s:g} s (UNET3D_UPLOAD_STALL_S)"
        else:
            reason = (
                f"{self.received / 1024 / elapsed:.2f} KiB/s is below the {self.rules.min_rate_bytes_s / 1024:g} "
                "KiB/s the server needs (UNET3D_UPLOAD_MIN_RATE_KIB_S)"
            )
        return f"the upload was cut off after {self.received:,} bytes: {reason}; nothing was kept, send it again"

    def _refuse(self, error: Exception) -> Exception:
        self.refusal = error
        self._finish()
        return error

    def _finish(self) -> None:
        if not self.complete:
            self.complete = True
            self.on_complete()


def declared_length(scope: Scope) -> tuple[bool, int | None]:
    """Whether the request has a body, and its declared length (None: chunked, unknown)."""
    headers = dict(scope.get("headers", ()))
    length = headers.get(b"content-length")
    if length is not None:
        size = int(length) if length.strip().isdigit() else 0
        return size > 0, size
    return b"chunked" in headers.get(b"transfer-encoding", b"").lower(), None
