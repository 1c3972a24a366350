"""Reader for the Google cluster-usage trace, clusterdata-2011-2.

Layout (the real files in ../shared/data/google2011 and the shipped sample alike):
``<dir>/{machine_events,task_events,job_events}/part-NNNNN-of-MMMMM.csv.gz``, CSV without
header lines; the schema is in ../shared/data/README.md. The trace is CC-BY 4.0: Reiss,
Wilkes, Hellerstein, "Google cluster-usage traces: format + schema", 2011.

What the reader decides, and why:
- CPU and memory become integers, ``round(normalised * TRACE_SCALE)``, because every fit
  check in the cell store is exact integer arithmetic.
- A task is identified per attempt, ``(job, index, attempt)``: most SUBMIT rows re-submit
  a task after FAIL, EVICT or KILL, and a replay must place each one as new work. Every
  SUBMIT opens a new attempt (the 38 that follow a FINISH included); attempts are numbered
  from 0 per task *within the files read*, since earlier attempts are outside the window.
- Runtime is first FINISH, FAIL or KILL minus SCHEDULE of the same attempt (the data
  README's recipe). An attempt that was evicted or lost, never scheduled, or still running
  at the end of the files has ``runtime_s = None``: the original scheduler ended it, not
  the work.
- Every field the reader uses is checked, and a bad one raises ``TraceFormatError`` naming
  the file, the 1-based line and the field. Fields it ignores (user, disk, machine ID on
  task rows) are not parsed: that keeps a full read of both parts to about a second.
"""

from __future__ import annotations

import csv
import gzip
import math
from collections.abc import Iterable, Iterator
from enum import IntEnum
from pathlib import Path

from cellsched.cellstate.errors import DataNotFoundError, TraceFormatError
from cellsched.cellstate.resources import TRACE_SCALE

from .records import MachineEvent, MachineEventType, TaskAttempt, TaskEventType, TraceMachine, is_service
from .sample import default_trace_dir
from .waves import DEFAULT_WAVE_WINDOW_US, TraceJob, TraceTaskGroup, group_jobs

__all__ = [
    "DEFAULT_WAVE_WINDOW_US",
    "MachineEvent",
    "MachineEventType",
    "TaskAttempt",
    "TaskEventType",
    "TraceJob",
    "TraceMachine",
    "TraceTaskGroup",
    "capacity_events_after",
    "default_trace_dir",
    "first_task_event_time",
    "group_jobs",
    "is_service",
    "live_machines_at",
    "read_machine_events",
    "read_task_attempts",
    "task_event_files",
]

TIME_AFTER_TRACE = 2**63 - 1  # the schema's "after the end of the trace"

MACHINE_FIELDS = ("time", "machine ID", "event type", "platform ID", "CPUs", "Memory")
TASK_FIELDS = (
    "time", "missing info", "job ID", "task index", "machine ID", "event type", "user",
    "scheduling class", "priority", "CPU request", "memory request", "disk space request",
    "different machines restriction",
)  # fmt: skip


# Ends that count towards runtime; EVICT and LOST end an attempt without one.
_RUNTIME_ENDS = frozenset({TaskEventType.FINISH, TaskEventType.FAIL, TaskEventType.KILL})
_ENDS = _RUNTIME_ENDS | {TaskEventType.EVICT, TaskEventType.LOST}


# ---------------------------------------------------------------------------------------
# Files and fields


def _parts(directory: Path, table: str) -> list[Path]:
    """The table's part files in part order; `directory` may be the trace root or the table."""
    folder = directory / table if (directory / table).is_dir() else directory
    files = sorted(folder.glob("part-*.csv.gz"))
    if not files:
        raise DataNotFoundError(f"no {table} part-*.csv.gz files under {directory}")
    return files


def task_event_files(trace_dir: str | Path, parts: Iterable[int | str] | None = None) -> list[Path]:
    """task_events part files, in part (hence time) order; `parts` picks some, e.g. [235]."""
    files = _parts(Path(trace_dir), "task_events")
    if parts is None:
        return files
    by_number = {int(f.name.split("-")[1]): f for f in files}
    wanted = sorted({int(p) for p in parts})
    missing = [p for p in wanted if p not in by_number]
    if missing:
        raise DataNotFoundError(f"task_events parts {missing} not found under {trace_dir}")
    return [by_number[p] for p in wanted]


