"""`make demo`: the main job on embedded defaults.

The embedded memory store hosted by a named Ray actor, a local Ray instance, the REST API
(api/, served on a thread here; every job goes in through POST /v1/jobs/bulk) and four
scheduler actors (2 batch, 1 service, 1 gpu) replay the attributed Google 2011 sample
shipped in loadtests/ (plus synthetic GPU gangs on GPU-labelled machines) on a machine
set sized so the cell is really loaded. Prints progress, then a per-scheduler summary.
"""

from __future__ import annotations

import os
import tempfile
import time

from cellsched.api_server import DEFAULT_TOKEN_FILE, _first_try_tokens
from cellsched.cellstate import codec
from cellsched.cellstate.invariants import check_store
from cellsched.cellstate.keys import CellKeys
from cellsched.cellstate.machines import add_machines
from cellsched.cellstate.model import JobStatus
from cellsched.cellstate.store import Get
from cellsched.demo_api import ApiThread, HttpSubmitter
from cellsched.loadtests.replay import ReplayDriver, ReplayProgress, google_workload
from cellsched.loadtests.traces.sample import sample_trace_dir
from cellsched.schedulers import ray_actors
from cellsched.schedulers.settings import BATCH, GPU, SERVICE

FLEET = (("batch-0", BATCH), ("batch-1", BATCH), ("service-0", SERVICE), ("gpu-0", GPU))


def _ray_env() -> None:
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_TMPDIR", tempfile.mkdtemp(prefix="cellsched-ray-"))


def print_progress(p: ReplayProgress) -> None:
    util = p.cpu_used / p.cpu_capacity if p.cpu_capacity else 0.0
    print(f"  t={p.elapsed_s:5.1f}s  submitted {p.submitted:5d}  placed {p.placed_jobs:5d}  parked "
          f"{p.parked_jobs:4d}  running tasks {p.bound_tasks:6d}  finished {p.finished_tasks:6d}  "
          f"CPU {util:6.1%}", flush=True)


def fmt(v, spec=".2f") -> str:
    return "-" if v is None else format(v, spec)


def summary_table(statuses: list[dict]) -> str:
    head = (f"{'scheduler':12} {'tasks placed':>12} {'jobs placed':>11} {'wait p50 s':>10} {'wait p99 s':>10} "
            f"{'busyness':>8} {'conflict frac':>13} {'txns':>6}")
    rows = [head, "-" * len(head)]
    for st in statuses:
        m = st["metrics"]
        rows.append(f"{st['name']:12} {m['tasks_placed']:12d} {m['jobs_placed']:11d} "
                    f"{fmt(m['wait_placed_p50_s']):>10} {fmt(m['wait_placed_p99_s']):>10} "
                    f"{m['busyness']:8.1%} {m['conflict_fraction']:13.3f} {m['txns']:6d}")
    return "\n".join(rows)


def run(horizon_s: float = 40.0, seed: int = 1, ray_address: str | None = None) -> int:
    t0 = time.time()
    workload = google_workload(sample_trace_dir(), horizon_s=horizon_s, seed=seed)
    print(f"workload: {workload.description}; peak offered CPU {workload.peak_offered_cpu:.0%} of the trace machines")
    _ray_env()
    ray_actors.init_ray(ray_address)
    host = ray_actors.host_store()
    store = ray_actors.RemoteStore(host)
    keys = CellKeys("demo")
    add_machines(store, keys, workload.machines)
    spec = ray_actors.StoreSpec()
    actors = [ray_actors.start_scheduler(name, spec, keys.cell, settings.with_(lease_ttl_s=5, idle_poll_s=0.1))
              for name, settings in FLEET]
    keeper = ray_actors.start_housekeeper(spec, keys.cell, retention_s=10.0, every_s=5.0, keep_revisions=1000)
    ray_actors.get([a.status.remote() for a in actors])
    api, submitter = start_api(store, keys)
    print(f"started {len(actors)} scheduler actors in {time.time() - t0:.1f}s; the REST API is on {api.base} "
          f"(operator token in {DEFAULT_TOKEN_FILE}); while it runs, try:\n"
          f"  .venv/bin/cellsched jobs --api {api.base}    "
          f".venv/bin/cellsched machines --api {api.base}    .venv/bin/cellsched explain ID --api {api.base}\n"
          f"replaying: every job goes in through POST /v1/jobs/bulk", flush=True)
    driver = ReplayDriver(store, keys, workload, submit=submitter)
    try:
        driver.run(until_s=horizon_s + 30, on_progress=print_progress)
    finally:
        submitter.close()
        api.stop()
    print_progress(driver.progress)
    print(f"API: {submitter.requests} bulk requests, {len(driver.accepted)} jobs accepted, "
          f"{len(driver.rejected)} refused")
    statuses = ray_actors.get([a.stop.remote() for a in actors])
    kept = ray_actors.get(keeper.stop.remote())
    # Jobs the housekeeper purged after their retention are accounted for, not lost.
    report = check_store(store, keys, set(workload_ids(workload)) - set(kept["recently_purged"]))
    print()
    print(summary_table(statuses))
    total = sum(s["metrics"]["tasks_placed"] for s in statuses)
    print(f"\nhousekeeper: {kept['purged']} finished jobs purged after 10 s retention, "
          f"{kept['compactions']} compactions")
    print(f"{total} tasks placed; invariant check: "
          f"{'ok' if report.ok else f'{len(report.violations)} VIOLATIONS'}; total {time.time() - t0:.0f}s")
    for v in report.violations[:10]:
        print("  ", v)
    for jid, reason in parked_reasons(store, keys)[:5]:
        print(f"still parked: {jid}: {reason}")
    errors = [s for s in statuses if s["error"]]
    for s in errors:
        print(f"scheduler {s['name']} failed: {s['error']}")
    ray_actors.shutdown()
    return 0 if report.ok and not errors else 1


def start_api(store, keys):
    """The REST API on the demo's store, with one audit chain; the demo submits through it."""
    from cellsched.api import ApiContext, create_app
    from cellsched.cellstate.audit import AuditLog

    tokens = _first_try_tokens(DEFAULT_TOKEN_FILE)
    ctx = ApiContext(store, keys, tokens, audit=AuditLog.open(store, keys, 1))
    api = ApiThread(create_app(ctx))
    api.start()
    return api, HttpSubmitter(api.base, DEFAULT_TOKEN_FILE.read_text().strip())


def parked_reasons(store, keys) -> list[tuple[str, str]]:
    out = []
    for kv in store.txn([], [Get(keys.jobs_prefix, prefix=True)]).reads[0]:
        rec = codec.decode_job(kv.key, kv.value)
        if rec.status is JobStatus.PARKED:
            out.append((rec.job.id, rec.reason))
    return out


def workload_ids(workload) -> list[str]:
    return [j.id for j in workload.jobs]
