"""Parallel schedulers that do not collide (issue 9, item 1): homes (gpu/home.py).

Each of N schedulers draws its picks from its own disjoint share of the cell first, and
from the whole cell when its share has no feasible machine. Measured here on seeded
decisions, no wall clock: how often two schedulers' picks overlap, against two uniform
pickers; and that a job that fits only outside a scheduler's home places at once.
"""

from __future__ import annotations

import numpy as np
import pytest

from cellsched import gpu
from cellsched.cellstate.clock import SimClock
from cellsched.cellstate.errors import InvalidInputError
from cellsched.cellstate.invariants import check_store
from cellsched.cellstate.keys import CellKeys
from cellsched.cellstate.machines import add_machines
from cellsched.cellstate.model import JobRecord, JobStatus, Machine
from cellsched.cellstate.store.memory import MemoryStore
from cellsched.cellstate.submission import submit_jobs
from cellsched.cellstate.views import read_job_view
from cellsched.schedulers.core import Scheduler
from cellsched.schedulers.decide import decide_job, decision_seed
from cellsched.schedulers.settings import BATCH, SERVICE
from tests.cellfactory import make_job, submit_each

DECISIONS = 1000


def busy_cell(n: int = 400, seed: int = 3) -> gpu.MachineColumns:
    """n machines of 4 CPU / 32 GiB, a random part of each already in use."""
    rng = np.random.default_rng(seed)
    cap = np.tile(np.array([[4000, 32768, 0]], dtype=np.int64), (n, 1))
    used = np.zeros_like(cap)
    used[:, 0] = rng.integers(0, 40, n) * 100
    used[:, 1] = used[:, 0] * 8
    return gpu.MachineColumns([f"n{i:05d}" for i in range(n)], cap, used, xp=np)


def overlap_rate(columns: gpu.MachineColumns, policies: tuple[gpu.Policy, gpu.Policy]) -> float:
    """How often the machines two schedulers (seeds 1 and 2) pick for one 10-task job each,
    decided on the same copy of the cell, share a machine; over DECISIONS seeded decisions."""
    group = [gpu.GroupSpec((100, 500, 0), 10)]
    hits = 0
    for d in range(DECISIONS):
        picked = []
        for base, policy in zip((1, 2), policies, strict=True):
            a = gpu.assign_job(columns, group, policy, decision_seed(base, f"j{d}", 1))
            assert a.placed == 10
            picked.append(set(a.machines[0].tolist()))
        hits += bool(picked[0] & picked[1])
    return hits / DECISIONS


@pytest.mark.parametrize("policy", [gpu.RANDOM_FIRST_FIT, gpu.SPREAD], ids=lambda p: p.name)
def test_two_schedulers_overlap_at_most_a_quarter_as_often_as_uniform_picks(policy):
    columns = busy_cell()
    uniform = overlap_rate(columns, (policy, policy))
    homes = overlap_rate(columns, (policy.at_home(0, 2), policy.at_home(1, 2)))
    assert uniform > 0.05  # the baseline collides, so the bound below says something
    assert homes <= 0.25 * uniform, (homes, uniform)


def test_homes_split_the_cell_by_machine_id_whatever_the_row_order():
    ids = [f"n{i:05d}" for i in range(1000)]
    cap = np.tile(np.array([[4000, 32768, 0]], dtype=np.int64), (1000, 1))
    a = gpu.MachineColumns(ids, cap, xp=np)
    b = gpu.MachineColumns(ids[::-1], cap, xp=np)
    masks = [a.home(gpu.Home(i, 4))[0] for i in range(4)]
    assert (np.sum(masks, axis=0) == 1).all()  # disjoint, and together the whole cell
    assert all(150 < m.sum() < 350 for m in masks)  # roughly a quarter each
    for i in range(4):  # the same machines, listed in another order
        assert {ids[r] for r in np.flatnonzero(masks[i])} == {b.machine_ids[r] for r in b.home(gpu.Home(i, 4))[1]}


@pytest.mark.parametrize("policy", [gpu.RANDOM_FIRST_FIT, gpu.SPREAD], ids=lambda p: p.name)
def test_a_group_that_fits_only_outside_its_home_is_placed_in_the_same_call(policy):
    n = 64
    ids = [f"n{i:05d}" for i in range(n)]
    outside = ~gpu.MachineColumns(ids, np.zeros((n, 3), dtype=np.int64), xp=np).home(gpu.Home(0, 2))[0]
    cap = np.where(outside[:, None], [[8000, 32768, 0]], [[1000, 32768, 0]]).astype(np.int64)
    columns = gpu.MachineColumns(ids, cap, xp=np)
    a = gpu.assign_job(columns, [gpu.GroupSpec((4000, 1000, 0), 3)], policy.at_home(0, 2), ("big", 1))
    assert a.placed == 3 and a.widened == 1
    assert all(outside[m] for m in a.machines[0].tolist())
    # Where the home has room, nothing leaves it.
    a = gpu.assign_job(columns, [gpu.GroupSpec((500, 100, 0), 3)], policy.at_home(0, 2), ("small", 1))
    assert a.placed == 3 and a.widened == 0 and not any(outside[m] for m in a.machines[0].tolist())


