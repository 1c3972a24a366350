"""A submission's 201 body is written without the JobOut models: the same bytes as
JobOut.of(rec).model_dump_json(by_alias=True), whatever the record holds."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from cellsched.api.models_jobs import JobOut, job_out_json
from cellsched.cellstate.codec import INLINE_TASKS
from cellsched.cellstate.model import Job, JobClass, JobRecord, JobStatus, TaskGroup, TransactionMode

_names = st.from_regex(r"[a-z][a-z0-9-]{0,8}", fullmatch=True)
_groups = st.lists(st.tuples(_names, st.integers(1, 40), st.integers(0, 10**6), st.integers(0, 2**20),
                             st.integers(0, 8), st.dictionaries(_names, st.text(max_size=10), max_size=3),
                             st.booleans()),
                   min_size=1, max_size=4, unique_by=lambda g: g[0])
_when = st.none() | st.floats(0, 2e9, allow_nan=False)


@settings(max_examples=150, deadline=None)
@given(_groups, st.sampled_from(list(JobClass)), st.integers(0, 11), st.booleans(),
       st.sampled_from(list(JobStatus)), st.text(max_size=20), st.floats(0, 2e9, allow_nan=False), _when, _when,
       st.integers(0, 5), st.integers(0, 3))
def test_job_out_json_is_the_models_bytes(groups, cls, prio, gang, status, reason, sub, placed, fin, failures, nb):
    tgs = tuple(TaskGroup(n, c, (cpu or 1, mem, gpu), labels, diff) for n, c, cpu, mem, gpu, labels, diff in groups)
    mode = TransactionMode.ALL_OR_NOTHING if gang else TransactionMode.INCREMENTAL
    job = Job("j-1", tgs, cls, prio, mode)
    rec = JobRecord(job, status, reason=reason, submitted_at=sub, placed_at=placed, finished_at=fin,
                    failures=failures)
    tasks = [t for t, _, _ in job.tasks()]
    if job.task_count > INLINE_TASKS:
        rec.loaded, rec.shard_counts = False, (nb, 0)
    else:
        rec.bound = {t: f"m{i}" for i, t in enumerate(tasks[:nb])}
    assert job_out_json(rec) == JobOut.of(rec).model_dump_json(by_alias=True).encode()
