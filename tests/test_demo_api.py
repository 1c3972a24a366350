"""`make demo` submits through the REST API (cellsched/demo_api.py): real uvicorn on a
thread, real HTTP, and the job records read back from the store equal the jobs sent."""

from __future__ import annotations

import pytest

from cellsched.api import ApiContext, Role, TokenTable, create_app
from cellsched.cellstate.audit import AuditLog, verify
from cellsched.cellstate.errors import StoreUnavailableError
from cellsched.cellstate.keys import CellKeys
from cellsched.cellstate.model import Job, JobClass, TaskGroup, TransactionMode
from cellsched.cellstate.store.memory import MemoryStore
from cellsched.cellstate.views import read_job_view
from cellsched.demo_api import ApiThread, HttpSubmitter

SECRET = "demo-test-secret-0123456789"


def jobs(n: int) -> list[Job]:
    out = []
    for i in range(n):
        groups = (TaskGroup("web", 1 + i % 3, (250 + i, 512 + 7 * i, 0), labels={"zone": "a"}),
                  TaskGroup("gpu", 1, (1000, 2048, 1), different_machines=True))
        mode = TransactionMode.ALL_OR_NOTHING if i % 2 else TransactionMode.INCREMENTAL
        out.append(Job(f"demo-{i}", groups, JobClass.GPU if i % 2 else JobClass.BATCH, i % 5, mode))
    return out


@pytest.fixture
def api():
    store = MemoryStore()
    keys = CellKeys("demo-api")
    tokens = TokenTable()
    tokens.add(Role.SUBMITTER, "demo", SECRET)
    thread = ApiThread(create_app(ApiContext(store, keys, tokens, audit=AuditLog.open(store, keys, 1))))
    thread.start()
    yield store, keys, thread
    thread.stop()


def test_jobs_sent_over_http_read_back_as_sent(api):
    store, keys, thread = api
    sent = jobs(1200)  # more than one bulk request (500 jobs each)
    submit = HttpSubmitter(thread.base, SECRET)
    result = submit(sent, 0.0)
    assert submit.requests == 3
    assert sorted(result.accepted) == sorted(j.id for j in sent) and not result.rejected
    for job in sent[:50] + sent[-50:]:
        assert read_job_view(store, keys, job.id).record.job == job
    assert verify(store, keys).ok
    # Sent again (as the replay driver does after a lost answer): refused as existing, not doubled.
    again = submit(sent[:3], 0.0)
    assert not again.accepted and all("already exists" in why for why in again.rejected.values())
    submit.close()


def test_a_down_api_raises_store_unavailable_so_the_jobs_are_sent_again(api):
    _, _, thread = api
    submit = HttpSubmitter(thread.base, SECRET)
    thread.stop()
    with pytest.raises(StoreUnavailableError):
        submit(jobs(1), 0.0)
    submit.close()


def test_a_refused_token_rejects_every_job_with_the_status(api):
    _, _, thread = api
    submit = HttpSubmitter(thread.base, "not-the-token-at-all")
    result = submit(jobs(2), 0.0)
    assert not result.accepted and all(why.startswith("HTTP 401") for why in result.rejected.values())
    submit.close()
