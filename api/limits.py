"""Inference slots: at most `max_concurrency` predictions run at once, at most `queue_size` more wait.

Admission is decided immediately (past the queue → `ServiceBusyError`, i.e. 503 + Retry-After). Jobs run on a
pool of exactly `max_concurrency` long-lived threads; queued jobs wait in the pool's queue, not in threads of
their own, and the event loop only awaits a future, so `/health` never waits on inference. Always running
inference on the same few threads also keeps peak memory flat under load: every new thread that allocates a
volume gets its own glibc malloc arena, which keeps the freed memory. The HTTP API and the Gradio UI share one
`InferenceSlots`, so together they never exceed the limits.
"""

from __future__ import annotations

import asyncio
import contextvars
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import TypeVar

from .errors import ServiceBusyError

T = TypeVar("T")
_DEFAULT_RETRY_S = 5
_MAX_RETRY_S = 600


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
        """
        with self._lock:
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
        """
        return self._pool.submit(contextvars.copy_context().run, self._timed, job).result()

    async def run_async(self, job: Callable[[], T]) -> T:
        """`run` from async code: awaits the job without blocking the event loop or holding a thread.

        A job still queued when the awaiting request is cancelled (client gone) is dropped.
        """
        return await asyncio.wrap_future(self._pool.submit(contextvars.copy_context().run, self._timed, job))

    def shutdown(self) -> None:
        """Drop queued jobs and stop accepting new ones (a running job finishes)."""
        self._pool.shutdown(wait=False, cancel_futures=True)

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
