"""What the tracer's own calls cost per API submission, without the API (docs/benchmarks.md,
"The cost of seeing, API half"):

    python -m loadtests.bench_tracer_calls [--requests 20000] [--batch 45] [--rounds 2]

`CELLSCHED_TRACE_FILE` tracing (schedulers/tracing.py `from_env`: the batch span processor and
its thread, the JSON-lines exporter) in this process. Per simulated request the calls the API's
middleware makes (api/observe.py: the request span, attach, traceparent, detach, end); per
`--batch` requests the spans a hosted scheduler makes of one batch attempt (the batch span
linked to each job's traceparent, its sync, score and commit txn children). Process CPU
(`time.process_time`, every thread) from the first request to the flush, modes alternated:
`request` (request spans only), `batch` (batch spans only, per linked job), `both`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

from cellsched.schedulers import tracing

BASE = {"cellsched.scheduler": "batch-0", "cellsched.job_class": "batch", "cellsched.conflict_mode": "incremental"}
MODES = ("request", "batch", "both")
FLUSH_EVERY = 1000


def _request(chosen: tracing.Tracing) -> str | None:
    span = chosen.start_server_span("POST", None, {"http.request.method": "POST", "url.path": "/v1/jobs",
                                                   "url.scheme": "http"})
    token = tracing.attach(span)
    traceparent = tracing.traceparent_of(span)
    tracing.detach(token)
    tracing.end_server_span(span, "POST /v1/jobs", {"http.route": "/v1/jobs", "http.response.status_code": 201})
    return traceparent


def _batch(chosen: tracing.Tracing, traceparents: list[str | None]) -> None:
    """The spans of schedulers/decision_trace.py for one batch attempt that places every job."""
    t0 = time.time_ns()
    links, linked = [], []
    for i, tp in enumerate(traceparents):
        link = tracing.link_to(tp)
        if link is not None:
            links.append(link)
            linked.append(f"job-{i:08d}")
    n = len(traceparents)
    span = chosen.start_span("schedule.batch", t0, links=links,
                             attributes={**BASE, "cellsched.jobs": n, "cellsched.linked_jobs": linked})
    chosen.start_span("schedule.sync", t0, span, attributes=BASE).end()
    score = chosen.start_span("schedule.score", parent=span, attributes={
        **BASE, "cellsched.kernel": "k8s", "cellsched.backend": "numpy", "cellsched.machines_scored": 500})
    token = tracing.attach(score)
    tracing.detach(token)
    score.set_attributes({"cellsched.jobs_decided": n, "cellsched.jobs_crashed": 0, "cellsched.tasks_decided": n,
                          "cellsched.claims": n})
    score.end()
    txn = chosen.start_span("schedule.commit_txn", parent=span, attributes={
        **BASE, "cellsched.claims": n, "cellsched.jobs": n, "cellsched.machines": n})
    token = tracing.attach(txn)
    txn.set_attribute("cellsched.txn.succeeded", True)
    tracing.detach(token)
    txn.end()
    span.set_attributes({"cellsched.committed_claims": n, "cellsched.conflicted_claims": 0,
                         "cellsched.jobs_placed": n, "cellsched.jobs_parked": 0, "cellsched.jobs_retrying": 0,
                         "cellsched.txns": 1, "cellsched.lease_lost": False})
    span.end()


def run(chosen: tracing.Tracing, mode: str, requests: int, batch: int) -> float:
    """CPU microseconds per request (per linked job in `batch` mode)."""
    pending: list[str | None] = []
    cpu0 = time.process_time()
    for i in range(requests):
        pending.append(_request(chosen) if mode != "batch" else f"00-{i + 1:032x}-{i + 1:016x}-01")
        if len(pending) == batch:
            if mode != "request":
                _batch(chosen, pending)
            pending = []
        if i % FLUSH_EVERY == FLUSH_EVERY - 1:  # keep the queue (2,048) from filling: no span dropped
            chosen.flush()
    chosen.flush()
    return (time.process_time() - cpu0) / requests * 1e6


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--batch", type=int, default=45, help="jobs per batch attempt (about a 50 ms poll's)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="cellsched-tracer-calls-") as d:
        env = {"OTEL_TRACES_EXPORTER": "none", tracing.TRACE_FILE_VAR: os.path.join(d, "trace.jsonl")}
        chosen = tracing.from_env(env, service="cellsched-api")
        try:
            run(chosen, "both", 2000, args.batch)  # warm up
            out: dict[str, list[float]] = {m: [] for m in MODES}
            for _ in range(args.rounds):
                for mode in MODES:
                    out[mode].append(round(run(chosen, mode, args.requests, args.batch), 1))
        finally:
            chosen.shutdown()
    for mode, values in out.items():
        print(f"{mode:8} CPU us per {'linked job' if mode == 'batch' else 'request'}: {values}")
    if args.json:
        print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
