"""What every stress variant shares: the scheduler roster, the run's shared state, the
submitter, the checkers, the store backends and the lost-jobs count."""

from __future__ import annotations

import random
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from cellsched.cellstate import codec
from cellsched.cellstate.claims import list_queue
from cellsched.cellstate.errors import InvalidInputError, StoreUnavailableError
from cellsched.cellstate.keys import CellKeys
from cellsched.cellstate.model import ConflictMode, JobClass, JobStatus
from cellsched.cellstate.store import CellStore, StoreLimits
from cellsched.cellstate.store.memory import MemoryStore
from cellsched.cellstate.submission import submit_jobs
from cellsched.schedulers.settings import PRESETS, SchedulerSettings, ThinkTime

from .checking import InvariantRecorder
from .workload import JobMaker

# (class, conflict mode, txns in flight, claim batch), cycled over the schedulers. Batch
# schedulers claim up to 128 jobs: such a plan needs several txns (chunks) sharing machines.
ROSTER = (
    (JobClass.BATCH, ConflictMode.RESOURCE_FIT, 1, 128),
    (JobClass.BATCH, ConflictMode.SEQUENCE, 3, 64),
    (JobClass.SERVICE, ConflictMode.RESOURCE_FIT, 2, 16),
    (JobClass.GPU, ConflictMode.SEQUENCE, 1, 16),
    (JobClass.BATCH, ConflictMode.RESOURCE_FIT, 4, 128),
    (JobClass.SERVICE, ConflictMode.SEQUENCE, 1, 16),
    (JobClass.GPU, ConflictMode.RESOURCE_FIT, 2, 16),
    (JobClass.BATCH, ConflictMode.SEQUENCE, 1, 32),
)
BACKLOG = {JobClass.BATCH: 80, JobClass.SERVICE: 8, JobClass.GPU: 6}  # queued jobs kept per class

@dataclass
class RunState:
    store: CellStore  # the raw store (the checker reads it directly)
    keys: CellKeys
    recorder: InvariantRecorder
    stop: threading.Event
    errors: list[str]
    error_count: list[int]
    outages: int = 0  # submissions cut short by an unreachable store


def scheduler_settings(k: int, seed: int, think: ThinkTime) -> SchedulerSettings:
    job_class, cmode, in_flight, claim_batch = ROSTER[k % len(ROSTER)]
    return PRESETS[job_class].with_(conflict_mode=cmode, txns_in_flight=in_flight, claim_batch=claim_batch,
                                    idle_poll_s=0.02, parked_retry_s=1.0, seed=seed * 1000 + k + 1, think_time=think,
                                    array_backend="numpy")


def record_error(run: RunState, where: str, exc: BaseException) -> None:
    run.error_count[0] += 1
    if len(run.errors) < 10:
        run.errors.append(f"{where}: {exc!r}")


def join_all(run: RunState, threads: list[threading.Thread], timeout_s: float = 60.0) -> None:
    """Join every thread within one shared deadline; one still running is a finding (a hang)."""
    deadline = time.monotonic() + timeout_s
    for t in threads:
        t.join(timeout=max(0.0, deadline - time.monotonic()))
    for t in threads:
        if t.is_alive():
            record_error(run, t.name, TimeoutError(f"still running {timeout_s:.0f} s after the stop"))


def submitter(run: RunState, store: CellStore, maker: JobMaker, rng: random.Random, big_live: int,
               accepted: list[str]) -> None:
    big: list[str] = []
    while not run.stop.wait(rng.uniform(0.05, 0.2)):
        try:
            jobs = []
            for cls, target in BACKLOG.items():
                # Parked jobs wait in their own index: count them too, or the backlog only grows.
                waiting = len(list_queue(store, run.keys, cls)) + len(store.get_prefix(run.keys.parked_prefix(cls))[0])
                short = target - waiting
                jobs += [maker.for_class(cls) for _ in range(max(0, short))]
            live = []
            for jid in big:
                kv = store.get(run.keys.job(jid))
                if kv is not None and codec.decode_job(kv.key, kv.value).status not in (
                        JobStatus.FINISHED, JobStatus.FAILED):
                    live.append(jid)
            big = live
            if len(big) < big_live:
                job = maker.big()
                jobs.append(job)
                big.append(job.id)
            if jobs:
                result = submit_jobs(store, run.keys, jobs, now=time.time())
                run.recorder.accept(result.accepted)
                accepted += result.accepted
        except StoreUnavailableError:  # e.g. an etcd leader change: an outage, not a finding
            run.outages += 1
        except Exception as exc:
            record_error(run, "submitter", exc)


def periodic_checker(run: RunState, every_s: float) -> None:
    while not run.stop.wait(every_s):
        run.recorder.check("periodic")


@dataclass
class Backend:
    connect: Callable[[], CellStore]  # a store for one component
    admin: CellStore  # the run's own client: setup, checks
    close: Callable[[], None]
    etcd_endpoints: str | None = None


def open_store(backend: str, etcd_endpoints: str | None, members: int) -> Backend:
    """Memory: one shared in-process store. Etcd: a fresh cluster (unless endpoints are
    given) and one client per component, as in a deployment."""
    if backend == "memory":
        shared = MemoryStore(StoreLimits())
        return Backend(lambda: shared, shared, shared.close)
    if backend != "etcd":
        raise InvalidInputError(f"backend must be 'memory' or 'etcd', got {backend!r}")
    from cellsched.cellstate.store.etcd import EtcdStore
    from cellsched.loadtests.etcd_process import start_etcd_cluster

    cluster = None
    if etcd_endpoints is None:
        cluster = start_etcd_cluster(members)
        etcd_endpoints = cluster.endpoints
    admin = EtcdStore(etcd_endpoints)

    def cleanup():
        admin.close()
        if cluster is not None:
            cluster.stop()
    return Backend(lambda: EtcdStore(etcd_endpoints), admin, cleanup, etcd_endpoints)


_LOST = re.compile(r"^job (\S+) is \w+ but not in the [\w ]+: it would be lost")


def jobs_lost(report, expected: set[str], store: CellStore, keys: CellKeys) -> tuple[int, list[str]]:
    """Accepted jobs missing from the store, or in no valid state: those check_store reports
    as pending/parked without their queue or parked-index entry ("it would be lost")."""
    if report is None:
        return len(expected), sorted(expected)[:5]
    kvs, _ = store.get_prefix(keys.jobs_prefix)
    present = {keys.last_segment(kv.key) for kv in kvs}
    stranded = {m.group(1) for v in report.violations if (m := _LOST.match(v))}
    lost = sorted((expected - present) | (stranded & expected))
    return len(lost), lost[:5]
