"""Inference slots: at most `max_concurrency` predictions run at once, at most `queue_size` more wait; and the memory
budget of the review UI's sessions.

A request is admitted once its upload is complete and valid (a client still sending holds no place: uploads are
bounded on their own, in `api/admission.py`). Admission is decided immediately (past the queue → `ServiceBusyError`,
i.e. 503 + Retry-After; while the server drains before a restart → `ShuttingDownError`). Jobs run on a pool of
exactly `max_concurrency` long-lived threads; queued jobs wait in the pool's queue, not in threads of their own, and
the event loop only awaits a future, so `/health` never waits on inference. Always running inference on the same few
threads also keeps peak memory flat under load: every new thread that allocates a volume gets its own glibc malloc
arena, which keeps the freed memory. The HTTP API and the Gradio UI share one
`InferenceSlots`, so together they never exceed the limits.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import TypeVar

from unet3d.errors import VolumeTooLargeError

from .errors import ServiceBusyError, ShuttingDownError

T = TypeVar("T")
_DEFAULT_RETRY_S = 5
_MAX_RETRY_S = 600
RESTART_RETRY_S = 15  # what a client is told while the server drains: about the time a restart takes


class InferenceSlots:
    """A fixed pool of inference threads plus a bounded count of admitted requests.

    Args:
        max_concurrency: predictions that may run at the same time (>= 1).
        queue_size: admitted requests that may wait for a slot (>= 0).
        observe_seconds: called with the duration of every finished job (e.g. a Prometheus histogram).
    """

    def __init__(
        self, max_concurrency: int, queue_size: int, *, observe_seconds: Callable[[float], None] | None = None
    ) -> None:
        if max_concurrency < 1 or queue_size < 0:
            raise ValueError(f"need max_concurrency >= 1 and queue_size >= 0, got {max_concurrency}, {queue_size}")
        self.max_concurrency = max_concurrency
        self.queue_size = queue_size
        self._observe = observe_seconds
        self._pool = ThreadPoolExecutor(max_workers=max_concurrency, thread_name_prefix="unet3d-inference")
        self._lock = threading.Lock()
        self._admitted = 0
        self._running = 0
        self._recent_s: deque[float] = deque(maxlen=8)
        self._queued: set[Future[object]] = set()
        self.draining = False

    @property
    def running(self) -> int:
        return self._running

    @property
    def waiting(self) -> int:
        """Admitted requests not yet running (uploading, checking or waiting for a slot)."""
        with self._lock:
            return self._admitted - self._running

    @contextmanager
    def admit(self) -> Iterator[None]:
        """Reserve a place (running or queued) for the duration of the block, or refuse at once.

        Raises:
            ServiceBusyError: every slot and every queue place is taken.
            ShuttingDownError: the server is draining before a restart.
        """
        with self._lock:
            if self.draining:
                raise _shutting_down()
            if self._admitted >= self.max_concurrency + self.queue_size:
                raise ServiceBusyError(
                    f"the server is busy ({self._running} running, {self._admitted - self._running} queued): "
                    "retry after the number of seconds in the Retry-After header",
                    self.retry_after_s(),
                )
            self._admitted += 1
        try:
            yield
        finally:
            with self._lock:
                self._admitted -= 1

    def run(self, job: Callable[[], T]) -> T:
        """Run `job` on an inference thread and wait for it (call from any thread but an inference thread).

        The job sees the caller's context variables (Gradio finds its progress bar through them).

        Raises:
            ShuttingDownError: the server drains: the job was not started.
        """
        future = self._submit(job)
        try:
            return future.result()
        except concurrent.futures.CancelledError:
            raise _shutting_down() from None

    async def run_async(self, job: Callable[[], T]) -> T:
        """`run` from async code: awaits the job without blocking the event loop or holding a thread.

        A job still queued when the awaiting request is cancelled (client gone) is dropped.

        Raises:
            ShuttingDownError: the server drains: the job was not started.
        """
        future = self._submit(job)
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if future.cancelled() and self.draining and not (task and task.cancelling()):
                raise _shutting_down() from None  # drain() dropped it, the request itself goes on
            raise

    def drain(self) -> None:
        """Take no new work: admissions are refused and queued jobs dropped (their requests get 503); running jobs
        finish."""
        with self._lock:
            self.draining = True
            queued = list(self._queued)
        for future in queued:
            future.cancel()  # False for a running job, which goes on

    def shutdown(self) -> None:
        """Drop queued jobs and stop accepting new ones (a running job finishes)."""
        self.drain()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _submit(self, job: Callable[[], T]) -> Future[T]:
        with self._lock:
            if self.draining:
                raise _shutting_down()
            future = self._pool.submit(contextvars.copy_context().run, self._timed, job)
            self._queued.add(future)  # type: ignore[arg-type]
        future.add_done_callback(self._forget)
        return future

    def _forget(self, future: Future[T]) -> None:
        with self._lock:
            self._queued.discard(future)

    def _timed(self, job: Callable[[], T]) -> T:
        started = time.perf_counter()
        with self._lock:
            self._running += 1
        try:
            return job()
        finally:
            elapsed = time.perf_counter() - started
            with self._lock:
                self._running -= 1
                self._recent_s.append(elapsed)
            if self._observe is not None:
                self._observe(elapsed)

    def retry_after_s(self) -> int:
        """Seconds until a queue place is likely free: recent job time × jobs ahead / slots (1 to 600)."""
        if not self._recent_s:
            return _DEFAULT_RETRY_S
        mean_s = sum(self._recent_s) / len(self._recent_s)
        ahead = max(self._admitted - self.max_concurrency + 1, 1)
        return int(min(max(math.ceil(mean_s * ahead / self.max_concurrency), 1), _MAX_RETRY_S))


def _shutting_down() -> ShuttingDownError:
    return ShuttingDownError(
        "the server is restarting and takes no new work: retry after the number of seconds in the Retry-After header",
        RESTART_RETRY_S,
    )


class MemoryBudget:
    """Bytes held by owners (the review UI's tabs) under one budget.

    An owner's new holding replaces its previous one. A reservation that would pass the budget waits up to `wait_s`
    for others to release theirs (a tab closes, a session expires), then is refused with a time to retry.

    Args:
        budget_bytes: the most all owners may hold together (UNET3D_SESSION_MEMORY_MB).
        wait_s: how long a reservation may wait (UNET3D_SESSION_WAIT_S).
        expires_after_s: how long an untouched holding lives (the sessions' time to live), for the retry estimate.
    """

    def __init__(self, budget_bytes: int, *, wait_s: float, expires_after_s: float) -> None:
        self.budget_bytes, self.wait_s, self.expires_after_s = budget_bytes, wait_s, expires_after_s
        self._held: dict[Hashable, tuple[int, float]] = {}  # owner → (bytes, last touched)
        self._total = 0
        self._changed = threading.Condition()

    @property
    def total(self) -> int:
        return self._total

    @property
    def owners(self) -> int:
        return len(self._held)

    def held(self, owner: Hashable) -> int:
        return self._held.get(owner, (0, 0.0))[0]

    def reserve(self, owner: Hashable, nbytes: int) -> None:
        """Hold `nbytes` for `owner` (in place of what it held), waiting up to `wait_s` for room.

        Raises:
            VolumeTooLargeError: `nbytes` alone passes the budget.
            ServiceBusyError: no room within `wait_s`; `retry_after_s` estimates when an idle holding expires.
        """
        if nbytes > self.budget_bytes:
            raise VolumeTooLargeError(
                f"reviewing this volume takes about {nbytes / 2**20:,.0f} MiB, more than the "
                f"{self.budget_bytes / 2**20:,.0f} MiB the review UI may hold (UNET3D_SESSION_MEMORY_MB): "
                "segment it with the HTTP API (POST /v1/predict) or crop it"
            )
        deadline = time.monotonic() + self.wait_s
        with self._changed:
            while self._total - self.held(owner) + nbytes > self.budget_bytes:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ServiceBusyError(
                        f"the review UI holds {self._total / 2**20:,.0f} MiB of other visitors' reviews (budget "
                        f"{self.budget_bytes / 2**20:,.0f} MiB): retry later",
                        self._retry_after_s(),
                    )
                self._changed.wait(left)
            self._total += nbytes - self.held(owner)
            self._held[owner] = (nbytes, time.monotonic())

    def touch(self, owner: Hashable) -> None:
        """Note that `owner` is in use (its holding expires `expires_after_s` after the last touch)."""
        with self._changed:
            if owner in self._held:
                self._held[owner] = (self._held[owner][0], time.monotonic())

    def release(self, owner: Hashable) -> None:
        """Give back what `owner` holds (nothing if it holds nothing)."""
        with self._changed:
            nbytes, _ = self._held.pop(owner, (0, 0.0))
            self._total -= nbytes
            self._changed.notify_all()

    def _retry_after_s(self) -> int:
        oldest = min((touched for _, touched in self._held.values()), default=time.monotonic())
        left = self.expires_after_s - (time.monotonic() - oldest)
        return int(min(max(math.ceil(left), 5), _MAX_RETRY_S))
