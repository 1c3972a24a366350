"""Small builders for tests: machines, jobs and plans in base units."""

from __future__ import annotations

from cellsched.cellstate.keys import CellKeys
from cellsched.cellstate.machines import add_machines
from cellsched.cellstate.model import Job, JobClass, Machine, TaskGroup, TransactionMode
from cellsched.cellstate.submission import submit_jobs
from cellsched.cellstate.views import read_job_view, read_machine_views


def make_cell(store, n: int = 4, cpu: int = 4000, mem: int = 16384, gpu: int = 0, cell: str = "t") -> CellKeys:
    keys = CellKeys(cell)
    add_machines(store, keys, [Machine(f"m{i}", (cpu, mem, gpu)) for i in range(n)])
    return keys


def make_job(jid: str, count: int, cpu: int = 1000, mem: int = 1024, gang: bool = False,
             job_class: JobClass = JobClass.BATCH) -> Job:
    mode = TransactionMode.ALL_OR_NOTHING if gang else TransactionMode.INCREMENTAL
    return Job(jid, (TaskGroup("g", count, (cpu, mem, 0)),), job_class, 0, mode)


def submit(store, keys, *jobs: Job):
    submit_jobs(store, keys, list(jobs), now=0.0)
    return {j.id: read_job_view(store, keys, j.id) for j in jobs}


def submit_each(store, keys, jobs, now: float = 0.0) -> None:
    """Submit one job per txn, so each has a queue entry of its own (no queue segment:
    cellstate/queue_segments.py): for tests of what a claim does job by job."""
    for j in jobs:
        submit_jobs(store, keys, [j], now=now)


def fills_room(claimed: int, room: int, limits) -> bool:
    """Whether a claim of whole queue segments filled `room`: at most that, and short of it by
    less than one segment."""
    from cellsched.cellstate.queue_segments import segment_limit

    return room - segment_limit(limits) < claimed <= room


def views(store, keys, n: int):
    return read_machine_views(store, keys, [f"m{i}" for i in range(n)])


def run_loops_until(scheds, tasks: int, polls: int = 4000) -> None:
    """Run scheduler loops on threads until they placed `tasks` (or `polls` x 5 ms passed), then stop them."""
    import threading

    stop = threading.Event()
    threads = [threading.Thread(target=s.run, args=(stop,), daemon=True) for s in scheds]
    for t in threads:
        t.start()
    try:
        for _ in range(polls):
            if sum(s.raw_metrics.tasks_placed for s in scheds) >= tasks:
                break
            threading.Event().wait(0.005)
    finally:
        stop.set()
        for t in threads:
            t.join(10)
