"""The Google 2011 trace reader: attempts, malformed rows, the shipped sample, the real data."""

from __future__ import annotations

import gzip
import time
from pathlib import Path

import pytest

from cellsched.cellstate.errors import TraceFormatError
from cellsched.cellstate.model import MAX_TASKS_PER_JOB
from cellsched.loadtests.traces import google2011 as g
from cellsched.loadtests.traces import sample
from tests._shared_data import shared_data_dir

SUBMIT, SCHEDULE, EVICT, FAIL, FINISH, KILL = 0, 1, 2, 3, 4, 5
S = 1_000_000  # microseconds per second


def task_row(
    t: int, job: int, index: int, kind: int, *, prio=0, cls=0, cpu="0.0125", mem="0.0159", diff="0"
) -> str:
    # time, missing info, job, index, machine, type, user, class, priority, cpu, mem, disk, different machines
    return f"{t},,{job},{index},,{kind},user=,{cls},{prio},{cpu},{mem},0.0004,{diff}"


def write_part(root: Path, table: str, lines: list[str], name: str = "part-00000-of-00001.csv.gz") -> Path:
    (root / table).mkdir(parents=True, exist_ok=True)
    path = root / table / name
    with gzip.open(path, "wt") as out:
        out.write("".join(line + "\n" for line in lines))
    return path


# ---------------------------------------------------------------------------------------
# Attempts and runtimes, on small synthetic files


def test_read_task_attempts_resubmit_after_fail_evict_kill_is_new_attempt(tmp_path):
    write_part(tmp_path, "task_events", [
        task_row(1 * S, 7, 0, FAIL),          # an attempt from before the window: ignored
        task_row(2 * S, 7, 0, SUBMIT),        # attempt 0
        task_row(3 * S, 7, 0, SCHEDULE),
        task_row(6 * S, 7, 0, FAIL),          # runtime 6 - 3 = 3 s
        task_row(7 * S, 7, 0, SUBMIT),        # attempt 1
        task_row(8 * S, 7, 0, SCHEDULE),
        task_row(9 * S, 7, 0, EVICT),         # evicted: no runtime
        task_row(10 * S, 7, 0, SUBMIT),       # attempt 2
        task_row(11 * S, 7, 0, KILL),         # killed while pending: never scheduled
        task_row(12 * S, 7, 0, SUBMIT),       # attempt 3
        task_row(12 * S, 7, 1, SUBMIT),       # another task of the job: its own attempt 0
        task_row(13 * S, 7, 0, SCHEDULE),
        task_row(14 * S, 7, 1, SCHEDULE),     # still running at the end: no runtime
        task_row(17 * S + 500_000, 7, 0, FINISH),  # runtime 17.5 - 13 = 4.5 s
    ])  # fmt: skip
    attempts = g.read_task_attempts(tmp_path)
    assert [(a.job_id, a.index, a.attempt) for a in attempts] == [
        (7, 0, 0), (7, 0, 1), (7, 0, 2), (7, 0, 3), (7, 1, 0),
    ]  # fmt: skip
    assert [a.runtime_s for a in attempts] == [3.0, None, None, 4.5, None]
    assert [a.submit_time_us for a in attempts] == [2 * S, 7 * S, 10 * S, 12 * S, 12 * S]


def test_read_task_attempts_fields_are_integer_base_units(tmp_path):
    write_part(
        tmp_path,
        "task_events",
        [task_row(5, 1, 3, SUBMIT, prio=9, cls=2, cpu="0.06873", mem="0.0159", diff="1")],
    )
    (a,) = g.read_task_attempts(tmp_path)
    # round(0.06873 * 10^6) = 68730, round(0.0159 * 10^6) = 15900
    assert (a.cpu, a.memory) == (68_730, 15_900)
    assert (a.priority, a.scheduling_class, a.different_machines) == (9, 2, True)
    assert a.is_service


@pytest.mark.parametrize(
    ("priority", "scheduling_class", "service"),
    [(9, 2, True), (11, 3, True), (8, 3, False), (9, 1, False), (0, 0, False)],
)
def test_is_service_needs_production_priority_and_class_two(priority, scheduling_class, service):
    assert g.is_service(priority, scheduling_class) is service


def test_read_task_attempts_attempts_continue_across_parts(tmp_path):
    write_part(
        tmp_path,
        "task_events",
        [task_row(1, 4, 0, SUBMIT), task_row(2, 4, 0, FAIL)],
        "part-00010-of-00500.csv.gz",
    )
    write_part(tmp_path, "task_events", [task_row(3, 4, 0, SUBMIT)], "part-00011-of-00500.csv.gz")
    assert [a.attempt for a in g.read_task_attempts(tmp_path)] == [0, 1]
    # Reading one part alone starts counting afresh: attempts are numbered within the files read.
    assert [a.attempt for a in g.read_task_attempts(tmp_path, parts=[11])] == [0]
    assert g.first_task_event_time(tmp_path) == 1
    with pytest.raises(FileNotFoundError, match="12"):
        g.read_task_attempts(tmp_path, parts=["00012"])


