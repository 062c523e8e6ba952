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

A body is cut off by raising from the route's `receive()` (`api/bodies.py`); whatever the route then answers is
replaced by the refusal's own status and message, with `Connection: close` when the body was not read to its end.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from unet3d.errors import VolumeTooLargeError

from .bodies import BodyRules, GuardedBody, declared_length
from .clients import RateLimiter, TrustedProxies
from .errors import RateLimitedError, ServiceError, ShuttingDownError, TooManyUploadsError, error_response
from .lifecycle import Lifecycle
from .limits import RESTART_RETRY_S
from .settings import Settings
from .tempfiles import TempQuota

logger = logging.getLogger(__name__)

UPLOAD_BYTES = 64 * 1024  # a larger body (or one of unknown length) is an upload
ENVELOPE_BYTES = 256 * 1024  # multipart framing and small fields beside the files
PROBES = frozenset({"/health", "/ready", "/metrics"})
_READS = frozenset({"GET", "HEAD", "OPTIONS"})


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
        """Whether the request spends a token of its client's bucket (see the module docstring)."""
        path, root = scope.get("path", ""), scope.get("root_path", "")
        if root and path.startswith(root):  # served under a prefix (uvicorn --root-path): the app's own path
            path = path[len(root) :]
        if path in PROBES:
            return False
        return scope.get("method", "GET") not in _READS or path.startswith("/v1/")

    @contextmanager
    def upload(self, client: str, declared: int | None) -> Iterator[Callable[[], None]]:
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
            has_body, declared = declared_length(scope)
            if not has_body:
                await self.app(scope, receive, reply.send)
            elif declared is not None and declared <= UPLOAD_BYTES:
                body = GuardedBody(receive, admission.rules, None, lambda: None)
                reply.body = body
                await self.app(scope, body, reply.send)
            else:
                with admission.upload(client, declared) as give_back:
                    limit = None if declared else admission.rules.undeclared_bytes  # what it reserved
                    body = GuardedBody(receive, admission.rules, limit, give_back)
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
        return declared_length(self.scope)[0] and (self.body is None or not self.body.ended)
