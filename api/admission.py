"""Admission of HTTP requests before any route runs: the per-client rate limit, and the rules for request bodies.

Every request of the app (the API, the review storage and the Gradio UI mounted at /ui alike) passes
`AdmissionMiddleware`:

- **Rate limit.** Each client (`api/clients.py`) has a token bucket (UNET3D_RATE_LIMIT per second, bursts of
  UNET3D_RATE_BURST; off when the rate is 0). It counts every /v1/* request and every request that sends something
  (POST, PUT, PATCH, DELETE: the UI's events and uploads too); never /health, /ready, /metrics, nor the pages,
  scripts and files the UI and /docs read. Past it: 429 + Retry-After.
- **Uploads.** A body larger than 64 KiB, or of unknown length, is an upload. While it arrives it holds one of
  UNET3D_MAX_UPLOADS places (503 past them) and one of its client's UNET3D_MAX_UPLOADS_PER_CLIENT (429), and it
  reserves its size in the temp quota before a byte is written (`api/tempfiles.py`, 507). Inference slots are taken
  by the routes only once the upload is complete and valid (`api/limits.py`).
- **Slow bodies.** Any body that stops arriving for UNET3D_UPLOAD_STALL_S, or that after that long arrives slower
  than UNET3D_UPLOAD_MIN_RATE_KIB_S on average, is cut off: 408, and the route's temp files are removed.

A body is cut by raising from the route's `receive()`: the error is a `ServiceError` (the routes' handlers map it)
and a Starlette `MultiPartException`, which multipart parsers (Gradio's upload route, which cannot be changed,
included) catch to delete their temp file before they answer. Whatever the route then answers is replaced by the
refusal's own status and message; a client that disconnects mid-body is handled the same way (499).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

from starlette.formparsers import MultiPartException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from unet3d.errors import VolumeTooLargeError

from .clients import RateLimiter, TrustedProxies
from .errors import (
    RateLimitedError,
    ServiceError,
    ShuttingDownError,
    TooManyUploadsError,
    UploadTimeoutError,
    error_response,
)
from .lifecycle import Lifecycle
from .limits import RESTART_RETRY_S
from .settings import Settings
from .tempfiles import TempQuota

logger = logging.getLogger(__name__)

UPLOAD_BYTES = 64 * 1024  # a larger body (or one of unknown length) is an upload
ENVELOPE_BYTES = 256 * 1024  # multipart framing and small fields beside the files
PROBES = frozenset({"/health", "/ready", "/metrics"})
_READS = frozenset({"GET", "HEAD", "OPTIONS"})


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


class UploadPlaces:
    """Uploads in flight, in total and per client."""

    def __init__(self, total: int, per_client: int, retry_after_s: int) -> None:
        self.total, self.per_client, self.retry_after_s = total, per_client, retry_after_s
        self.by_client: Counter[str] = Counter()

    @property
    def in_flight(self) -> int:
        return sum(self.by_client.values())

    def take(self, client: str) -> Callable[[], None]:
        """Take a place for `client`; returns the (idempotent) function that gives it back.

        Raises:
            RateLimitedError: `client` has UNET3D_MAX_UPLOADS_PER_CLIENT uploads in flight.
            TooManyUploadsError: UNET3D_MAX_UPLOADS uploads are in flight.
        """
        if self.by_client[client] >= self.per_client:
            raise RateLimitedError(
                f"{client} is already sending {self.per_client} uploads (UNET3D_MAX_UPLOADS_PER_CLIENT): wait for "
                "them to finish; retry after the number of seconds in the Retry-After header",
                self.retry_after_s,
            )
        if self.in_flight >= self.total:
            raise TooManyUploadsError(
                f"the server is receiving {self.total} uploads already (UNET3D_MAX_UPLOADS): retry after the number "
                "of seconds in the Retry-After header",
                self.retry_after_s,
            )
        self.by_client[client] += 1
        given_back = False

        def give_back() -> None:
            nonlocal given_back
            if not given_back:
                given_back = True
                self.by_client[client] -= 1
                if self.by_client[client] <= 0:
                    del self.by_client[client]

        return give_back


class Admission:
    """The admission rules of one app, built from the settings at startup."""

    def __init__(self, settings: Settings, quota: TempQuota, lifecycle: Lifecycle) -> None:
        self.proxies = TrustedProxies(settings.trusted_proxies)
        self.limiter = RateLimiter(settings.rate_limit, settings.rate_burst)
        stall_s = settings.upload_stall_s
        self.places = UploadPlaces(settings.max_uploads, settings.max_uploads_per_client, max(int(stall_s), 1))
        self.rules = BodyRules(
            stall_s, settings.upload_min_rate_kib_s * 1024, settings.max_upload_bytes * 2 + ENVELOPE_BYTES
        )
        self.quota = quota
        self.lifecycle = lifecycle

    def counts_toward_rate(self, scope: Scope) -> bool:
        path = scope.get("path", "")
        if path in PROBES:
            return False
        return scope.get("method", "GET") not in _READS or path.startswith("/v1/")

    @contextmanager
    def upload(self, scope: Scope, client: str, declared: int | None) -> Iterator[Callable[[], None]]:
        """Admit an upload of `declared` bytes (None: unknown): a place, and its size in the temp quota.

        Yields the function that gives the place back (once the body is complete); the quota is held until the
        block ends (the request's files live that long).
        """
        if self.lifecycle.draining:
            raise ShuttingDownError(
                "the server is restarting and takes no new uploads: retry after the number of seconds in the "
                "Retry-After header",
                RESTART_RETRY_S,
            )
        with ExitStack() as stack:
            give_back = self.places.take(client)
            stack.callback(give_back)
            stack.enter_context(self.quota.reserve(self.rules.undeclared_bytes if declared is None else declared))
            yield give_back


class GuardedBody:
    """A `receive` that enforces the body rules and cuts the body off by raising (see the module docstring)."""

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
            self._finish()
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


def _declared_length(scope: Scope) -> tuple[bool, int | None]:
    """Whether the request has a body, and its declared length (None: chunked, unknown)."""
    headers = dict(scope.get("headers", ()))
    length = headers.get(b"content-length")
    if length is not None:
        size = int(length) if length.strip().isdigit() else 0
        return size > 0, size
    return b"chunked" in headers.get(b"transfer-encoding", b"").lower(), None


class AdmissionMiddleware:
    """Pure ASGI middleware applying `Admission` (rate limit, upload places, quota, slow bodies) to every request.

    Args:
        get_admission: the rules, once the lifespan has built them (None before: everything passes).
    """

    def __init__(self, app: ASGIApp, get_admission: Callable[[], Admission | None]) -> None:
        self.app, self.get_admission = app, get_admission

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        admission = self.get_admission()
        if scope["type"] != "http" or admission is None:
            await self.app(scope, receive, send)
            return
        reply = _Reply(scope, receive, send)
        try:
            client = admission.proxies.client_of(scope)
            if admission.counts_toward_rate(scope):
                admission.limiter.take(client)
            has_body, declared = _declared_length(scope)
            if not has_body:
                await self.app(scope, receive, reply.send)
            elif declared is not None and declared <= UPLOAD_BYTES:
                body = GuardedBody(receive, admission.rules, None, lambda: None)
                reply.body = body
                await self.app(scope, body, reply.send)
            else:
                with admission.upload(scope, client, declared) as give_back:
                    body = GuardedBody(receive, admission.rules, None if declared else _limit(admission), give_back)
                    reply.body = body
                    await self.app(scope, body, reply.send)
        except Exception as error:
            cause = reply.refusal() or error
            if not isinstance(cause, ServiceError | ClientDisconnect | VolumeTooLargeError) or reply.started:
                raise
            await reply.refuse(cause)
            return
        refusal = reply.refusal()
        if refusal is not None and not reply.replaced:
            await reply.refuse(refusal)


def _limit(admission: Admission) -> int:
    return admission.rules.undeclared_bytes


class _Reply:
    """The response side of one request: passes the route's answer through, unless the body was refused."""

    def __init__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.scope, self.receive, self._send = scope, receive, send
        self.body: GuardedBody | None = None
        self.started = False
        self.replaced = False

    def refusal(self) -> Exception | None:
        return None if self.body is None else self.body.refusal

    async def send(self, message: Message) -> None:
        refusal = self.refusal()
        if refusal is not None:  # the route answered a body we cut: the answer is the refusal
            if not self.replaced:
                await self.refuse(refusal)
            return
        if message["type"] == "http.response.start":
            self.started = True
        await self._send(message)

    async def refuse(self, error: Any) -> None:
        self.replaced = self.started = True
        if not isinstance(error, ClientDisconnect):
            logger.info("refused %s %s: %s", self.scope.get("method"), self.scope.get("path"), error)
        response = error_response(error)
        if self.body_unread:  # else the connection stays open for whatever the client still sends: close it
            response.headers["Connection"] = "close"
        await response(self.scope, self.receive, self._send)

    @property
    def body_unread(self) -> bool:
        """Whether the request has a body that was not received to its end."""
        return _declared_length(self.scope)[0] and (self.body is None or not self.body.ended)
