"""Inference slots: bounded concurrency, bounded queue, immediate refusal past both."""

from __future__ import annotations

import contextvars
import threading
import time

import anyio
import pytest

from api.errors import ServiceBusyError
from api.limits import InferenceSlots


def test_admission_is_refused_past_slots_plus_queue():
    slots = InferenceSlots(max_concurrency=1, queue_size=1)
    with slots.admit(), slots.admit():
        with pytest.raises(ServiceBusyError) as refused:
            slots.admit().__enter__()
        assert refused.value.retry_after_s >= 1
    with slots.admit():  # places are returned on exit
        pass


def test_no_more_than_max_concurrency_jobs_run_at_once():
    slots = InferenceSlots(max_concurrency=2, queue_size=4)
    running, peak, lock = 0, 0, threading.Lock()

    def job() -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.05)
        with lock:
            running -= 1

    threads = [threading.Thread(target=slots.run, args=(job,)) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert peak == 2
    assert slots.running == 0


def test_a_failing_job_releases_its_slot():
    slots = InferenceSlots(max_concurrency=1, queue_size=0)

    def boom() -> None:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        slots.run(boom)
    assert slots.run(lambda: 42) == 42


def test_waiting_counts_admitted_requests_not_yet_running():
    slots = InferenceSlots(max_concurrency=1, queue_size=2)
    with slots.admit(), slots.admit():
        assert slots.waiting == 2


def test_run_async_keeps_the_event_loop_free():
    slots = InferenceSlots(max_concurrency=1, queue_size=1)
    ticks: list[float] = []
    finished: list[float] = []

    def job() -> None:
        time.sleep(0.4)
        finished.append(time.perf_counter())

    async def main() -> None:
        async def ticker() -> None:
            for _ in range(5):
                await anyio.sleep(0.02)
                ticks.append(time.perf_counter())

        async with anyio.create_task_group() as group:
            group.start_soon(slots.run_async, job)
            group.start_soon(ticker)

    anyio.run(main)
    assert len(ticks) == 5
    assert ticks[-1] < finished[0], "the event loop stalled while the job ran"


def test_retry_after_grows_with_the_queue():
    slots = InferenceSlots(max_concurrency=1, queue_size=3, observe_seconds=None)
    slots.run(lambda: time.sleep(0.01))
    with slots.admit():
        short = slots.retry_after_s()
        with slots.admit(), slots.admit():
            assert slots.retry_after_s() >= short >= 1


def test_observer_receives_every_job_duration():
    seen: list[float] = []
    slots = InferenceSlots(max_concurrency=1, queue_size=0, observe_seconds=seen.append)
    slots.run(lambda: time.sleep(0.02))
    assert len(seen) == 1
    assert seen[0] >= 0.02


def test_invalid_limits_are_refused():
    with pytest.raises(ValueError, match="max_concurrency"):
        InferenceSlots(max_concurrency=0, queue_size=1)


def test_jobs_always_run_on_the_same_pool_threads():
    slots = InferenceSlots(max_concurrency=1, queue_size=8)
    names = {slots.run(lambda: threading.current_thread().name) for _ in range(5)}
    assert len(names) == 1
    assert names.pop().startswith("unet3d-inference")


def test_jobs_see_the_callers_context_variables():
    marker: contextvars.ContextVar[str] = contextvars.ContextVar("marker", default="unset")
    marker.set("caller")
    slots = InferenceSlots(max_concurrency=1, queue_size=0)
    assert slots.run(marker.get) == "caller"
