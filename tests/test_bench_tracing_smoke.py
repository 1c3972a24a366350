"""loadtests.bench_tracing runs end to end at tiny sizes: every mode places every pod and
verifies, the exporting modes deliver spans (to the file, over OTLP/HTTP), and the report's
last line is the JSON the docs record. Throughput itself is never asserted."""

from __future__ import annotations

from cellsched.loadtests import bench_tracing


def test_bench_tracing_quick_reports_every_mode(capsys):
    result = bench_tracing.main(["--quick", "--rounds", "1"])
    assert set(result["pods_per_s"]) == set(bench_tracing.MODES)
    assert all(v > 0 for v in result["pods_per_s"].values())
    assert result["ratio_to_off"]["off"] == 1.0
    spans = {r["mode"]: r["spans"] for r in result["runs"]}
    assert spans["off"] == spans["noop"] == 0 and spans["file"] > 0 and spans["otlp"] == spans["file"]
    assert set(result["tracer_us_per_batch"]) == {"off", "noop"}
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("{")
