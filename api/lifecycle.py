"""Readiness, and the drain before a restart.

Liveness (`GET /health`) says that the process answers; readiness (`GET /ready`) says that it should get traffic: the
model is loaded, the review storage is open and the server is not draining.

On SIGTERM (`docker stop`, Kubernetes, a Space restarting) the server drains at once: `/ready` answers 503, new
uploads and predictions get 503 + Retry-After, predictions still queued are dropped with the same answer, running
ones go on. After UNET3D_DRAIN_S (time for a load balancer to see `/ready` fail; 0 by default) uvicorn's own shutdown
begins: it stops accepting connections and waits up to its graceful timeout (`unet3d serve` sets it from
UNET3D_GRACEFUL_SHUTDOWN_S) for the requests in flight, then the process exits.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

logger = logging.getLogger(__name__)

SignalHandler = Callable[[int, FrameType | None], Any]


class Lifecycle:
    """Whether the server drains, and what draining does (`on_drain` callbacks, e.g. `InferenceSlots.drain`)."""

    def __init__(self) -> None:
        self.draining = False
        self._on_drain: list[Callable[[], None]] = []

    def on_drain(self, callback: Callable[[], None]) -> None:
        """Call `callback` when the drain begins (at once if it has)."""
        self._on_drain.append(callback)
        if self.draining:
            callback()

    def drain(self) -> None:
        """Take no new work from now on (idempotent)."""
        if self.draining:
            return
        self.draining = True
        logger.info("draining: /ready answers 503 and new work is refused; requests in flight go on")
        for callback in self._on_drain:
            callback()

    def drain_on_sigterm(self, drain_s: float) -> Callable[[], None]:
        """Make SIGTERM drain first, then (after `drain_s`) hand it to the handler it had (uvicorn's shutdown).

        Installed from the lifespan, i.e. inside uvicorn's own signal capture; a second SIGTERM skips the wait.
        Returns the function that puts the previous handler back. Does nothing off the main thread (signals can
        only be handled there; e.g. Starlette's TestClient runs the app in another thread).
        """
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        previous = signal.getsignal(signal.SIGTERM)
        loop = asyncio.get_running_loop()
        received: list[int] = []

        def hand_over(signum: int) -> None:
            if callable(previous):
                previous(signum, None)
            elif previous == signal.SIG_DFL:  # nobody else handles it: end the process as SIGTERM would have
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.raise_signal(signum)

        def on_sigterm(signum: int, frame: FrameType | None) -> None:
            received.append(signum)
            # A signal handler may interrupt code that holds a lock: the drain itself runs on the event loop.
            loop.call_soon_threadsafe(self.drain)
            delay = 0.0 if len(received) > 1 else drain_s
            loop.call_soon_threadsafe(loop.call_later, delay, hand_over, signum)

        signal.signal(signal.SIGTERM, on_sigterm)

        def restore() -> None:
            if signal.getsignal(signal.SIGTERM) is on_sigterm:
                signal.signal(signal.SIGTERM, previous)

        return restore
