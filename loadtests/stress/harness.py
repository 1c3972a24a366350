"""run_stress: seeded, randomized concurrency stress of the scheduler core.

Scheduler threads (batch/service/gpu, both conflict modes, some with commits in flight)
share one cell with a submitter and a chaos thread (releases, drains, machine losses,
the machine monitor). Every scheduler talks to the store through its own
FaultInjectingStore: unreachable before send, lost acks, delays between read and commit.
On the memory store the invariant checker runs after every committed write; on etcd on a
period and at the end. The result says what was committed, what conflicted, which faults
were injected, every distinct invariant violation and how many accepted jobs were lost.
"""

from __future__ import annotations

import functools
import random
import threading
import time
from collections import Counter
from collections.abc import Callable

from cellsched.cellstate.clock import RealClock
from cellsched.cellstate.commit import CommitEngine
from cellsched.cellstate.errors import InvalidInputError
from cellsched.cellstate.faults import FAULT_KINDS, FaultInjectingStore, FaultPlan
from cellsched.cellstate.keys import CellKeys
from cellsched.cellstate.machines import add_machines
from cellsched.schedulers.core import Scheduler
from cellsched.schedulers.cpu_baton import CpuBaton
from cellsched.schedulers.decide import DecideFn
from cellsched.schedulers.settings import ThinkTime
from cellsched.schedulers.shared_cache import cache_for_loops

from .audit import audited
from .chaos import Chaos
from .checking import InvariantRecorder, memoized_decoding
from .common import (
    RunState,
    jobs_lost,
    join_all,
    open_store,
    periodic_checker,
    record_error,
    scheduler_settings,
    submitter,
)
from .workload import JobMaker, build_fleet

# The thresholds a 60 s run must reach for the run to count as really contended.
MIN_CONFLICTS = 500
MIN_EACH_FAULT = 20

DEFAULT_THINK = ThinkTime(0.005, 0.0)  # a short think keeps decisions in flight while others commit
DEFAULT_FAULTS = FaultPlan(p_unavailable=0.02, p_lost_ack=0.02, p_delay=0.05, max_delay_s=0.03)

EngineClass = type[CommitEngine]  # constructed as Scheduler constructs its CommitEngine


def _scheduler_loop(run: RunState, sched: Scheduler) -> None:
    """Scheduler.run, restarted after an unexpected error (recorded: it is a finding)."""
    while not run.stop.is_set():
        try:
            sched.run(run.stop)
        except Exception as exc:
            record_error(run, sched.name, exc)
            run.stop.wait(0.05)


def run_stress(seed: int, schedulers: int, seconds: float, backend: str = "memory", *,
               faults: FaultPlan = DEFAULT_FAULTS, think: ThinkTime = DEFAULT_THINK,
               engine_cls: EngineClass | None = None, decide_fn: DecideFn | None = None,
               stop_when_met: bool = False, min_seconds: float = 0.0, cpu_machines: int = 28, gpu_machines: int = 8,
               big_live: int = 1, big_tasks: tuple[int, int] = (1_000, 2_000), check_every_s: float = 1.0,
               etcd_endpoints: str | None = None, etcd_members: int = 1, cell: str | None = None,
               progress: Callable[[dict], None] | None = None) -> dict:
    """Run the stress workload for `seconds` (or, with stop_when_met, until the contention
    thresholds are met, at least `min_seconds` and at most `seconds`) and return what happened.

    `engine_cls` replaces each scheduler's CommitEngine (same constructor), `decide_fn` its
    decision function: how a test shows that the harness catches a broken engine.
    """
    if schedulers < 1 or seconds <= 0:
        raise InvalidInputError("need at least one scheduler and a positive duration")
    rng = random.Random(seed)
    keys = CellKeys(cell or f"stress{seed}")
    be = open_store(backend, etcd_endpoints, etcd_members)
    connect, raw = be.connect, be.admin
    per_write = backend == "memory"
    recorder = InvariantRecorder(raw, keys)
    run = RunState(raw, keys, recorder, threading.Event(), [], [0])
    write_lock = threading.Lock()

    def wrap(source: str, plan: FaultPlan, k: int) -> FaultInjectingStore:
        return FaultInjectingStore(connect(), plan, seed=seed * 7919 + k,
                                   after_write=recorder.hook(source) if per_write else None,
                                   write_lock=write_lock,
                                   on_fault=functools.partial(recorder.fault, source))

    add_machines(raw, keys, build_fleet(rng, cpu_machines, gpu_machines))
    maker = JobMaker(random.Random(rng.getrandbits(64)), prefix=f"s{seed}", big_tasks=big_tasks)
    accepted: list[str] = []
    clock = RealClock()
    overcommit_paths: Counter = Counter()
    engine = audited(engine_cls or CommitEngine, overcommit_paths, threading.Lock())
    scheds: list[Scheduler] = []
    stores: list[FaultInjectingStore] = []
    # Odd seeds run the loops under one CPU baton, as `cellsched api` hosts them (schedulers/cpu_baton.py);
    # even seeds without, so both ways of stepping meet the faults and the checker.
    # The first half of those loops share one copy of the cell (schedulers/shared_cache.py), read through the
    # first loop's faults; the others keep their own, so the loops still decide on different copies and contend.
    baton = CpuBaton() if seed % 2 else None
    all_settings = [scheduler_settings(k, seed, think) for k in range(schedulers)]
    names = [f"{s.job_class.value[:3]}{k}-{s.conflict_mode.value[:3]}-if{s.txns_in_flight}"
             for k, s in enumerate(all_settings)]
    sched_stores = [wrap(name, faults, k) for k, name in enumerate(names)]
    sharing = schedulers // 2
    cache = cache_for_loops(sched_stores[0], keys, all_settings[:sharing], baton)
    for k, (name, settings, st) in enumerate(zip(names, all_settings, sched_stores, strict=True)):
        planner = engine(st, keys, settings.conflict_mode, clock, settings.txns_in_flight,
                         settings.max_tasks_per_machine)  # the (possibly injected) engine, audited
        sched = Scheduler(name, st, keys, settings, clock, decide_fn=decide_fn, planner=planner, baton=baton,
                          cache=cache if k < sharing else None)
        stores.append(st)
        scheds.append(sched)
    submit_store = wrap("submitter", FaultPlan(), schedulers)
    chaos_store = wrap("chaos", FaultPlan(), schedulers + 1)
    chaos = Chaos(chaos_store, keys, recorder, seed=rng.getrandbits(64))
    threads = [threading.Thread(target=_scheduler_loop, args=(run, s), name=s.name, daemon=True) for s in scheds]
    threads.append(threading.Thread(target=submitter, name="submitter", daemon=True,
                                    args=(run, submit_store, maker, random.Random(rng.getrandbits(64)),
                                          big_live, accepted)))
    threads.append(threading.Thread(target=chaos.run, args=(run.stop,), name="chaos", daemon=True))
    if not per_write:
        threads.append(threading.Thread(target=periodic_checker, args=(run, check_every_s), daemon=True))
    with memoized_decoding():
        started = time.monotonic()
        try:
            for t in threads:
                t.start()
            while not run.stop.wait(1.0):
                snap = _totals(scheds, stores)
                if progress is not None:
                    progress({"elapsed_s": time.monotonic() - started, **snap})
                ran = time.monotonic() - started
                if ran >= seconds or (stop_when_met and ran >= min_seconds and _met(snap)["met"]):
                    run.stop.set()
            join_all(run, threads)
            elapsed = time.monotonic() - started
            for s in scheds:
                s.close()
            if cache is not None:
                cache.close()
            final = recorder.final_check()
            out = _result(seed, backend, scheds, stores, recorder, chaos, run, accepted, elapsed, final)
            out["overcommit_paths"] = dict(overcommit_paths.most_common())
        finally:
            run.stop.set()
            for st in [*stores, submit_store, chaos_store]:
                if st.inner is not raw:
                    st.close()
            be.close()
    return out