def _rows(path: Path, columns: int, names: tuple[str, ...]) -> Iterator[tuple[int, list[str]]]:
    """(1-based line number, fields) for each row, refusing rows of the wrong width."""
    with gzip.open(path, "rt", newline="") as text:
        for line, row in enumerate(csv.reader(text), start=1):
            if len(row) != columns:
                raise TraceFormatError(
                    str(path),
                    line,
                    "columns",
                    f"expected {columns} comma-separated fields ({', '.join(names)}), got {len(row)}",
                )
            yield line, row


def _int(row: list[str], col: int, path: Path, line: int, names: tuple[str, ...]) -> int:
    try:
        return int(row[col])
    except ValueError:
        raise TraceFormatError(
            str(path), line, names[col], f"expected an integer, got {row[col]!r}"
        ) from None


def _amount(row: list[str], col: int, path: Path, line: int, names: tuple[str, ...]) -> int | None:
    """A normalised CPU/memory value in base units; None when blank."""
    text = row[col]
    if text == "":
        return None
    try:
        value = float(text)
    except ValueError:
        raise TraceFormatError(str(path), line, names[col], f"expected a number, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise TraceFormatError(str(path), line, names[col], f"{text!r} is not a finite non-negative number")
    return round(value * TRACE_SCALE)


def _event_type(row: list[str], col: int, path: Path, line: int, names: tuple[str, ...], enum: type[IntEnum]):
    code = _int(row, col, path, line, names)
    try:
        return enum(code)
    except ValueError:
        raise TraceFormatError(str(path), line, names[col], f"unknown event type {code}") from None


def _check_order(time_us: int, previous: int, path: Path, line: int) -> None:
    # Attempt numbering and the runtime join depend on rows arriving in time order.
    if time_us < previous:
        raise TraceFormatError(
            str(path), line, "time", f"{time_us} is earlier than the previous row's {previous}"
        )


# ---------------------------------------------------------------------------------------
# Machines


def read_machine_events(path_or_dir: str | Path) -> Iterator[MachineEvent]:
    """Stream machine_events rows in time order from one .csv.gz, its folder or the trace root."""
    path_or_dir = Path(path_or_dir)
    files = [path_or_dir] if path_or_dir.is_file() else _parts(path_or_dir, "machine_events")
    previous = 0
    for path in files:
        for line, row in _rows(path, len(MACHINE_FIELDS), MACHINE_FIELDS):
            time_us = _int(row, 0, path, line, MACHINE_FIELDS)
            _check_order(time_us, previous, path, line)
            previous = time_us
            machine = _int(row, 1, path, line, MACHINE_FIELDS)
            kind = _event_type(row, 2, path, line, MACHINE_FIELDS, MachineEventType)
            cpu = _amount(row, 4, path, line, MACHINE_FIELDS)
            memory = _amount(row, 5, path, line, MACHINE_FIELDS)
            yield MachineEvent(time_us, str(machine), kind, row[3], cpu, memory)


def live_machines_at(trace_dir: str | Path, time_us: int) -> list[TraceMachine]:
    """Machines live after applying every machine_events row with time <= time_us, by id.

    ADD and UPDATE set capacity, REMOVE deletes. Some ADD rows leave CPUs and Memory
    blank (32 in the full table, 16 before the first task event); each is followed within
    milliseconds by an UPDATE that carries the capacity. A machine whose capacity is still
    unknown at `time_us` is left out, since nothing could be placed on it.
    """
    capacity: dict[str, TraceMachine | None] = {}
    for event in read_machine_events(trace_dir):
        if event.time_us > time_us:
            break
        if event.kind is MachineEventType.REMOVE:
            capacity.pop(event.machine_id, None)
        elif event.cpu is None or event.memory is None:
            capacity.setdefault(event.machine_id, None)  # blank row: keep what we knew
        else:
            capacity[event.machine_id] = TraceMachine(
                event.machine_id, event.cpu, event.memory, event.platform
            )
    return sorted((m for m in capacity.values() if m is not None), key=lambda m: int(m.id))


def capacity_events_after(trace_dir: str | Path, time_us: int) -> Iterator[MachineEvent]:
    """The machine rows a replay streams as capacity events once the cell is built."""
    return (e for e in read_machine_events(trace_dir) if e.time_us > time_us)


# ---------------------------------------------------------------------------------------
# Tasks


def first_task_event_time(trace_dir: str | Path, parts: Iterable[int | str] | None = None) -> int:
    """Time of the earliest task event: the first row of each part, since parts are time-sorted."""
    first: list[int] = []
    for path in task_event_files(trace_dir, parts):
        for line, row in _rows(path, len(TASK_FIELDS), TASK_FIELDS):
            first.append(_int(row, 0, path, line, TASK_FIELDS))
            break
    if not first:
        raise TraceFormatError(str(trace_dir), 0, "time", "task_events files hold no rows")
    return min(first)


# A SUBMIT row's fields in TaskAttempt order, minus runtime (known only at the attempt's end).
_Submitted = tuple[int, int, int, int, int, int, int, int, bool]


def _submitted(
    row: list[str], path: Path, line: int, time_us: int, job: int, index: int, attempt: int
) -> _Submitted:
    """The fields of a SUBMIT row, in TaskAttempt order minus runtime."""
    f = TASK_FIELDS
    cpu = _amount(row, 9, path, line, f)
    memory = _amount(row, 10, path, line, f)
    if cpu is None or memory is None:
        col = 9 if cpu is None else 10
        raise TraceFormatError(str(path), line, f[col], "missing on a SUBMIT row")
    priority = _int(row, 8, path, line, f)
    if not 0 <= priority <= 11:
        raise TraceFormatError(str(path), line, f[8], f"{priority} is outside 0..11")
    scheduling_class = _int(row, 7, path, line, f)
    if not 0 <= scheduling_class <= 3:
        raise TraceFormatError(str(path), line, f[7], f"{scheduling_class} is outside 0..3")
    if row[12] not in ("", "0", "1"):  # optional in the schema: blank means unrestricted
        raise TraceFormatError(str(path), line, f[12], f"expected 0 or 1, got {row[12]!r}")
    return job, index, attempt, time_us, cpu, memory, priority, scheduling_class, row[12] == "1"


def _task_keys(row: list[str], path: Path, line: int) -> tuple[int, int, int, int]:
    """(time, job, index, event type) of any task row; the fields every row must have."""
    try:  # the fast path: one try for the four integers
        time_us, job, index, code = int(row[0]), int(row[2]), int(row[3]), int(row[5])
    except ValueError:  # find which field, for the message
        time_us, job, index, code = (_int(row, col, path, line, TASK_FIELDS) for col in (0, 2, 3, 5))
    if not 0 <= code <= _LAST_TASK_EVENT:
        raise TraceFormatError(str(path), line, TASK_FIELDS[5], f"unknown event type {code}")
    return time_us, job, index, code


_LAST_TASK_EVENT = max(TaskEventType)
# Plain ints in the hot loop: comparing enum members costs a third of a full read.
_SUBMIT, _SCHEDULE = int(TaskEventType.SUBMIT), int(TaskEventType.SCHEDULE)
_RUNTIME_END_CODES = frozenset(int(k) for k in _RUNTIME_ENDS)
_END_CODES = frozenset(int(k) for k in _ENDS)


def read_task_attempts(trace_dir: str | Path, parts: Iterable[int | str] | None = None) -> list[TaskAttempt]:
    """Every SUBMIT in the chosen task_events parts as a TaskAttempt, in submit-time order.

    Rows of tasks not yet submitted in the files read (attempts that began before the
    window) are checked but otherwise ignored.
    """
    fields: list[_Submitted] = []  # per attempt
    runtime: list[float | None] = []
    scheduled: list[int | None] = []
    ended: list[bool] = []
    current: dict[tuple[int, int], int] = {}  # (job, index) -> position of its latest attempt
    attempts_of: dict[tuple[int, int], int] = {}
    previous = 0
    for path in task_event_files(trace_dir, parts):
        for line, row in _rows(path, len(TASK_FIELDS), TASK_FIELDS):
            time_us, job, index, code = _task_keys(row, path, line)
            _check_order(time_us, previous, path, line)
            previous = time_us
            task = (job, index)
            if code == _SUBMIT:
                attempt = attempts_of.get(task, -1) + 1
                attempts_of[task] = attempt
                current[task] = len(fields)
                fields.append(_submitted(row, path, line, time_us, job, index, attempt))
                runtime.append(None)
                scheduled.append(None)
                ended.append(False)
                continue
            at = current.get(task)
            if at is None or ended[at]:
                continue
            if code == _SCHEDULE:
                scheduled[at] = time_us
            elif code in _END_CODES:
                ended[at] = True
                start = scheduled[at]
                if code in _RUNTIME_END_CODES and start is not None and time_us != TIME_AFTER_TRACE:
                    runtime[at] = (time_us - start) / 1e6
    # Rows arrive in time order, so the list is already in submit-time order.
    return [TaskAttempt(*values, r) for values, r in zip(fields, runtime, strict=True)]
