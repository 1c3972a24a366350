"""Benchmark rounds alternate their order (loadtests/interleave.py): over each pair of rounds
every mode runs once early and once late, so a machine that slows steadily favours none."""

from cellsched.loadtests.interleave import round_order


def test_rounds_alternate_forward_and_back():
    assert [round_order(["off", "file", "otlp"], r) for r in range(3)] == [
        ["off", "file", "otlp"], ["otlp", "file", "off"], ["off", "file", "otlp"]]


def test_a_steady_drift_costs_every_mode_the_same_over_a_pair_of_rounds():
    modes = [1, 2, 4, 8]
    slot = 0
    position_sum = dict.fromkeys(modes, 0)
    for rnd in range(2):
        for m in round_order(modes, rnd):
            position_sum[m] += slot  # a machine that slows by one unit per run
            slot += 1
    assert len(set(position_sum.values())) == 1
