"""The workloads: the Kubernetes scheduler_perf case (from ../shared/data, or built-in
copies), the machines and single-group jobs of a run, the gate, and the check afterwards."""

from __future__ import annotations

import csv
import time
from dataclasses import dataclass
from pathlib import Path

from cellsched.cellstate import codec
from cellsched.cellstate.errors import CellError, InvalidInputError
from cellsched.cellstate.invariants import check_store
from cellsched.cellstate.keys import CellKeys
from cellsched.cellstate.model import Job, JobClass, JobStatus, Machine, TaskGroup
from cellsched.cellstate.store import CellStore, Put
from cellsched.cellstate.submission import submit_jobs
from cellsched.loadtests.traces.sample import shared_data_dir


class BenchmarkError(CellError):
    """A benchmark run that could not produce its measurement (refused setup, a timeout)."""


K8S_CASE = ("SchedulingBasic", "5000Nodes_10000Pods")
K8S_TARGET_PODS_PER_S = 2500  # this project's goal for the case
POD = (100, 500, 0)  # scheduler_perf's pod-default: 100m CPU, 500 MiB
NODE = (4000, 32768, 0)  # node-default: 4 CPU, 32 GiB



@dataclass(frozen=True)
class K8sCase:
    name: str
    nodes: int
    init_pods: int
    measure_pods: int
    threshold_pods_per_s: float  # upstream CI's minimum average throughput
    node_capacity: tuple[int, int, int]  # milli-CPU, MiB, GPUs
    pod_request: tuple[int, int, int]
    source: str  # where the numbers came from, printed beside them

    def scaled(self, factor: float) -> K8sCase:
        return K8sCase(f"{self.name} (sizes x{factor:g})", max(1, int(self.nodes * factor)),
                       max(1, int(self.init_pods * factor)), max(1, int(self.measure_pods * factor)),
                       self.threshold_pods_per_s, self.node_capacity, self.pod_request, self.source)


# Only when ../shared/data is missing: the same values, copied from cases.csv and templates.csv.
K8S_FALLBACK = K8sCase("SchedulingBasic/5000Nodes_10000Pods", 5000, 1000, 10000, 680.0, NODE, POD,
                       "built-in constants (../shared/data/k8s_scheduler_perf not found)")


def _milli_cpu(text: str) -> int:
    text = text.strip()
    return int(text[:-1]) if text.endswith("m") else int(float(text) * 1000)


def _mib(text: str) -> int:
    text = text.strip()
    for suffix, mult in (("Gi", 1024), ("Mi", 1)):
        if text.endswith(suffix):
            return int(float(text[: -len(suffix)]) * mult)
    raise InvalidInputError(f"memory quantity {text!r}: expected Mi or Gi")


def _node_capacity(other: str) -> tuple[int, int, int]:
    """'status.capacity: pods=110 cpu=4 memory=32Gi; ...' -> (4000, 32768, 0)."""
    fields = dict(tok.split("=", 1) for tok in other.replace(";", " ").split() if "=" in tok)
    return _milli_cpu(fields["cpu"]), _mib(fields["memory"]), 0


def load_k8s_case(data_dir: Path | None = None) -> K8sCase:
    """SchedulingBasic/5000Nodes_10000Pods from cases.csv and templates.csv, or the fallback."""
    folder = (data_dir or shared_data_dir()) / "k8s_scheduler_perf"
    cases, templates = folder / "cases.csv", folder / "templates.csv"
    if not (cases.is_file() and templates.is_file()):
        return K8S_FALLBACK
    with open(cases, newline="") as f:
        row = next(r for r in csv.DictReader(f) if (r["test_case"], r["workload"]) == K8S_CASE)
    with open(templates, newline="") as f:
        tpl = {r["template"]: r for r in csv.DictReader(f)}
    node, pod = tpl[row["node_template"]], tpl[row["measure_pod_template"]]
    return K8sCase(
        f"{row['test_case']}/{row['workload']}", int(row["init_nodes"]), int(row["init_pods"]),
        int(row["measure_pods"]), float(row["threshold_pods_per_s"]), _node_capacity(node["other"]),
        (_milli_cpu(pod["cpu_request"]), _mib(pod["memory_request"]), 0),
        f"{folder / 'cases.csv'} (kubernetes commit {row['source_commit'][:12]})")


def make_machines(n: int, capacity: tuple[int, int, int]) -> list[Machine]:
    return [Machine(f"n{i:05d}", capacity) for i in range(n)]


def make_jobs(prefix: str, n: int, tasks: int, request: tuple[int, int, int], traced: bool = False) -> list[Job]:
    """`traced`: each job carries a W3C traceparent, as a traced API stores it (Job.traceparent),
    so a traced scheduler links its batch span to every job (the tracing case, tracing_case.py)."""
    return [Job(f"{prefix}{i:06d}", (TaskGroup("pod", tasks, request),), JobClass.BATCH,
                traceparent=f"00-{i + 1:032x}-{i + 1:016x}-01" if traced else None) for i in range(n)]


def submit_all(store: CellStore, keys: CellKeys, jobs: list[Job], gated: bool = False) -> None:
    out = submit_jobs(store, keys, jobs, now=time.time(), held_by=GATE_CLAIM if gated else "")
    if len(out.accepted) != len(jobs):
        raise BenchmarkError(f"submission refused {len(out.rejected)} jobs: {list(out.rejected.items())[:3]}")


GATE_CLAIM = "bench-gate"


def hold(store: CellStore, keys: CellKeys, jobs: list[Job], lease: int) -> None:
    """The gate: a claim (cellstate/claims.py) bound to `lease`, written before the jobs exist;
    submit_all(..., gated=True) names it as every entry's holder, so no scheduler takes a job
    until the lease goes."""
    value = codec.encode_obj({"owner": "bench-gate", "jobs": [j.id for j in jobs]})
    store.txn([], [Put(keys.claim(GATE_CLAIM), value, lease)])


def verify(store: CellStore, keys: CellKeys, job_ids: list[str], expected_tasks: int) -> dict:
    rep = check_store(store, keys, job_ids)
    kvs, _ = store.get_prefix(keys.jobs_prefix)
    placed = sum(codec.decode_job(kv.key, kv.value).status is JobStatus.PLACED for kv in kvs)
    return {"check_store_ok": rep.ok, "bound_tasks": rep.bound_tasks, "jobs_placed_in_store": placed,
            "verified": rep.ok and rep.bound_tasks == expected_tasks and placed == len(job_ids),
            "violations": rep.violations[:5]}
