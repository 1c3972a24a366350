"""Smoke run of loadtests/bench_schedulers at tiny sizes: it prints tables, its last line is
the JSON report, every run placed its tasks and left a consistent store. No timing asserts.

Real etcd members are used when the server is installed (the k8s case on 3 members, the
scaling case on 1); without it the script falls back to the memory store by itself.
"""

from __future__ import annotations

import json
import subprocess
import sys

from tests._shared_data import REPO_ROOT

RUN_KEYS = {"runner", "schedulers", "tasks", "completed", "measured_s", "tasks_per_s", "conflict_fraction",
            "failed_txn_fraction", "keys_written_per_pod", "check_store_ok", "bound_tasks", "verified"}


def run_quick() -> tuple[str, dict]:
    proc = subprocess.run([sys.executable, "-m", "cellsched.loadtests.bench_schedulers", "--quick", "--json"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    return "\n".join(lines[:-1]), json.loads(lines[-1])


def test_bench_schedulers_quick_prints_tables_and_json_with_every_run_verified():
    tables, report = run_quick()
    assert "k8s_basic_pods_per_s" in tables and "tasks/s" in tables

    k8s = report["k8s"]
    assert report["k8s_basic_pods_per_s"] == k8s["k8s_basic_pods_per_s"] > 0
    assert report["k8s_upstream_min_pods_per_s"] == k8s["upstream_min_pods_per_s"] == 680
    (run,) = k8s["runs"]
    assert RUN_KEYS <= run.keys()
    assert run["completed"] and run["verified"] and run["check_store_ok"], run["violations"]
    assert run["bound_tasks"] == k8s["init_pods"] + k8s["measure_pods"]
    assert run["tasks"] == k8s["measure_pods"]
    # claim put, queue-entry put (the claim count that parks a job crashing its schedulers),
    # claim delete, queue delete, job put, and an allocation put shared by the pods on one machine.
    assert 5.0 <= run["keys_written_per_pod"] <= 6.0

    rows = report["scaling"]["rows"]
    assert {r["conflict_mode"] for r in rows} == {"resource_fit", "sequence"}
    assert {r["schedulers"] for r in rows} == {1, 2}
    for r in rows:
        assert RUN_KEYS <= r.keys()
        assert r["completed"] and r["verified"] and r["check_store_ok"], (r["backend"], r["violations"])
        assert r["tasks_per_s"] > 0 and r["errors"] == []
