"""The sync case (issue 9, Must show 4): a scheduler's local copy of a big cell.

A cell of N machines (default 100,000), 3 labels each, 10 tasks bound on each: the
allocation records are written directly (codec.encode_alloc, txns at the store's op limit),
a setup, not a scheduling run. Then, on the memory store hosted in its Ray actor
(schedulers.ray_actors.StoreHost, reached through RemoteStore, as `make demo` runs it) and on
a 3-member etcd:

- raw: one txn of Get(spec_prefix, prefix) + Get(alloc_prefix, prefix) through the same
  client, as schedulers/confirmed.py's resync reads it;
- sync: a schedulers.cache.SchedulerCache built on that client (snapshot, watch opened,
  columns built).

Each is timed `repeats` times, raw and sync interleaved, best of each kept. Retained memory
of the copy is measured in a separate pass under tracemalloc (which slows Python
several-fold): traced bytes still held after the cache is built, per machine.
"""

from __future__ import annotations

import gc
import sys
import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor

from cellsched.cellstate import codec
from cellsched.cellstate.keys import CellKeys
from cellsched.cellstate.machines import add_machines
from cellsched.cellstate.model import AllocationRecord, Machine
from cellsched.cellstate.resources import Vector
from cellsched.cellstate.schema import ensure_schema
from cellsched.cellstate.store import CellStore, Get, Put
from cellsched.schedulers.cache import SchedulerCache

from .backends import etcd_available, open_backend
from .runners import start_ray
from .workload import BenchmarkError

MACHINE: Vector = (64_000, 262_144, 0)
TASK: Vector = (500, 1_024, 0)
TASKS_PER_MACHINE = 10
WRITERS = 4  # client threads writing the cell (etcd: parallel txns keep the members busy)
CHUNK = 2_048  # machines per writer task
QUICK_MACHINES = 2_000  # --quick caps --sync-machines at this


def big_cell_machines(n: int) -> list[Machine]:
    return [Machine(f"m{i:06d}", MACHINE, {"zone": f"z{i % 8}", "rack": f"r{i % 400}", "arch": "x86_64"})
            for i in range(n)]


def _write_chunk(store: CellStore, keys: CellKeys, machines: list[Machine]) -> None:
    add_machines(store, keys, machines)
    used = (TASKS_PER_MACHINE * TASK[0], TASKS_PER_MACHINE * TASK[1], TASKS_PER_MACHINE * TASK[2])
    per_txn = store.limits.max_txn_ops
    for k in range(0, len(machines), per_txn):
        ops = []
        for m in machines[k:k + per_txn]:
            tasks: dict[str, Vector] = {f"j{m.id[1:]}-{t}/0/{t}": TASK for t in range(TASKS_PER_MACHINE)}
            ops.append(Put(keys.alloc(m.id), codec.encode_alloc(AllocationRecord(used, tasks))))
        store.txn([], ops)


def write_big_cell(connect, keys: CellKeys, n: int, label: str) -> float:
    """Machines and their allocation records, CHUNK machines per task over WRITERS clients."""
    machines = big_cell_machines(n)
    clients = [connect() for _ in range(WRITERS)]
    ensure_schema(clients[0], keys)
    t0 = time.perf_counter()
    chunks = [machines[k:k + CHUNK] for k in range(0, n, CHUNK)]
    with ThreadPoolExecutor(WRITERS) as pool:
        futures = [pool.submit(_write_chunk, clients[i % WRITERS], keys, c) for i, c in enumerate(chunks)]
        for i, f in enumerate(futures, 1):
            f.result()
            if i % 10 == 0 or i == len(futures):
                print(f"  sync {label}: wrote {min(i * CHUNK, n)} of {n} machines "
                      f"({time.perf_counter() - t0:.0f}s)", file=sys.stderr, flush=True)
    for c in clients[1:]:
        c.close()
    return time.perf_counter() - t0


