"""`cellsched demo`: replay a Google 2011 slice through the commit engine on the embedded store.

Loads the machines alive at the first task event (the real trace when ../shared/data is
there, else the attributed sample shipped in loadtests/), submits the trace's jobs, and
places them with Omega's randomised first fit (the schedulers' own decision pipeline,
without Ray) on a scheduler cache, committing through the CommitEngine under RESOURCE_FIT.
Ends with the invariant check and a summary.
"""

from __future__ import annotations

import time

from cellsched import gpu
from cellsched.cellstate.commit import CommitEngine, Plan
from cellsched.cellstate.errors import InternalInvariantError
from cellsched.cellstate.invariants import check_store
from cellsched.cellstate.keys import CellKeys
from cellsched.cellstate.machines import add_machines
from cellsched.cellstate.model import Job
from cellsched.cellstate.store.memory import MemoryStore
from cellsched.cellstate.submission import submit_jobs
from cellsched.cellstate.views import read_job_view
from cellsched.loadtests.traces.google2011 import (
    first_task_event_time,
    group_jobs,
    live_machines_at,
    read_task_attempts,
)
from cellsched.loadtests.traces.sample import default_trace_dir, shared_trace_dir
from cellsched.loadtests.traces.to_model import trace_job, trace_machine
from cellsched.schedulers.cache import SchedulerCache
from cellsched.schedulers.decide import decide_job, decision_seed


def run_demo(max_jobs: int = 3000, seed: int = 1) -> int:
    t0 = time.perf_counter()
    trace_dir = default_trace_dir()
    source = "Google 2011 (../shared/data)" if trace_dir == shared_trace_dir() else "shipped Google 2011 sample"
    machines = [trace_machine(m) for m in live_machines_at(trace_dir, first_task_event_time(trace_dir))]
    jobs: list[Job] = []
    for tj in group_jobs(read_task_attempts(trace_dir)):
        job = trace_job(tj)
        if job is not None:
            jobs.append(job)
        if len(jobs) >= max_jobs:
            break
    load_s = time.perf_counter() - t0
    print(f"trace: {source}: {len(machines)} machines, {len(jobs)} jobs, "
          f"{sum(j.task_count for j in jobs)} tasks (loaded in {load_s:.1f}s)")

    store = MemoryStore()
    keys = CellKeys("demo")
    add_machines(store, keys, machines)
    submit_jobs(store, keys, jobs, now=0.0)
    cache = SchedulerCache(store, keys)
    engine = CommitEngine(store, keys)
    placed = conflicts = txns = 0
    t1 = time.perf_counter()
    for k, job in enumerate(jobs):
        cache.sync()
        view = read_job_view(store, keys, job.id)
        if view is None:  # submitted above, and nothing here deletes jobs
            raise InternalInvariantError(f"job {job.id} vanished after its submission")
        claims = decide_job(cache.columns, cache.index, view.record, gpu.RANDOM_FIRST_FIT,
                            decision_seed(seed, job.id, 0)).claims
        if claims:
            cache.assume(claims)
            out = engine.commit(Plan(claims, cache.views({c.machine_id for c in claims}), {job.id: view}))
            cache.confirm(out.machines)
            cache.forget(claims)  # what the commit did not confirm
            placed += len(out.committed)
            conflicts += len(out.conflicted)
            txns += out.stats.txns
        if (k + 1) % 500 == 0:
            print(f"  {k + 1}/{len(jobs)} jobs, {placed} tasks placed")
    commit_s = time.perf_counter() - t1
    report = check_store(store, keys, [j.id for j in jobs])
    n = cache.size
    util = cache.used[:n, 0].sum() / cache.capacity[:n, 0].sum()
    print()
    print(f"{'tasks placed':28} {placed}")
    print(f"{'commits (txns)':28} {txns}")
    print(f"{'conflicted claims':28} {conflicts}")
    print(f"{'placements/s (commit phase)':28} {placed / commit_s:,.0f}")
    print(f"{'cell CPU utilisation':28} {util:.1%}")
    print(f"{'invariant check':28} {'ok' if report.ok else f'{len(report.violations)} VIOLATIONS'}")
    for v in report.violations[:10]:
        print("   ", v)
    return 0 if report.ok else 1
