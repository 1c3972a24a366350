"""loadtests.replay_contention: the checks it reports can fire, and a bounded contention
replay (6 scheduler actors, 3-member etcd, waves from both Google 2011 parts) comes out
clean: no invariant violation, no lost job, no actor error, and no parked or unplaced
task that the scalar reference can fit in the final state.
"""

from __future__ import annotations

import pytest

from cellsched.cellstate.errors import CommitOutcomeUnknown, InvalidInputError
from cellsched.cellstate.faults import AfterSendStore
from cellsched.cellstate.keys import CellKeys
from cellsched.cellstate.machines import add_machines
from cellsched.cellstate.model import Job, JobClass, Machine, TaskGroup
from cellsched.cellstate.store import StoreLimits
from cellsched.cellstate.store.memory import MemoryStore
from cellsched.cellstate.submission import submit_jobs
from cellsched.loadtests import replay_contention as rc
from cellsched.loadtests.replay import ReplayDriver, Workload
from tests._shared_data import shared_data_dir

# The bounded run: 4,000 evenly spaced waves of all 19,931 (both parts, resubmissions
# included) played in 12 s, on the command's own fleet and settings. The arrival rate,
# not the job count, makes the contention: 2,000 waves in 30 s, or the 2,155 first waves
# in 20 s, came out clean on code where this size overcommitted 20 machines.
BOUNDED_JOBS = 4000
BOUNDED_HORIZON_S = 12.0


def test_parse_fleet():
    assert rc.parse_fleet("batch=3,service=2,gpu=1") == ((JobClass.BATCH, 3), (JobClass.SERVICE, 2),
                                                         (JobClass.GPU, 1))
    assert rc.parse_fleet("gpu=1, batch=2") == ((JobClass.BATCH, 2), (JobClass.GPU, 1))
    for bad in ("batch", "batch=x", "cpu=1", "batch=1,batch=2", "batch=0", "batch=-1", ""):
        with pytest.raises(InvalidInputError):
            rc.parse_fleet(bad)


def test_violation_examples_quote_every_kind():
    over = [f"machine m{i}: overcommitted, used (2, 0, 0) > capacity (1, 0, 0)" for i in range(20)]
    twice = "task j/0/0 bound twice: on m1 and m2"
    examples = rc.violation_examples([*over, twice])
    assert twice in examples and len(examples) == rc.EXAMPLES
    assert rc.violation_kind(twice) == "task bound twice" and rc.violation_kind(over[0]) == "overcommitted"


def test_missing_data_exits_2(tmp_path, capsys):
    assert rc.main(["--data-dir", str(tmp_path)]) == 2
    assert "no Google 2011 trace" in capsys.readouterr().err


def test_checks_find_a_fittable_job_and_a_lost_one():
    """On a cell where nothing has run: the pending job fits (a scheduler should have
    placed it), and an accepted id that the store does not have is lost."""
    store = MemoryStore(StoreLimits())
    keys = CellKeys("checks")
    add_machines(store, keys, [Machine("m0", (1000, 1000, 0))])
    job = Job("j0", (TaskGroup("t", 2, (100, 100, 0)),))
    assert submit_jobs(store, keys, [job], now=0.0).accepted == ["j0"]
    state = rc.read_final_state(store, keys)
    assert rc.lost_jobs(["j0"], state) == []
    assert rc.lost_jobs(["j0", "ghost"], state) == ["ghost: missing from the store"]
    fittable = rc.unplaced_that_fit(state)
    assert len(fittable) == 1 and "j0/0/" in fittable[0]
    too_big = Job("j1", (TaskGroup("t", 1, (2000, 100, 0)),))
    submit_jobs(store, keys, [too_big], now=0.0)
    assert len(rc.unplaced_that_fit(rc.read_final_state(store, keys))) == 1  # j1 fits nowhere
    store.close()


def test_driver_keeps_a_submission_whose_ack_was_lost():
    """A submission txn applied but unacknowledged (a leader change): the driver sends the
    jobs again, and counts the ones its own lost write created as accepted, not rejected."""
    inner = MemoryStore(StoreLimits())
    keys = CellKeys("ack")
    machines = [Machine("m0", (1000, 1000, 0))]
    add_machines(inner, keys, machines)
    dropped = []

    def drop_first_ack(_success, _result):
        if not dropped:
            dropped.append(True)
            raise CommitOutcomeUnknown("ack dropped after the txn applied")

    jobs = [Job(f"j{i}", (TaskGroup("t", 1, (100, 100, 0)),)) for i in range(3)]
    driver = ReplayDriver(AfterSendStore(inner, drop_first_ack), keys,
                          Workload(machines, [(0.0, j) for j in jobs], 1.0, "three jobs"), scan_every_s=0.05)
    progress = driver.run(until_s=0.5, settle=False)
    assert dropped and progress.submitted == 3
    assert sorted(driver.accepted) == ["j0", "j1", "j2"] and driver.rejected == {}
    assert rc.lost_jobs(driver.accepted, rc.read_final_state(inner, keys)) == []


@pytest.mark.etcd
@pytest.mark.ray
@pytest.mark.trace
def test_bounded_contention_replay_is_clean(request):
    # The data check first: skip (or, under CI=true, fail) before starting etcd or Ray.
    trace_dir = shared_data_dir("google2011") / "google2011"
    request.getfixturevalue("ray_cluster")
    etcd = request.getfixturevalue("etcd_three")
    config = rc.ContentionConfig(trace_dir, max_jobs=BOUNDED_JOBS, horizon_s=BOUNDED_HORIZON_S,
                                 cell="contention-test")
    result = rc.run_contention(config, etcd.endpoints)
    rc.print_report(result)
    assert len(result["schedulers"]) == 6
    assert result["jobs"] >= BOUNDED_JOBS and result["submitted"] == result["jobs"]
    assert result["violations"] == 0, (result["violation_kinds"], result["violation_examples"])
    assert result["jobs_lost"] == 0, result["lost_examples"]
    assert result["actor_errors"] == 0, result["actor_error_messages"]
    assert result["fittable_unplaced"] == 0, result["fittable_examples"]
    assert result["tasks_placed"] > 0
