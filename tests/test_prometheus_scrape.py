"""A real Prometheus (Debian's `prometheus`, installed by `make system-deps`) scraping a real
`cellsched api` process on real etcd, with a batch and a service scheduler on that cell: what
PromQL answers through Prometheus' HTTP API agrees with the store (cellstate.invariants.
check_store's used, the queue's keys) and with the schedulers' own counts; a scheduler whose
lease lapsed (its loop gone, nothing revoked) and one stopped cleanly are reported up 0; every
query of deploy/grafana/cellsched.json, and of its variables, returns data.

Prometheus reads deploy/prometheus/prometheus.yml with its target and intervals replaced (1 s
scrapes), keeps its TSDB in tmp_path and is stopped by its PID. Waits poll with bounds; nothing
asserts a wall-clock time."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from cellsched.cellstate.clock import RealClock
from cellsched.cellstate.invariants import check_store
from cellsched.cellstate.keys import CellKeys
from cellsched.cellstate.model import JobClass, JobStatus
from cellsched.cellstate.resources import RESOURCE_NAMES
from cellsched.cellstate.views import read_job_view
from cellsched.loadtests.etcd_process import free_ports
from cellsched.schedulers.core import Scheduler
from cellsched.schedulers.metrics_publish import read_published
from cellsched.schedulers.settings import BATCH, SERVICE
from tests.apiserver import job_body, machines_body, start_api, stop_process, wait_for

ROOT = Path(__file__).resolve().parent.parent
SCRAPE_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "cellsched.json"
JOB = "cellsched"
# Short leases, so a lapsed one is gone within seconds; publish often, so scrapes see each change.
QUICK = {"lease_ttl_s": 2, "lease_stall_s": 2.0, "metrics_publish_s": 0.2, "idle_poll_s": 0.05,
         "parked_retry_s": 600.0}


@pytest.fixture
def prometheus_binary() -> str:
    """Asked for before etcd_member, so a missing binary skips before etcd starts."""
    path = shutil.which("prometheus")
    if path is None:
        msg = "prometheus not installed (make system-deps installs Debian's prometheus)"
        if os.environ.get("CI") == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    return path


@dataclass
class Prometheus:
    proc: subprocess.Popen
    base: str
    log: Path

    def output(self) -> str:
        return self.log.read_text() if self.log.exists() else ""

    def query(self, expr: str) -> list[dict]:
        r = httpx.get(self.base + "/api/v1/query", params={"query": expr}, timeout=10)
        body = r.json()
        assert r.status_code == 200 and body["status"] == "success", (expr, body)
        assert body["data"]["resultType"] == "vector", (expr, body)
        return body["data"]["result"]

    def values(self, expr: str, label: str) -> dict[str, float]:
        return {s["metric"].get(label, ""): float(s["value"][1]) for s in self.query(expr)}

    def one(self, expr: str) -> float | None:
        got = self.query(expr)
        assert len(got) <= 1, (expr, got)
        return float(got[0]["value"][1]) if got else None

    def stop(self) -> None:
        stop_process(self.proc)


def start_prometheus(binary: str, tmp: Path, targets: list[str]) -> Prometheus:
    """deploy/prometheus/prometheus.yml, its cellsched job pointed at `targets`, scraping every second."""
    config = yaml.safe_load(SCRAPE_CONFIG.read_text())
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == JOB]
    assert job["metrics_path"] == "/metrics"
    job.update(scrape_interval="1s", scrape_timeout="1s", static_configs=[{"targets": targets}])
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    cfg = tmp / "prometheus.yml"
    cfg.write_text(yaml.safe_dump(config))
    port = free_ports(1)[0]
    log = tmp / "prometheus.log"
    cmd = [binary, f"--config.file={cfg}", f"--storage.tsdb.path={tmp / 'tsdb'}",
           f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"]
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=tmp)
    prom = Prometheus(proc, f"http://127.0.0.1:{port}", log)

    def ready() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"prometheus exited with {proc.returncode}:\n{prom.output()}")
        try:
            return httpx.get(prom.base + "/-/ready", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(ready, "prometheus to be ready", timeout=30)
    except BaseException:
        prom.stop()
        raise
    return prom


class Loop:
    """A scheduler loop on a thread of the test process, as `cellsched api --schedulers on` runs them."""

    def __init__(self, sched: Scheduler):
        self.sched = sched
        self.stop = threading.Event()
        self.thread = threading.Thread(target=sched.run, args=(self.stop,), name=sched.name, daemon=True)
        self.thread.start()
        self.closed = False

    def close(self) -> None:
        """Stop the loop, then revoke its lease (Scheduler.close), once."""
        self.stop.set()
        self.thread.join(timeout=30)
        if not self.closed:
            self.closed = True
            self.sched.close()

    def halt(self) -> None:
        """The loop ends without closing anything: its lease is left to lapse, as a crash leaves it."""
        self.stop.set()
        self.thread.join(timeout=30)
        assert not self.thread.is_alive()


def queued_keys(store, keys: CellKeys) -> dict[str, int]:
    """The jobs the queue's keys list, per class (a queue segment lists several)."""
    from cellsched.cellstate.claims import list_queue

    return {c.value: len(list_queue(store, keys, c)) for c in JobClass}


