"""A parked job's explanation names the machines nearest to fitting it (gpu/reasons.py):
those that pass every filter but the resources, best covered first."""

from __future__ import annotations

import numpy as np

from cellsched import gpu
from cellsched.cellstate.model import Job, JobRecord, TaskGroup
from cellsched.schedulers.decide import decide_job


def test_closest_machines_skip_filtered_ones_and_rank_by_the_scarcest_resource():
    ids = ["m0", "m1", "m2", "m3", "m4"]
    capacity = np.array([[4000, 8000, 0]] * 5)
    # free cpu/mem: m0 500/7000, m1 2000/7000, m2 3500/7000 (wrong zone), m3 100/7000,
    # m4 2500/1000: memory is its scarcest cover.
    used = np.array([[3500, 1000, 0], [2000, 1000, 0], [500, 1000, 0], [3900, 1000, 0], [1500, 7000, 0]])
    labels = [{"zone": "a"}, {"zone": "a"}, {"zone": "b"}, {"zone": "a"}, {"zone": "a"}]
    cols = gpu.MachineColumns(ids, capacity, used, labels, xp=np)
    job = Job("big", (TaskGroup("g", 1, (3000, 4000, 0), labels={"zone": "a"}),))
    decision = decide_job(cols, {m: i for i, m in enumerate(ids)}, JobRecord(job), gpu.SPREAD, 0)
    assert not decision.claims and decision.unplaced == 1
    [group] = decision.unplaceable
    closest = group["closest_machines"]
    # Covers: m1 2000/3000 = 0.67; m4 min(2500/3000, 1000/4000) = 0.25; m0 0.17; m3 0.03.
    assert [c["machine"] for c in closest] == ["m1", "m4", "m0"]  # m2 fails the zone
    assert closest[0]["free"] == {"cpu": 2000, "memory": 7000, "gpu": 0}