# ---------------------------------------------------------------------------------------
# Malformed rows name the file, the line and the field

GOOD = task_row(1, 1, 0, SUBMIT)


@pytest.mark.parametrize(
    ("bad_row", "field"),
    [
        (task_row("12.5", 1, 0, SUBMIT), "time"),  # non-integer time
        (task_row(2, "x", 0, SUBMIT), "job ID"),
        (task_row(2, 1, 1, SUBMIT, cpu=""), "CPU request"),  # blank cpu on a SUBMIT
        (task_row(2, 1, 1, SUBMIT, mem=""), "memory request"),
        (task_row(2, 1, 1, SUBMIT, mem="nan"), "memory request"),
        (task_row(2, 1, 1, SUBMIT, cpu="-0.1"), "CPU request"),
        (task_row(2, 1, 1, SUBMIT, cpu="inf"), "CPU request"),
        (task_row(2, 1, 1, SUBMIT, prio=12), "priority"),
        (task_row(2, 1, 1, SUBMIT, diff="yes"), "different machines restriction"),
        (task_row(2, 1, 1, 9), "event type"),
        (GOOD + ",extra", "columns"),  # wrong column count
        (task_row(0, 1, 1, SUBMIT), "time"),  # earlier than the line before it
    ],
)
def test_read_task_attempts_malformed_row_names_file_line_field(tmp_path, bad_row, field):
    path = write_part(tmp_path, "task_events", [GOOD, bad_row])
    with pytest.raises(TraceFormatError) as caught:
        g.read_task_attempts(tmp_path)
    message = str(caught.value)
    assert path.name in message and ":2:" in message and repr(field) in message
    assert (caught.value.line, caught.value.field) == (2, field)


def test_read_task_attempts_blank_cpu_allowed_off_submit(tmp_path):
    # Only SUBMIT rows carry a request the replay uses; other rows may leave it blank.
    write_part(tmp_path, "task_events", [GOOD, task_row(2, 1, 0, SCHEDULE, cpu="", mem="")])
    assert len(g.read_task_attempts(tmp_path)) == 1


@pytest.mark.parametrize(
    ("bad_row", "field"),
    [
        ("x,5,0,p,0.5,0.25", "time"),
        ("1,5,3,p,0.5,0.25", "event type"),
        ("1,5,0,p,nan,0.25", "CPUs"),
        ("1,5,0,p,0.5", "columns"),
    ],
)
def test_read_machine_events_malformed_row_names_file_line_field(tmp_path, bad_row, field):
    path = write_part(tmp_path, "machine_events", ["0,4,0,p,0.5,0.25", bad_row])
    with pytest.raises(TraceFormatError) as caught:
        list(g.read_machine_events(tmp_path))
    assert path.name in str(caught.value) and ":2:" in str(caught.value) and repr(field) in str(caught.value)


# ---------------------------------------------------------------------------------------
# Machines


def test_live_machines_at_applies_add_update_remove_and_skips_blank_capacity(tmp_path):
    write_part(tmp_path, "machine_events", [
        "0,1,0,pA,0.5,0.25",
        "0,2,0,pA,0.5,0.25",
        "0,3,0,pB,,",           # ADD with blank capacity: not placeable yet
        "0,4,0,pB,,",
        "10,2,1,pA,0.5,0.25",   # REMOVE
        "20,3,2,pC,1,0.5",      # UPDATE gives machine 3 its capacity
        "30,1,2,pA,0.25,0.25",  # later than the cut: a capacity event
    ])  # fmt: skip
    machines = g.live_machines_at(tmp_path, 20)
    assert machines == [
        g.TraceMachine("1", 500_000, 250_000, "pA"),
        g.TraceMachine("3", 1_000_000, 500_000, "pC"),
    ]
    later = list(g.capacity_events_after(tmp_path, 20))
    assert [(e.time_us, e.machine_id, e.kind, e.cpu) for e in later] == [
        (30, "1", g.MachineEventType.UPDATE, 250_000)
    ]


# ---------------------------------------------------------------------------------------
# Jobs for a replay


def attempt(job: int, index: int, t: int, *, prio=0, cpu=100, n=0) -> g.TaskAttempt:
    return g.TaskAttempt(job, index, n, t, cpu, 100, prio, 0, False, 1.0)


def test_group_jobs_splits_waves_by_window_repeat_and_priority():
    w = g.DEFAULT_WAVE_WINDOW_US
    jobs = g.group_jobs([
        attempt(1, 0, 0), attempt(1, 1, 10, cpu=200), attempt(1, 2, 20),  # one wave, two shapes
        attempt(1, 0, 30, n=1),                   # task 0 again: a new wave
        attempt(1, 3, 30 + w + 1),                # past the window of the wave opened at 30
        attempt(2, 0, 40, prio=9),
        attempt(2, 1, 50, prio=0),                # same job, other priority: its own wave
    ])  # fmt: skip
    assert [(j.job_id, j.wave, len(j.attempts)) for j in jobs] == [
        (1, 0, 3),
        (1, 1, 1),
        (2, 0, 1),
        (2, 1, 1),
        (1, 2, 1),
    ]
    assert len({j.name for j in jobs}) == len(jobs)
    assert [(grp.cpu, grp.count) for grp in jobs[0].groups()] == [(100, 2), (200, 1)]


