"""loadtests/bench_schedulers' scaling figures: the medians of repeated runs per point."""

from __future__ import annotations

from cellsched.loadtests.bench_schedulers.cases import scaling_figures


def run(n, tasks_per_s, failed=0.0, backend="memory", runner="threads", repeat=0, mode="resource_fit"):
    return {"backend": backend, "runner": runner, "homes_on": True, "schedulers": n, "conflict_mode": mode,
            "tasks_per_s": tasks_per_s, "failed_txn_fraction": failed, "repeat": repeat}


def test_each_point_is_the_median_of_its_runs_and_the_ratio_is_taken_between_medians():
    rows = [run(1, 1000, repeat=0), run(8, 700, 0.30, repeat=0),  # a slow spell in round 0 at N=8
            run(1, 1200, repeat=1), run(8, 1100, 0.05, repeat=1),
            run(1, 900, repeat=2), run(8, 1000, 0.10, repeat=2),
            run(8, 10, 0.9, mode="sequence")]  # another conflict mode: not in the figures
    figures = scaling_figures(rows)
    (series,) = figures["scaling_series"]
    assert series["median_tasks_per_s_by_n"] == {1: 1000, 8: 1000}
    assert series["runs_tasks_per_s_by_n"] == {1: [1000, 1200, 900], 8: [700, 1100, 1000]}
    assert figures["scaling_min_ratio"] == 1.0
    assert figures["scaling_max_failed_txn_fraction"] == 0.10  # the median run's, not the worst
    assert figures["scaling_max_failed_txn_fraction_any_run"] == 0.30  # ... which is reported beside it


def test_one_run_per_point_gives_its_own_figures_and_the_worst_series_counts():
    rows = [run(1, 1000), run(2, 950), run(4, 800, 0.2),
            run(1, 500, backend="etcd-3"), run(2, 600, backend="etcd-3")]
    figures = scaling_figures(rows)
    assert figures["scaling_min_ratio"] == 0.8
    assert figures["scaling_max_failed_txn_fraction"] == 0.2
    assert {s["backend"]: s["min_ratio"] for s in figures["scaling_series"]} == {"memory": 0.8, "etcd-3": 1.2}


def test_an_even_number_of_runs_takes_the_lower_middle():
    rows = [run(1, 1000), run(1, 2000), run(2, 900), run(2, 1500)]
    (series,) = scaling_figures(rows)["scaling_series"]
    assert series["median_tasks_per_s_by_n"] == {1: 1000, 2: 900}
