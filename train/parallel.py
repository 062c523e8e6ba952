"""Independent dataset-building jobs, in worker processes when asked (a GPU machine's many cores build in seconds).

Workers are spawned, not forked: torch's thread pools do not survive a fork. Each job is a module-level function
and its arguments; a worker keeps what every job needs (the template, the brain) in a per-process cache.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any


def run_jobs(calls: Sequence[tuple[Callable[..., Any], tuple[Any, ...]]], workers: int = 1) -> list[Any]:
    """`function(*arguments)` for every call, results in call order; `workers` > 1 runs them in that many
    processes, taking the calls in order (put the longest first)."""
    if workers <= 1 or len(calls) <= 1:
        return [function(*arguments) for function, arguments in calls]
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(min(workers, len(calls)), mp_context=context, initializer=_one_thread) as pool:
        futures = [pool.submit(function, *arguments) for function, arguments in calls]
        return [future.result() for future in futures]


def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)  # the parallelism is across jobs; threads would oversubscribe the cores
