"""Batched decisions: many single-task jobs of one shape placed in one vectorised pass.

A batch of a scheduler often holds hundreds of jobs that are the same one task (the
Kubernetes SchedulingBasic case: 10,000 pods of 100m / 500 MiB). Deciding them one by one
pays ``assign_job``'s per-call cost (eligibility, running free vectors, an Assignment) per
job; here the jobs are one class (equal request and constraints, see
``schedulers/decide.py``'s ``alike_key``) and are placed together:

- random first fit: per machine, how many of the tasks it still holds (``slots``, exact
  integer division of free by request, 0 where not eligible: the same feasibility as
  ``kernels.feasibility_mask``); then rounds of seeded uniform draws among the machines with
  a slot left, each draw accepted while its machine has a slot (in draw order), home first
  and the whole cell when the home has no slot left. Every round places at least one task
  per distinct machine drawn, so a batch takes a few rounds, not one per job;
- top-k policies: the jobs become one group of ``jobs`` tasks for ``assign_job``, whose one
  candidate pass serves every task (``gpu/assign.py``, step 6).

The result is an ``Assignment`` with one group: ``machines[0][j]`` is job j's machine.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from cellsched.cellstate.errors import InternalInvariantError, InvalidInputError

from .assign import Assignment, assign_job
from .columns import MachineColumns
from .policy import Policy, Selection
from .reasons import Unplaceable, explain
from .select import rng_for, seed_from
from .spec import GroupSpec


def assign_alike(columns: MachineColumns, spec: GroupSpec, jobs: int, policy: Policy,
                 seed: tuple[str, int] | int) -> Assignment:
    """Place ``jobs`` single-task jobs whose one task is ``spec`` (count 1, no avoided
    machines, no anti-affinity), seeded like ``assign_job``. Columns are only read."""
    if spec.count != 1 or spec.avoid_machines or spec.anti_affinity:
        raise InvalidInputError(f"group {spec.name!r}: batched decisions take one-task groups without "
                                "avoided machines or anti-affinity")
    if jobs < 0:
        raise InvalidInputError(f"jobs must be non-negative, got {jobs}")
    seed = seed if isinstance(seed, int) else seed_from(*seed)
    group = replace(spec, count=jobs, different_machines=False)  # each task is its own job
    if policy.selection is not Selection.RANDOM_FIT:
        return assign_job(columns, [group], policy, seed)
    return _random_alike(columns, group, policy, seed)


def slots(free: np.ndarray, request: np.ndarray, eligible: np.ndarray, ceiling: int) -> np.ndarray:
    """int64[N]: how many tasks of ``request`` each machine holds in ``free`` (exact), 0 where
    not eligible, at most ``ceiling`` (also where nothing is requested)."""
    asked = request > 0
    per = np.full(len(free), ceiling, dtype=np.int64)
    if asked.any():
        per = np.minimum(per, (free[:, asked] // request[asked]).min(axis=1))
    return np.where(eligible, np.maximum(per, 0), 0)


def _random_alike(columns: MachineColumns, group: GroupSpec, policy: Policy, seed: int) -> Assignment:
    rng = rng_for(seed)
    n, jobs = len(columns), group.count
    free = columns.host_free
    req = np.asarray(group.request, dtype=np.int64)
    left = slots(free, req, columns.host_eligibility(group), jobs)
    out = np.full(jobs, -1, dtype=np.int64)
    placed = passes = widened = 0
    pools = [np.arange(n, dtype=np.int64)]
    if not policy.home.whole_cell:
        pools.insert(0, columns.home(policy.home)[1])
    for p, pool in enumerate(pools):
        if p > 0 and placed < jobs:
            widened = 1  # the home has no slot left: the rest look at the whole cell
        while placed < jobs:
            candidates = pool[left[pool] > 0]
            if len(candidates) == 0:
                break
            passes += 1
            draws = candidates[rng.integers(len(candidates), size=(jobs - placed,))]
            accepted = draws[_rank_in_draw_order(draws) < left[draws]]
            out[placed:placed + len(accepted)] = accepted
            placed += len(accepted)
            np.subtract.at(left, accepted, 1)
    counts = np.bincount(out[out >= 0], minlength=n)
    after = free - counts[:, None] * req[None, :]
    if (after < 0).any():  # slots are exact: this is the invariant the module keeps
        raise InternalInvariantError("a batched decision would overcommit a machine")
    used = {int(i): tuple(int(v) for v in columns.host_capacity[i] - after[i]) for i in np.flatnonzero(counts)}
    unplaceable: tuple[Unplaceable, ...] = ()
    if placed < jobs:
        none = np.zeros(n, dtype=bool)
        unplaceable = (explain(columns, after, group, 0, range(placed, jobs), none, none),)
    return Assignment((out,), unplaceable, used, seed, passes, widened)


def _rank_in_draw_order(draws: np.ndarray) -> np.ndarray:
    """For each draw, how many earlier draws picked the same machine."""
    order = np.argsort(draws, kind="stable")
    ordered = draws[order]
    start = np.r_[True, ordered[1:] != ordered[:-1]] if len(ordered) else np.zeros(0, dtype=bool)
    first = np.maximum.accumulate(np.where(start, np.arange(len(ordered)), 0))
    rank = np.empty(len(draws), dtype=np.int64)
    rank[order] = np.arange(len(ordered)) - first
    return rank