def dashboard_exprs(rate_interval: str) -> list[tuple[str, str]]:
    """(panel title, PromQL) for every target of every panel, Grafana's variables substituted as
    Grafana would for the defaults: $job the cell's job, All (.*) for the multi-value ones."""
    subst = {"job": JOB, "scheduler": ".*", "class": ".*", "__rate_interval": rate_interval}
    dash = json.loads(DASHBOARD.read_text())
    assert 38 <= dash["schemaVersion"] <= 40
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"

    def sub(expr: str) -> str:
        def one(m: re.Match) -> str:
            name = m.group(1) or m.group(2)
            assert name in subst, f"unknown dashboard variable ${name} in {expr}"
            return subst[name]
        return re.sub(r"\$\{(\w+)\}|\$(\w+)", one, expr)

    out = []
    panels = [p for p in dash["panels"] if p["type"] != "row"]
    panels += [q for p in dash["panels"] if p["type"] == "row" for q in p.get("panels", [])]
    for p in panels:
        assert p["datasource"]["uid"] == "${datasource}", p["title"]
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert t["datasource"]["uid"] == "${datasource}", p["title"]
            out.append((p["title"], sub(t["expr"])))
    for name, v in variables.items():  # label_values(metric, label): Prometheus' label values API
        if v["type"] == "query":
            m = re.fullmatch(r"label_values\((.+), (\w+)\)", v["query"]["query"])
            assert m and m.group(2) == name, v
            out.append((f"${name}", f"label_values:{sub(m.group(1))}:{name}"))
    return out


def panel_data(prom: Prometheus, expr: str) -> list[float]:
    if expr.startswith("label_values:"):
        _, match, label = expr.split(":", 2)
        r = httpx.get(f"{prom.base}/api/v1/label/{label}/values", params={"match[]": match}, timeout=10)
        assert r.status_code == 200, r.text
        return [0.0 for _ in r.json()["data"]]
    return [float(s["value"][1]) for s in prom.query(expr)]


