"""Smoke runs of the kernel benchmark and the packing-quality table (no timing asserted)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cellsched.loadtests.traces.sample import shared_trace_dir

REPO = Path(__file__).resolve().parents[2]


def _run(*args: str) -> dict:
    out = subprocess.run([sys.executable, "-m", *args, "--json"], cwd=REPO, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_bench_kernels_quick_prints_json():
    summary = _run("loadtests.bench_kernels", "--quick")
    backends = {r["backend"] for r in summary["rows"]}
    assert {"numpy", "reference"} <= backends
    assert summary["numpy_over_reference"] > 0
    assert any("peak_bytes" in r for r in summary["rows"])


@pytest.fixture
def trace_dir() -> Path:
    path = shared_trace_dir()
    if not (path / "task_events").is_dir():
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but the Google 2011 trace is missing at {path}")
        pytest.skip(f"needs ../shared/data/google2011 (not found at {path})")
    return path


@pytest.mark.trace
def test_packing_quality_table_on_trace_subset(trace_dir):
    summary = _run("loadtests.packing_quality", "--machines", "300", "--trace-dir", str(trace_dir))
    assert [r["policy"] for r in summary["rows"]][0] == "random_first_fit"
    assert summary["prefill_cpu_utilisation"] >= 0.6
    for row in summary["rows"]:
        assert row["placed_before_first_failure"] <= row["placed"]
        assert 0.6 <= row["cpu_utilisation"] <= 1.0  # never overcommits