# ---------------------------------------------------------------------------------------
# The shipped sample


def test_sample_is_attributed_and_under_one_megabyte():
    assert sample.sample_size_bytes() <= 1_000_000
    notice = (sample.SAMPLE_DIR / "NOTICE.md").read_text()
    for needed in ("CC-BY 4.0", "Reiss", "Wilkes", "Hellerstein", "format + schema", "clusterdata-2011-2"):
        assert needed in notice


def test_sample_loads_with_the_same_reader():
    trace = sample.sample_trace_dir()
    start = g.first_task_event_time(trace)
    machines = g.live_machines_at(trace, start)
    attempts = g.read_task_attempts(trace)
    # Counts fixed by SampleSpec (see the sample's NOTICE.md).
    assert len(machines) == 3_001
    assert len(attempts) == 5_087
    assert len({a.job_id for a in attempts}) == 657
    assert any(a.is_service for a in attempts) and any(a.runtime_s for a in attempts)
    jobs = g.group_jobs(attempts)
    assert sum(len(j.attempts) for j in jobs) == len(attempts)


def test_default_trace_dir_falls_back_to_sample(tmp_path, monkeypatch):
    monkeypatch.setenv(sample.SHARED_DATA_ENV, str(tmp_path))
    assert sample.default_trace_dir() == sample.SAMPLE_DIR
    (tmp_path / "google2011" / "task_events").mkdir(parents=True)
    assert sample.default_trace_dir() == tmp_path / "google2011"


# ---------------------------------------------------------------------------------------
# The real trace in ../shared/data (skipped where it is missing, failed in CI)


@pytest.fixture(scope="module")
def real_trace() -> Path:
    return shared_data_dir("google2011/task_events").joinpath("google2011")


@pytest.fixture(scope="module")
def real_attempts(real_trace) -> list[g.TaskAttempt]:
    started = time.perf_counter()
    attempts = g.read_task_attempts(real_trace)
    # About 2 s here for all 442,668 rows; the bound only catches a pathological slowdown.
    assert time.perf_counter() - started < 30
    return attempts


@pytest.mark.trace
def test_live_machines_at_first_task_event_matches_readme(real_trace):
    start = g.first_task_event_time(real_trace)
    assert start == 1_178_232_397_723
    machines = g.live_machines_at(real_trace, start)
    # The README's 12,457 and 6,594 CPU. 16 ADD rows before `start` have blank CPUs and
    # Memory; each is followed by an UPDATE with capacity, so none is left out.
    assert len(machines) == 12_457
    assert sum(m.cpu for m in machines) == 6_593_750_000
    blank = {e.machine_id for e in g.read_machine_events(real_trace) if e.cpu is None}
    assert len(blank) == 32
    blank_before = {
        e.machine_id for e in g.read_machine_events(real_trace) if e.cpu is None and e.time_us <= start
    }
    assert len(blank_before) == 16 and blank_before <= {m.id for m in machines}


@pytest.mark.trace
def test_read_task_attempts_real_counts_match_readme(real_attempts):
    assert len(real_attempts) == 146_872
    assert len({a.job_id for a in real_attempts}) == 2_140
    assert len({(a.job_id, a.index) for a in real_attempts}) == 44_007
    assert sum(a.attempt == 0 for a in real_attempts) == 44_007
    times = [a.submit_time_us for a in real_attempts]
    assert times == sorted(times)


@pytest.mark.trace
def test_read_task_attempts_real_parts_alone(real_trace):
    jobs = [len({a.job_id for a in g.read_task_attempts(real_trace, parts=[p])}) for p in (235, 236)]
    assert jobs == [1_062, 1_168]


@pytest.mark.trace
def test_group_jobs_real_waves_fit_the_model(real_attempts):
    jobs = g.group_jobs(real_attempts)
    assert len(jobs) == 19_950
    assert max(len(j.attempts) for j in jobs) <= MAX_TASKS_PER_JOB


@pytest.mark.trace
def test_sample_rebuild_is_byte_identical(real_trace, tmp_path):
    sample.build_sample(real_trace, tmp_path)
    shipped = sorted(p.relative_to(sample.SAMPLE_DIR) for p in sample.SAMPLE_DIR.rglob("*") if p.is_file())
    rebuilt = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert rebuilt == shipped
    for rel in shipped:
        assert (tmp_path / rel).read_bytes() == (sample.SAMPLE_DIR / rel).read_bytes(), rel
