"""Inference slots: bounded concurrency, bounded queue, immediate refusal past both."""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time

import anyio
import pytest

from api.errors import ServiceBusyError, ShuttingDownError
from api.limits import InferenceSlots, MemoryBudget
from unet3d.errors import VolumeTooLargeError


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


# ---- the drain before a restart -------------------------------------------------------------------------------------


def test_a_drain_refuses_new_work_drops_queued_jobs_and_lets_the_running_one_finish():
    slots = InferenceSlots(max_concurrency=1, queue_size=2)
    started, release = threading.Event(), threading.Event()
    results: dict[str, object] = {}

    def running() -> str:
        started.set()
        release.wait(5)
        return "done"

    def run(name: str, job) -> None:
        try:
            results[name] = slots.run(job)
        except ShuttingDownError as e:
            results[name] = e

    first = threading.Thread(target=run, args=("running", running))
    first.start()
    assert started.wait(5)
    second = threading.Thread(target=run, args=("queued", lambda: "never"))
    second.start()
    time.sleep(0.1)
    slots.drain()
    with pytest.raises(ShuttingDownError) as refused:
        slots.admit().__enter__()
    release.set()
    first.join(5)
    second.join(5)
    assert results["running"] == "done"
    assert isinstance(results["queued"], ShuttingDownError) and results["queued"].retry_after_s >= 1
    assert "restarting" in str(refused.value)


def test_a_drained_async_job_answers_shutting_down_not_cancelled():
    slots = InferenceSlots(max_concurrency=1, queue_size=2)
    release = threading.Event()

    async def main() -> list[object]:
        blocker = asyncio.ensure_future(slots.run_async(lambda: release.wait(5)))
        await asyncio.sleep(0.05)
        queued = asyncio.ensure_future(slots.run_async(lambda: "never"))
        await asyncio.sleep(0.05)
        slots.drain()
        release.set()
        return await asyncio.gather(blocker, queued, return_exceptions=True)

    ran, dropped = asyncio.run(main())
    assert ran is True and isinstance(dropped, ShuttingDownError)


# ---- the review UI's memory budget ----------------------------------------------------------------------------------


def test_a_budget_holds_each_owners_latest_reservation():
    budget = MemoryBudget(100, wait_s=0, expires_after_s=60)
    budget.reserve("a", 60)
    budget.reserve("a", 30)  # replaces, never adds up
    budget.reserve("b", 70)
    assert budget.total == 100 and budget.held("a") == 30 and budget.owners == 2
    with pytest.raises(ServiceBusyError) as busy:
        budget.reserve("c", 1)
    assert 5 <= busy.value.retry_after_s <= 60
    budget.release("b")
    budget.reserve("c", 70)
    assert budget.total == 100


def test_a_reservation_waits_for_room_then_gives_up():
    budget = MemoryBudget(100, wait_s=2.0, expires_after_s=60)
    budget.reserve("a", 100)
    threading.Timer(0.3, budget.release, args=("a",)).start()
    started = time.monotonic()
    budget.reserve("b", 100)  # waits until "a" lets go
    assert 0.2 < time.monotonic() - started < 1.5
    impatient = MemoryBudget(100, wait_s=0.3, expires_after_s=60)
    impatient.reserve("a", 100)
    started = time.monotonic()
    with pytest.raises(ServiceBusyError):
        impatient.reserve("b", 1)
    assert 0.25 < time.monotonic() - started < 1.5


def test_a_review_larger_than_the_whole_budget_is_refused_at_once():
    with pytest.raises(VolumeTooLargeError, match="UNET3D_SESSION_MEMORY_MB"):
        MemoryBudget(100, wait_s=10, expires_after_s=60).reserve("a", 101)
