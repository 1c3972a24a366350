"""The Omega sweep script runs its quick grid deterministically in simulated time."""

from __future__ import annotations

from cellsched.loadtests import omega_sweep


def test_omega_sweep_quick_grid_places_every_job_and_replays():
    rows = omega_sweep.main(["--quick"])
    assert len(rows) == 8  # 2 scheduler counts x 1 think time x 2 conflict modes x 2 txn modes
    assert all(r["unplaced"] == 0 for r in rows)
    assert all(0.0 < r["busyness"] <= 1.0 for r in rows)
    # Simulated time: the same seed gives the same numbers.
    assert omega_sweep.main(["--quick"]) == rows
