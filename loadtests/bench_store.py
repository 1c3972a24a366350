"""Store and commit-engine throughput, with the store's own ceiling measured in the same run.

    python -m loadtests.bench_store --backend memory
    python -m loadtests.bench_store --backend etcd --members 3 --json

Columns:
  raw_txn_per_s            one put per txn, `--threads` concurrent callers
  raw_batched_keys_per_s   100 puts per txn with 100 mod_revision compares: the ceiling
  placements_per_s_batched jobs of 100 tasks spread over 50 machines of a 5,000-machine
                           cell, committed through the CommitEngine
  placements_per_s_single  single-task jobs, one commit each
  keys_written_per_placement  puts + deletes per placement in the batched phase
  ratio_batched_to_ceiling engine keys/s in the batched phase / raw_batched_keys_per_s
Job submission happens before the timed phases, as Kubernetes' scheduler_perf does.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import threading
import time
from contextlib import contextmanager

from cellsched.cellstate.commit import CommitEngine, Plan
from cellsched.cellstate.keys import CellKeys
from cellsched.cellstate.machines import add_machines
from cellsched.cellstate.model import Claim, Job, Machine, TaskGroup, task_id
from cellsched.cellstate.store import DEFAULT_MAX_TXN_OPS, ModRevisionIs, Put, StoreLimits
from cellsched.cellstate.store.memory import MemoryStore
from cellsched.cellstate.submission import submit_jobs
from cellsched.cellstate.views import read_job_view, read_machine_views

TASK = (100, 256, 0)


@contextmanager
def open_backend(backend: str, members: int):
    if backend == "memory":
        yield (lambda: _shared), None
        return
    from cellsched.cellstate.store.etcd import EtcdStore
    from cellsched.loadtests.etcd_process import start_etcd_cluster

    cluster = start_etcd_cluster(members)
    try:
        yield (lambda: EtcdStore(cluster.endpoints)), cluster
    finally:
        cluster.stop()


_shared = MemoryStore(StoreLimits())


def run_threads(n: int, fn) -> float:
    threads = [threading.Thread(target=fn, args=(k,)) for k in range(n)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - t0


def bench_raw(connect, threads: int, seconds: float) -> tuple[float, float]:
    """Raw one-put txns/s and raw keys/s in 100-put txns with 100 compares."""
    counts = [0] * threads

    def one_put(k):
        s = connect()
        end = time.perf_counter() + seconds
        i = 0
        while time.perf_counter() < end:
            s.txn([], [Put(f"/raw/{k}/{i % 1000}", b"x" * 64)])
            i += 1
        counts[k] = i

    wall = run_threads(threads, one_put)
    raw_txn = sum(counts) / wall

    def batched(k):
        s = connect()
        revs: dict[str, int] = {}
        end = time.perf_counter() + seconds
        n = 0
        while time.perf_counter() < end:
            keys = [f"/rawb/{k}/{(n + j) % 2000}" for j in range(100)]
            result = s.txn([ModRevisionIs(key, revs.get(key, 0)) for key in keys],
                           [Put(key, b"x" * 64) for key in keys])
            for key in keys:
                revs[key] = result.revision
            n += 100
        counts[k] = n

    wall = run_threads(threads, batched)
    return raw_txn, sum(counts) / wall


def bench_engine(connect, keys: CellKeys, machines: list[str], jobs: list[Job], spread: int,
                 threads: int) -> tuple[float, float, int]:
    """Commit every job through the engine; returns (placements/s, keys/s, keys written)."""
    written = [0] * threads
    placed = [0] * threads

    def worker(k):
        s = connect()
        rng = random.Random(k)
        engine = CommitEngine(s, keys)
        mine = jobs[k::threads]
        # Just submitted, so every job has a record.
        views = {j.id: v for j in mine if (v := read_job_view(s, keys, j.id)) is not None}
        mviews = read_machine_views(s, keys, machines[k::threads])  # warm private copy
        barrier.wait()
        for job in mine:
            n = job.task_count
            picks = rng.sample(machines, min(spread, n))
            claims = [Claim(task_id(job.id, 0, i), picks[i % len(picks)], TASK, job.id) for i in range(n)]
            need = [m for m in set(picks) if m not in mviews]
            if need:
                mviews.update(read_machine_views(s, keys, need))
            out = engine.commit(Plan(claims, {m: mviews[m] for m in set(picks)},
                                     {job.id: views[job.id]}))
            mviews.update(out.machines)
            placed[k] += len(out.committed)
            # puts: one per machine + one job record; deletes: queue entry + claim when placed
            written[k] += out.stats.txns and (len(set(picks)) + 1 + 2)

    barrier = threading.Barrier(threads + 1)
    threads_ = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
    for t in threads_:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads_:
        t.join()
    wall = time.perf_counter() - t0
    return sum(placed) / wall, sum(written) / wall, sum(written)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backend", choices=["memory", "etcd"], default="memory")
    ap.add_argument("--members", type=int, default=1, choices=[1, 3])
    ap.add_argument("--machines", type=int, default=5000)
    ap.add_argument("--jobs", type=int, default=300, help="100-task jobs in the batched phase")
    ap.add_argument("--single-jobs", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=4, help="concurrent callers in the raw phases")
    ap.add_argument("--engine-threads", type=int, default=1,
                    help="concurrent committers; each keeps its own private copy, so more of them conflict")
    ap.add_argument("--seconds", type=float, default=3.0, help="duration of each raw phase")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if args.machines < 50:
        ap.error("--machines must be >= 50 (each job spreads over 50 machines)")

    with open_backend(args.backend, args.members) as (connect, _cluster):
        raw_txn, raw_keys = bench_raw(connect, args.threads, args.seconds)
        admin = connect()
        keys = CellKeys("bench")
        machines = [f"n{i:05d}" for i in range(args.machines)]
        add_machines(admin, keys, [Machine(m, (64_000, 262_144, 0)) for m in machines])
        batched = [Job(f"b{i}", (TaskGroup("g", 100, TASK),)) for i in range(args.jobs)]
        single = [Job(f"s{i}", (TaskGroup("g", 1, TASK),)) for i in range(args.single_jobs)]
        t0 = time.perf_counter()
        submit_jobs(admin, keys, batched + single, now=0.0)
        submit_s = time.perf_counter() - t0
        pb, kb, written = bench_engine(connect, keys, machines, batched, spread=50, threads=args.engine_threads)
        ps, _, _ = bench_engine(connect, keys, machines, single, spread=1, threads=args.engine_threads)

    result = {
        "backend": args.backend if args.backend == "memory" else f"etcd-{args.members}",
        "machines": args.machines,
        "threads": args.threads,
        "engine_threads": args.engine_threads,
        "raw_txn_per_s": round(raw_txn, 1),
        "raw_batched_keys_per_s": round(raw_keys, 1),
        "placements_per_s_batched": round(pb, 1),
        "placements_per_s_single": round(ps, 1),
        "keys_written_per_placement": round(written / (args.jobs * 100), 3),
        "ratio_batched_to_ceiling": round(kb / raw_keys, 3),
        "submit_jobs_per_s": round((args.jobs + args.single_jobs) / submit_s, 1),
        "max_txn_ops": DEFAULT_MAX_TXN_OPS,
    }
    width = max(len(k) for k in result)
    print(f"{'metric':{width}}  value")
    for k, v in result.items():
        print(f"{k:{width}}  {v}")
    if args.json:
        print(json.dumps(result))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
