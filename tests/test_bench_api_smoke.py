"""loadtests.bench_api at tiny sizes: a real `cellsched api` (the embedded store hosted in its
Ray actor, with scheduler actors, as `make demo` runs it) and the bare ceiling app under
Locust, its JSON keys present and sane.
No wall-clock assertion: rates are reported, not judged, here."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

KEYS = ("submissions_per_s", "p50_ms", "p99_ms", "failures", "bare_ceiling_per_s", "ratio_to_bare",
        "bulk_jobs_per_s", "backend")


@pytest.mark.timeout(300)
def test_bench_api_quick_runs_locust_against_the_live_api_and_the_bare_ceiling():
    done = subprocess.run([sys.executable, "-m", "cellsched.loadtests.bench_api", "--quick", "--json",
                           "--backends", "memory-ray"], capture_output=True, text=True, timeout=280)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert all(k in out for k in KEYS), sorted(out)
    assert out["backend"] == "memory-ray" and out["failures"] == 0 and out["rate_limited"] == 0
    assert out["submissions_per_s"] > 0 and out["bare_ceiling_per_s"] > 0 and out["bulk_jobs_per_s"] > 0
    single = out["backends"][0]["single"]
    assert single["requests"] > 0 and single["p50_ms"] <= single["p99_ms"]
    bulk = out["backends"][0]["bulk"]
    assert single["api_cpu_us_per_job"] > 0 and bulk["api_cpu_us_per_job"] > 0  # the API process's own CPU
    # The jobs went into the store: the cell summary counts them, queued or placed (10m CPU per task).
    cell = out["backends"][0]["cell"]
    queued = sum(q["pending"] + q["parked"] for q in cell["queues"].values())
    assert queued + cell["used"]["cpu"] // 10 > 0 and cell["schedulers"]["in_process"] == 0
    actors = out["backends"][0]["scheduler_actors"]
    assert len(actors) == 3 and all(a["alive"] for a in actors)


def test_bench_api_refuses_an_unknown_backend():
    done = subprocess.run([sys.executable, "-m", "cellsched.loadtests.bench_api", "--backends", "mongo"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "unknown ['mongo']" in done.stderr


@pytest.mark.timeout(300)
def test_bench_api_tracing_modes_run_in_one_invocation_and_otlp_spans_arrive():
    done = subprocess.run([sys.executable, "-m", "cellsched.loadtests.bench_api", "--quick", "--json",
                           "--tracing", "off,file,otlp", "--tracing-rounds", "1"],
                          capture_output=True, text=True, timeout=280)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert list(out["modes"]) == ["off", "file", "otlp"]
    assert all(m["failures"] == 0 and m["submissions_per_s"] > 0 for m in out["modes"].values())
    assert "tracing_file_cost" in out and "tracing_otlp_cost" in out
    assert out["otlp_spans_received"] > 0  # the API's request spans reached the receiver over the wire


def test_bench_api_refuses_an_unknown_tracing_mode():
    done = subprocess.run([sys.executable, "-m", "cellsched.loadtests.bench_api", "--tracing", "off,jaeger"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "--tracing" in done.stderr and "jaeger" in done.stderr