def _totals(scheds: list[Scheduler], stores: list[FaultInjectingStore]) -> dict:
    ms = [s.raw_metrics for s in scheds]
    faults = dict.fromkeys(FAULT_KINDS, 0)
    for st in stores:
        for kind, n in st.faults.items():
            faults[kind] += n
    faults["total"] = sum(faults[k] for k in FAULT_KINDS)
    return {"commits": sum(m.successful_txns for m in ms), "conflicts": sum(m.conflicted_claims for m in ms),
            "conflicted_txns": sum(m.commits.conflicted_txns for m in ms),
            "tasks_placed": sum(m.tasks_placed for m in ms), "faults_injected": faults}


def _met(snap: dict) -> dict:
    faults = snap["faults_injected"]
    got = {"conflicts": snap["conflicts"] >= MIN_CONFLICTS,
           **{f"fault_{k}": faults[k] >= MIN_EACH_FAULT for k in FAULT_KINDS}}
    return {**got, "met": all(got.values()), "min_conflicts": MIN_CONFLICTS, "min_each_fault": MIN_EACH_FAULT}


def _result(seed, backend, scheds, stores, recorder, chaos, run, accepted, elapsed, final) -> dict:
    snap = _totals(scheds, stores)
    lost, lost_ids = jobs_lost(final, recorder.expected, run.store, run.keys)
    summary = recorder.summary()
    metrics = [s.metrics() for s in scheds]
    return {
        "seed": seed, "backend": backend, "schedulers": len(scheds), "seconds": round(elapsed, 1),
        **snap,
        "violations": summary["violations"], "violation_count": summary["violation_count"],
        "violation_onsets": summary["violation_onsets"],
        "violation_kinds": summary["violation_kinds"], "violations_first_seen": summary["violations_first_seen"],
        "checks": summary["checks"], "violating_checks": summary["violating_checks"],
        "check_outages": summary["check_outages"],
        "jobs": len(accepted), "jobs_lost": lost, "jobs_lost_examples": lost_ids,
        "jobs_placed": sum(m["jobs_placed"] for m in metrics),
        "final_bound_tasks": final.bound_tasks if final is not None else None,
        "unknown_outcomes": sum(m["unknown_outcomes"] for m in metrics),
        "recommitted_claims": sum(m["recommitted_claims"] for m in metrics),
        "store_errors": sum(m["store_errors"] for m in metrics),
        "write_txns": sum(st.write_txns for st in stores),
        "chaos": chaos.stats.summary(),
        "harness_errors": run.error_count[0], "harness_error_messages": run.errors,
        "submitter_outages": run.outages,
        "thresholds": _met(snap),
        "per_scheduler": [{k: m[k] for k in ("scheduler", "job_class", "txns", "failed_txns", "committed_claims",
                                             "conflicted_claims", "recommitted_claims", "unknown_outcomes",
                                             "store_errors", "jobs_placed", "jobs_parked", "lease_losses")}
                          for m in metrics],
    }