@pytest.mark.etcd
def test_prometheus_scrapes_the_api_and_the_dashboard_has_data(prometheus_binary, etcd_member, tmp_path):
    from cellsched.cellstate.store.etcd import EtcdStore

    store = EtcdStore(etcd_member.endpoints)
    keys = CellKeys("t")
    api = start_api(tmp_path, etcd_member.endpoints, "--schedulers", "off")
    prom = None
    loops: list[Loop] = []
    try:
        batch = Loop(Scheduler("t-batch-0", store, keys, BATCH.with_(**QUICK), RealClock()))
        loops.append(batch)
        service = Loop(Scheduler("t-service-0", store, keys, SERVICE.with_(**QUICK), RealClock()))
        loops.append(service)
        started = time.time()
        prom = start_prometheus(prometheus_binary, tmp_path, [api.base.removeprefix("http://")])
        # Both schedulers seen up, with their counters at 0, before any work: rates then see every increase.
        wait_for(lambda: prom.one(f'count(cellsched_scheduler_up{{job="{JOB}"}} == 1)') == 2,
                 "both schedulers scraped up", timeout=30)

        with api.client() as op:
            assert op.post("/v1/machines", json=machines_body("m1", "m2", cpu="4", memory="16Gi")).status_code == 201
            batch_jobs = [job_body(f"b{i}", count=2, cpu="500m", memory="1Gi") for i in range(4)]
            service_jobs = [job_body(f"s{i}", count=1, cpu="1", memory="2Gi", **{"class": "service"})
                            for i in range(2)]
            # no gpu scheduler runs: these stay queued
            gpu_jobs = [job_body(f"g{i}", count=1, cpu="100m", memory="1Gi", **{"class": "gpu"}) for i in range(3)]
            created = op.post("/v1/jobs/bulk", json={"jobs": batch_jobs + service_jobs + gpu_jobs})
            assert created.status_code == 200 and created.json()["created"] == 9, created.text
            assert op.post("/v1/jobs", json=job_body("big", count=1, cpu="64")).status_code == 201  # never fits
            assert op.get("/v1/jobs/nope").status_code == 404

        want = {**{f"b{i}": JobStatus.PLACED for i in range(4)}, **{f"s{i}": JobStatus.PLACED for i in range(2)},
                **{f"g{i}": JobStatus.PENDING for i in range(3)}, "big": JobStatus.PARKED}

        def settled() -> bool:
            if any(read_job_view(store, keys, j).record.status != s for j, s in want.items()):
                return False
            published = read_published(store, keys)
            return all(loop.sched.name in published
                       and published[loop.sched.name]["commits"] == loop.sched.raw_metrics.successful_txns
                       and published[loop.sched.name]["tasks_placed"] == loop.sched.raw_metrics.tasks_placed
                       for loop in loops)

        wait_for(settled, "the workload placed, parked and queued, and its counts published", timeout=30)
        at = time.time()
        # Scrapes that started after the cell settled (Prometheus' own `up` carries each scrape's
        # time): three, so that rates over the run see the scrape route's own increase too.
        scrapes: set[float] = set()

        def scraped_since() -> bool:
            t = prom.one(f'timestamp(up{{job="{JOB}"}})') or 0.0
            if t > at:
                scrapes.add(t)
            return len(scrapes) >= 3

        wait_for(scraped_since, "three scrapes after the workload settled", timeout=30)

        counts = {loop.sched.name: loop.sched.raw_metrics for loop in loops}
        before = {n: (m.successful_txns, m.conflicted_claims, m.tasks_placed) for n, m in counts.items()}
        rep = check_store(store, keys)
        assert rep.ok, rep.violations
        used = prom.values(f'cellsched_cell_used{{job="{JOB}"}}', "resource")
        assert used == {name: float(n) for name, n in zip(RESOURCE_NAMES, rep.used, strict=True)}
        assert used["cpu"] == 4 * 2 * 500 + 2 * 1000
        queued = queued_keys(store, keys)
        assert prom.values(f'cellsched_queue_length{{job="{JOB}"}}', "class") == {c: float(n) for c, n in queued.items()}
        assert queued["gpu"] == 3
        commits = prom.values(f'cellsched_commits_total{{job="{JOB}"}}', "scheduler")
        conflicts = prom.values(f'cellsched_conflicts_total{{job="{JOB}"}}', "scheduler")
        placed = prom.values(f'cellsched_tasks_placed_total{{job="{JOB}"}}', "scheduler")
        for name, (n_commits, n_conflicts, n_placed) in before.items():
            assert commits[name] == n_commits >= 1, name
            assert conflicts[name] == n_conflicts, name
            assert placed[name] == n_placed, name
        assert placed == {"t-batch-0": 8.0, "t-service-0": 2.0}
        assert prom.values(f'cellsched_job_wait_seconds_count{{job="{JOB}"}}', "class") == {"batch": 4.0,
                                                                                           "service": 2.0}
        # a scrape counts the scrapes before it
        requests = prom.values(f'sum by (route) (cellsched_api_request_seconds_count{{job="{JOB}"}})', "route")
        assert requests["/v1/jobs/bulk"] == 1 and requests["/v1/jobs/{job_id}"] == 1 and requests["/metrics"] >= 1
        # the counts did not move while we compared
        assert before == {n: (m.successful_txns, m.conflicted_claims, m.tasks_placed) for n, m in counts.items()}

        # Every panel's every query, over a window that covers the whole run, has data; each has a number.
        window = f"{math.ceil(time.time() - started) + 5}s"
        empty, no_number = [], []
        for title, expr in dashboard_exprs(window):
            got = panel_data(prom, expr)
            if not got:
                empty.append((title, expr))
            elif not any(math.isfinite(v) for v in got):
                no_number.append((title, expr, got))
        assert not empty, empty
        assert not no_number, no_number

        # The service scheduler's loop dies without revoking anything: its lease lapses (2 s TTL
        # once its refresher sees the loop stalled), its metrics key goes with it, and the API
        # that saw it reports it down. The batch scheduler stays up.
        service.halt()
        held = service.sched.lease.lease_id
        assert held
        wait_for(lambda: prom.one(f'cellsched_scheduler_up{{job="{JOB}", scheduler="t-service-0"}}') == 0,
                 "the lapsed scheduler scraped down", timeout=30)
        assert "t-service-0" not in read_published(store, keys)
        assert service.sched.lease.lease_id == held  # expired, not revoked
        assert prom.one(f'cellsched_scheduler_up{{job="{JOB}", scheduler="t-batch-0"}}') == 1
        assert prom.one(f'cellsched_scheduler_busyness{{job="{JOB}", scheduler="t-service-0"}}') is None  # stale

        # The batch scheduler stops cleanly: the lease is revoked at once, and it is reported down too.
        batch.close()
        wait_for(lambda: prom.one(f'cellsched_scheduler_up{{job="{JOB}", scheduler="t-batch-0"}}') == 0,
                 "the stopped scheduler scraped down", timeout=30)
        assert prom.one(f'up{{job="{JOB}"}}') == 1
    finally:
        for loop in loops:
            loop.close()
        if prom is not None:
            prom.stop()
        api.stop()
        store.close()
    assert "Traceback" not in api.output(), api.output()
    assert prom.proc.returncode is not None
