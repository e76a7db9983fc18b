"""Independent study steps side by side in worker processes (vitlens.parallel)."""

from __future__ import annotations

import os

import pytest

from vitlens.errors import VitlensError
from vitlens.parallel import Workers, plan_workers, run_side_by_side


def square_in_a_worker(x: int) -> tuple[int, int, int]:
    import torch

    if x < 0:
        raise VitlensError(f"no square of {x} today")
    return x * x, os.getpid(), torch.get_num_threads()


def test_the_automatic_plan_shares_the_cores_on_a_cpu_only():
    cores = os.cpu_count() or 1
    auto = plan_workers(None, "cpu")
    assert auto.processes == min(cores, 4)
    assert auto.threads == (max(1, cores // auto.processes) if auto.processes > 1 else 0)
    assert plan_workers(1, "cpu") == Workers(1, 0)
    assert plan_workers(None, "cuda") == Workers(1, 0)
    with pytest.raises(VitlensError, match="at least 1"):
        plan_workers(0, "cpu")


def test_steps_run_in_spawned_workers_with_their_threads_and_errors_come_back():
    jobs = [(3,), (-1,), (4,)]
    seen = {i: (result, error) for i, result, _, error in
            run_side_by_side(square_in_a_worker, jobs, Workers(2, 1))}  # fmt: skip
    assert seen[0][0][0] == 9 and seen[2][0][0] == 16
    assert {seen[0][0][1], seen[2][0][1]} - {os.getpid()}  # not this process
    assert seen[0][0][2] == seen[2][0][2] == 1  # one thread each
    assert isinstance(seen[1][1], VitlensError) and "no square of -1" in str(seen[1][1])
