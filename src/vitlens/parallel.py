"""Independent steps side by side on a CPU: a few single-purpose worker processes.

On a small CPU, one training step of a nano model uses two threads poorly (about 1.3x one
thread); two processes of one thread each, each on its own run, do more work per second. The
study uses this for its training runs and its analyses, which are independent of one another
once their inputs exist. Workers are spawned (not forked: OpenMP is not fork-safe once the
parent has used it) and set their thread count before any work.

`plan_workers` decides how many: on a CPU device, `min(cores, 4)` workers sharing the cores; on
CUDA, MPS or under torchrun, one (the steps then run in the calling process, as before).
"""

from __future__ import annotations

import concurrent.futures as cf
import ctypes
import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from vitlens.errors import VitlensError

PR_SET_PDEATHSIG = 1  # prctl(2)


@dataclass(frozen=True)
class Workers:
    """How many processes run steps side by side, and the torch threads of each."""

    processes: int
    threads: int


def plan_workers(requested: int | None, device: str) -> Workers:
    """`requested` workers (None: automatic) for steps on `device`.

    Raises:
        VitlensError: a worker count below 1.
    """
    from vitlens import distributed as dist

    cores = os.cpu_count() or 1
    if requested is not None and requested < 1:
        raise VitlensError(f"--workers must be at least 1, got {requested}")
    if device != "cpu" or dist.world() > 1:
        return Workers(1, 0)  # 0: leave torch's thread setting alone
    processes = requested or min(cores, 4)
    return Workers(processes, max(1, cores // processes) if processes > 1 else 0)


def _start_worker(threads: int) -> None:
    import torch

    _die_with_parent()
    if threads:
        os.environ["OMP_NUM_THREADS"] = str(threads)
        torch.set_num_threads(threads)


def _die_with_parent() -> None:
    """On Linux, a worker is killed with its parent (a killed study leaves no orphan writing
    into its run folders); elsewhere the pool's own shutdown is relied on."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:
        return


def _timed(work: Callable[..., Any], args: tuple) -> tuple[Any, float]:
    started = time.perf_counter()
    return work(*args), time.perf_counter() - started


def run_side_by_side(
    work: Callable[..., Any], jobs: list[tuple], workers: Workers
) -> Iterator[tuple[int, Any, float, BaseException | None]]:
    """Run `work(*job)` for every job in `workers.processes` spawned processes; yields
    (job index, result, seconds, error) as each finishes. `work` must be a module-level
    function and the jobs picklable."""
    context = multiprocessing.get_context("spawn")
    with cf.ProcessPoolExecutor(
        workers.processes,
        mp_context=context,
        initializer=_start_worker,
        initargs=(workers.threads,),
    ) as pool:
        futures = {pool.submit(_timed, work, job): i for i, job in enumerate(jobs)}
        for future in cf.as_completed(futures):
            try:
                result, seconds = future.result()
            except BaseException as err:  # noqa: BLE001 - handed to the caller with its job
                yield futures[future], None, 0.0, err
            else:
                yield futures[future], result, seconds, None