def _raw_read(store: CellStore, keys: CellKeys) -> tuple[float, int]:
    t0 = time.perf_counter()
    result = store.txn([], [Get(keys.spec_prefix, prefix=True), Get(keys.alloc_prefix, prefix=True)])
    secs = time.perf_counter() - t0
    return secs, sum(len(r) for r in result.reads)


def _sync(store: CellStore, keys: CellKeys, n: int) -> float:
    t0 = time.perf_counter()
    cache = SchedulerCache(store, keys)
    secs = time.perf_counter() - t0
    if cache.size != n:
        raise BenchmarkError(f"the cache holds {cache.size} machines, the cell {n}")
    cache.close()
    return secs


def retained_bytes(store: CellStore, keys: CellKeys) -> int:
    """Traced bytes the built cache still holds (the raw reply is freed by then)."""
    gc.collect()
    tracemalloc.start()
    try:
        cache = SchedulerCache(store, keys)
        gc.collect()
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    cache.close()
    return held


def time_sync(store: CellStore, keys: CellKeys, n: int, repeats: int, label: str) -> dict:
    raws, syncs, keys_read = [], [], 0
    for rep in range(repeats):
        raw, keys_read = _raw_read(store, keys)
        gc.collect()
        raws.append(raw)
        syncs.append(_sync(store, keys, n))
        gc.collect()
        print(f"  sync {label} #{rep + 1}: raw {raw:.2f}s, sync {syncs[-1]:.2f}s", file=sys.stderr, flush=True)
    return {"backend": label, "machines": n, "keys_read": keys_read, "raw_s": [round(x, 3) for x in raws],
            "sync_s": [round(x, 3) for x in syncs], "best_raw_s": round(min(raws), 3),
            "best_sync_s": round(min(syncs), 3), "sync_over_raw": round(min(syncs) / min(raws), 3)}


def _memory_hosted(n: int, repeats: int) -> tuple[dict, int]:
    from cellsched.schedulers import ray_actors

    start_ray()
    host = ray_actors.host_store(name="bench-sync-store")
    try:
        keys = CellKeys("sync")
        store = ray_actors.RemoteStore(host)
        write_s = write_big_cell(lambda: ray_actors.RemoteStore(host), keys, n, "memory")
        row = time_sync(store, keys, n, repeats, "memory") | {"write_s": round(write_s, 1)}
        return row, retained_bytes(store, keys)
    finally:
        ray_actors.kill_actor(host, no_restart=True)


def sync_case(args) -> dict:
    n, repeats, etcd_name = args.sync_machines, 3, "etcd-3"
    if args.quick:
        # the smoke test's sizes; a 1-member etcd starts faster
        n, repeats, etcd_name = min(n, QUICK_MACHINES), 2, "etcd-1"
    out: dict = {"machines": n, "labels_per_machine": 3, "tasks_per_machine": TASKS_PER_MACHINE,
                 "repeats": repeats, "target_over_raw": 2.0, "target_retained_bytes_per_machine": 1536,
                 "rows": [], "skipped": []}
    mem_row, held = _memory_hosted(n, repeats)
    out["rows"].append(mem_row)
    out["sync_100k_memory_s"] = mem_row["best_sync_s"]
    out["sync_100k_memory_over_raw"] = mem_row["sync_over_raw"]
    out["sync_100k_retained_bytes_per_machine"] = round(held / n, 1)
    if not etcd_available():
        out["skipped"].append(f"{etcd_name}: etcd is not installed")
        return out
    with open_backend(etcd_name, args.clients) as backend:
        keys = CellKeys("sync")
        write_s = write_big_cell(backend.connect, keys, n, etcd_name)
        store = backend.connect()
        try:
            row = time_sync(store, keys, n, repeats, etcd_name) | {"write_s": round(write_s, 1)}
        finally:
            store.close()
    out["rows"].append(row)
    tag = etcd_name.replace("-", "")  # etcd3 in a full run
    out[f"sync_100k_{tag}_s"] = row["best_sync_s"]
    out[f"sync_100k_{tag}_over_raw"] = row["sync_over_raw"]
    return out