def test_a_whole_cell_policy_decides_exactly_as_before_homes_existed():
    """count == 1 takes the same draws as the plain policy: seeded replays stay valid."""
    columns = busy_cell(200)
    group = [gpu.GroupSpec((100, 500, 0), 10)]
    for policy in (gpu.RANDOM_FIRST_FIT, gpu.SPREAD):
        for d in range(50):
            plain = gpu.assign_job(columns, group, policy, ("j", d))
            whole = gpu.assign_job(columns, group, policy.at_home(0, 1), ("j", d))
            assert plain.machines[0].tolist() == whole.machines[0].tolist()


def test_scheduler_places_a_job_that_fits_only_outside_its_home_on_its_first_attempt():
    clock = SimClock()
    store = MemoryStore(clock=clock)
    keys = CellKeys("h")
    ids = [f"m{i:03d}" for i in range(40)]
    in_home = gpu.MachineColumns(ids, np.zeros((40, 3), dtype=np.int64), xp=np).home(gpu.Home(0, 2))[0]
    # Only machines outside home 0 of 2 can hold a 3-CPU task.
    add_machines(store, keys, [Machine(m, (2000 if home else 8000, 16384, 0)) for m, home in zip(ids, in_home, strict=True)])
    submit_jobs(store, keys, [make_job("big", 2, cpu=3000)], now=0.0)
    s = Scheduler("b0", store, keys, BATCH.with_(home=0, homes=2), clock)
    # The queue share is a home's too: a job of the other share is claimed once it sat a step
    # unclaimed (cellstate.claims.claim_jobs, patience), so at most the second step claims it.
    assert s.step() or s.step()
    rec = read_job_view(store, keys, "big").record
    assert rec.status is JobStatus.PLACED
    assert all(not in_home[ids.index(m)] for m in rec.bound.values())
    m = s.metrics()
    assert m["attempts_per_job_max"] == 1 and m["jobs_parked"] == 0
    assert check_store(store, keys, ["big"]).ok
    s.close()


def test_two_schedulers_with_homes_commit_without_conflicts():
    """Two schedulers deciding batches of the same shape at once, on one store: with homes
    their commits touch disjoint machines, so no txn fails its compares."""
    def run(homes: int) -> tuple[int, int]:
        clock = SimClock()
        store = MemoryStore(clock=clock)
        keys = CellKeys("c")
        add_machines(store, keys, [Machine(f"m{i:03d}", (4000, 32768, 0)) for i in range(200)])
        # One job per submission: entries of their own, so each claim of 10 takes 10 (a queue segment
        # of the 40 would go whole to one of the two).
        submit_each(store, keys, [make_job(f"j{i:03d}", 10, cpu=100, mem=500) for i in range(40)])
        settings = [BATCH.with_(claim_batch=10, seed=k + 1, home=k if homes > 1 else 0, homes=homes)
                    for k in range(2)]
        scheds = [Scheduler(f"s{k}", store, keys, st, clock) for k, st in enumerate(settings)]
        for _ in range(4):  # both decide on the same revision, then both commit
            attempts = [s.prepare() for s in scheds]
            for s, a in zip(scheds, attempts, strict=True):
                if a is not None:
                    s.complete(a)
        failed = sum(s.metrics()["failed_txns"] for s in scheds)
        placed = sum(s.metrics()["tasks_placed"] for s in scheds)
        assert check_store(store, keys, [f"j{i:03d}" for i in range(40)]).ok
        for s in scheds:
            s.close()
        return failed, placed

    failed_uniform, _ = run(1)
    failed_homes, placed_homes = run(2)
    assert failed_uniform > 0  # without homes, concurrent commits collide
    assert failed_homes == 0 and placed_homes == 400


def test_bad_homes_are_refused_with_a_clear_error():
    with pytest.raises(InvalidInputError, match="home 2 of homes 2"):
        SERVICE.with_(home=2, homes=2)
    with pytest.raises(InvalidInputError, match="home count"):
        gpu.Home(0, 0)


def test_decide_job_uses_the_settings_home():
    """The scheduler's policy carries its home down to the kernels (decide_job's signature is unchanged)."""
    policy = BATCH.with_(home=1, homes=2).policy
    assert policy.home == gpu.Home(1, 2)
    columns = busy_cell(100)
    index = {m: i for i, m in enumerate(columns.machine_ids)}
    rec = JobRecord(make_job("x", 5, cpu=100, mem=500))
    d = decide_job(columns, index, rec, policy, 7)
    home = columns.home(gpu.Home(1, 2))[0]
    assert len(d.claims) == 5 and all(home[index[c.machine_id]] for c in d.claims)
