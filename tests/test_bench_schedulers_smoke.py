"""Smoke run of loadtests/bench_schedulers at tiny sizes: it prints tables, its last line is
the JSON report, every run placed its tasks and left a consistent store. No timing asserts.

Real etcd members are used when the server is installed (the k8s case on 3 members, the
scaling case on 1); without it the script falls back to the memory store by itself. The
backlog, sync and whole-cell cases run at tiny sizes too (the whole cell on the shipped
trace sample); their figures must be present and sane.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests._shared_data import REPO_ROOT

RUN_KEYS = {"runner", "schedulers", "tasks", "completed", "measured_s", "tasks_per_s", "conflict_fraction",
            "failed_txn_fraction", "keys_written_per_pod", "check_store_ok", "bound_tasks", "verified"}


@pytest.fixture(scope="module")
def quick() -> tuple[str, dict]:
    """One quick run of every case, shared by the tests below."""
    proc = subprocess.run([sys.executable, "-m", "cellsched.loadtests.bench_schedulers", "--quick", "--json"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    return "\n".join(lines[:-1]), json.loads(lines[-1])


def test_bench_schedulers_quick_prints_tables_and_json_with_every_run_verified(quick):
    tables, report = quick
    assert "k8s_basic_pods_per_s" in tables and "tasks/s" in tables

    k8s = report["k8s"]
    assert report["k8s_basic_pods_per_s"] == k8s["k8s_basic_pods_per_s"] > 0
    assert report["k8s_upstream_min_pods_per_s"] == k8s["upstream_min_pods_per_s"] == 680
    (run,) = k8s["runs"]
    assert RUN_KEYS <= run.keys()
    assert run["completed"] and run["verified"] and run["check_store_ok"], run["violations"]
    assert run["bound_tasks"] == k8s["init_pods"] + k8s["measure_pods"]
    assert run["tasks"] == k8s["measure_pods"]
    # a job put and an allocation put shared by the pods on one machine (pods on one machine share
    # a txn); per queue segment (one submission txn's jobs, up to 126) a claim rewrite and a
    # delete, and per claim txn a claim key put and delete (was a queue entry put at claim and
    # its delete per pod: 3.0 to 4.2 here; before that a claim put and delete per pod too: 5.9)
    assert 1.0 < run["keys_written_per_pod"] <= 2.0
    by_kind = run["keys_written_per_pod_by_kind"]
    assert by_kind["claim_put"] <= 0.1 and by_kind["claim_delete"] <= 0.1, by_kind
    assert by_kind["queue_put"] <= 0.1 and by_kind.get("queue_delete", 0) <= 0.1, by_kind
    # issue 9's figures at the top level (the Ray ones only with --runner ray or both)
    assert report["k8s_keys_written_per_pod"] == run["keys_written_per_pod"]
    assert report["k8s_bytes_written_per_pod"] == run["bytes_written_per_pod"]
    assert 150 < run["bytes_written_per_pod"] < 5_000  # a job record, an allocation share, queue entry rewrites
    assert "k8s_ray_pods_per_s" not in report and "k8s_keys_written_per_pod =" in tables

    rows = report["scaling"]["rows"]
    assert {r["conflict_mode"] for r in rows} == {"resource_fit", "sequence"}
    assert {r["schedulers"] for r in rows} == {1, 2}
    for r in rows:
        assert RUN_KEYS <= r.keys()
        assert r["completed"] and r["verified"] and r["check_store_ok"], (r["backend"], r["violations"])
        assert r["tasks_per_s"] > 0 and r["errors"] == []
    full = report["scaling"]["scaling_90_rows"]
    assert {r["schedulers"] for r in full} == {1, 2} and all(r["verified"] and r["check_store_ok"] for r in full)
    # The 90% load: 200 pods of 100m on 6 machines of 4 CPU (36 pods each at 90%): 83% CPU.
    assert 0.8 <= report["scaling"]["scaling_90_cpu_fill"] <= 0.9
    assert report["scaling"]["scaling_90_jobs_parked"] == sum(r["jobs_parked"] for r in full)
    assert report["scaling"]["scaling_90_min_ratio"] is not None


def test_bench_schedulers_quick_reports_backlog_sync_and_whole_cell_figures(quick):
    tables, report = quick
    assert "backlog_ratio" in tables and "sync_over_raw" in tables and "whole cell" in tables

    backlog = report["backlog"]
    if "skipped" not in backlog:  # etcd installed
        shallow, deep = backlog["rows"]  # one repeat under --quick
        assert deep["queued"] == 20 * shallow["queued"]
        for r in backlog["rows"]:
            assert r["placements"] >= backlog["first_placements"] and r["check_store_ok"], r
            assert r["errors"] == [] and r["placements_per_s"] > 0
        assert report["backlog_ratio"] == round(report["backlog_20k_placements_per_s"]
                                                / report["backlog_1k_placements_per_s"], 3) > 0

    sync = report["sync"]
    for r in sync["rows"]:
        assert r["keys_read"] == 2 * sync["machines"]  # a spec and an allocation record per machine
        assert 0 < r["best_raw_s"] and 0 < r["best_sync_s"] and len(r["sync_s"]) == sync["repeats"]
    assert report["sync_100k_memory_over_raw"] == sync["rows"][0]["sync_over_raw"] > 0
    # the copy holds at least its NumPy columns and machine ids, at most a few KiB a machine
    assert 100 < report["sync_100k_retained_bytes_per_machine"] < 20_000

    whole = report["whole_cell"]
    assert whole["rows"] and whole["requested_cpu_fraction"] >= whole["fill_cpu"]
    for r in whole["rows"]:
        assert r["completed"] and r["check_store_ok"] and r["violations"] == 0, r["violations_first"]
        assert r["tasks_placed"] == r["bound_tasks"] and r["jobs_placed"] + r["jobs_parked"] == r["jobs"]
        tag = "whole_cell_" + r["backend"].replace("-", "")
        assert report[f"{tag}_s"] == r["whole_cell_s"] > 0 and report[f"{tag}_violations"] == 0


def test_bench_schedulers_quick_k8s_with_tracing_off_and_file_in_one_invocation():
    proc = subprocess.run([sys.executable, "-m", "cellsched.loadtests.bench_schedulers", "--case", "k8s", "--quick",
                           "--tracing", "off,file", "--json"], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    *tables, last = proc.stdout.strip().splitlines()
    report = json.loads(last)
    assert "k8s with tracing" in "\n".join(tables) and "k8s" not in report  # the plain run is replaced
    case = report["k8s_tracing"]
    off, file = case["runs"]  # one round: off, then file
    assert (off["mode"], file["mode"]) == ("off", "file") and off["verified"] and file["verified"]
    assert report["k8s_tracing_off_pods_per_s"] == off["pods_per_s"] > 0
    assert report["k8s_tracing_file_pods_per_s"] == file["pods_per_s"] > 0
    assert report["k8s_tracing_file_cost"] == round(1 - file["pods_per_s"] / off["pods_per_s"], 4)
    # Traced for real: the file holds the batch spans, which link every pod, initial and measured.
    assert file["spans"] > 0 and file["links"] == case["pods"] + case["init_pods"]


def test_bench_schedulers_refuses_an_unknown_tracing_mode():
    done = subprocess.run([sys.executable, "-m", "cellsched.loadtests.bench_schedulers", "--case", "k8s",
                           "--tracing", "off,otlp"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "--tracing" in done.stderr and "otlp" in done.stderr


def test_k8s_figures_take_the_ray_run_and_its_own_clusters_raw_rate():
    from cellsched.loadtests.bench_schedulers.cases import k8s_figures

    threads = {"runner": "threads", "tasks_per_s": 4000.0, "keys_written_per_pod": 3.77, "bytes_written_per_pod": 812.5}
    ray = {"runner": "ray", "tasks_per_s": 3000.0, "keys_written_per_pod": 3.75, "bytes_written_per_pod": None}
    got = k8s_figures([threads, ray], {"threads": 2500.0, "ray": 2000.0})
    assert got == {"k8s_ray_pods_per_s": 3000.0, "k8s_ray_over_raw_txn": 1.5,
                   "k8s_keys_written_per_pod": 3.75, "k8s_keys_written_runner": "ray",
                   "k8s_bytes_written_per_pod": 812.5, "k8s_bytes_written_runner": "threads"}
    assert k8s_figures([threads], {"threads": 2500.0}) == {
        "k8s_keys_written_per_pod": 3.77, "k8s_keys_written_runner": "threads",
        "k8s_bytes_written_per_pod": 812.5, "k8s_bytes_written_runner": "threads"}
