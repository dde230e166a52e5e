"""Run ``detlab sweep``'s settings in worker processes (``--workers``).

A sweep's network pass uses every core (torch's intra-op threads), but each setting's NMS and
COCO evaluation run on one, so on a many-core machine the settings, not the network, set the
time. The settings are independent: forked workers inherit the cached outputs (copy-on-write,
nothing is pickled but the jobs' indices and their small results) and evaluate one group of
settings each. Linux fork only: elsewhere (macOS system frameworks are not fork-safe,
Windows has no fork), or once CUDA is initialised in the parent (a forked child cannot use
it), the settings run one after another in this process.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["available_cores", "can_fork", "run_jobs"]

T = TypeVar("T")
_JOB: Callable[[int], Any] | None = None


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity where the OS reports it)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def can_fork() -> bool:
    """Whether settings can run in forked workers here (Linux, CUDA not initialised)."""
    import torch

    return sys.platform.startswith("linux") and (
        "fork" in multiprocessing.get_all_start_methods()) and not torch.cuda.is_initialized()


def run_jobs(job: Callable[[int], T], count: int, workers: int) -> tuple[list[T], int]:
    """``[job(0), …, job(count - 1)]`` over up to ``workers`` forked processes, and the number
    of processes used (1: run here, in order). ``job``'s results must pickle."""
    global _JOB
    workers = min(workers, count)
    if workers <= 1 or not can_fork():
        return [job(i) for i in range(count)], 1
    _JOB = job
    try:
        with multiprocessing.get_context("fork").Pool(workers, initializer=_one_thread) as pool:
            return pool.map(_run, range(count), chunksize=1), workers
    finally:
        _JOB = None


def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)  # the workers share the cores: no oversubscription


def _run(index: int) -> Any:
    assert _JOB is not None
    return _JOB(index)
