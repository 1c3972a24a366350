"""A Put bound to a dead lease: refused with LeaseNotFoundError on both backends, nothing applied.

Turned from the outside check c5: on etcd this used to escape as a raw grpc NOT_FOUND error.
"""

from __future__ import annotations

import time

import pytest

from cellsched.cellstate.claims import claim_jobs, claimed_jobs
from cellsched.cellstate.errors import LeaseNotFoundError
from cellsched.cellstate.keys import CellKeys
from cellsched.cellstate.model import JobClass
from cellsched.cellstate.store import Put
from cellsched.cellstate.submission import submit_jobs
from tests.cellfactory import make_cell, make_job


def _assert_refused(store, key: str, lease: int) -> None:
    before = store.current_revision()
    with pytest.raises(LeaseNotFoundError):
        store.put(key, b"1", lease=lease)
    with pytest.raises(LeaseNotFoundError):  # a multi-op txn is refused whole
        store.txn([], [Put(key + "-plain", b"1"), Put(key, b"1", lease)])
    assert store.current_revision() == before
    assert store.get(key) is None and store.get(key + "-plain") is None


def test_put_with_revoked_lease(store):
    lease = store.grant_lease(30)
    store.revoke_lease(lease)
    _assert_refused(store, "/x/a", lease)


def test_put_with_expired_lease(store):
    lease = store.grant_lease(1)
    store.put("/x/sentinel", b"s", lease)
    deadline = time.monotonic() + 8
    while store.get("/x/sentinel") is not None and time.monotonic() < deadline:
        time.sleep(0.1)  # the sentinel goes when the store has expired the lease
    assert store.get("/x/sentinel") is None
    _assert_refused(store, "/x/b", lease)


def test_claim_jobs_with_revoked_lease(store):
    keys: CellKeys = make_cell(store, 1, cell="c5")
    submit_jobs(store, keys, [make_job("j1", 1)], now=0.0)
    before = store.current_revision()
    lease = store.grant_lease(30)
    store.revoke_lease(lease)
    with pytest.raises(LeaseNotFoundError):
        claim_jobs(store, keys, JobClass.BATCH, lease, "a", limit=1)
    assert store.current_revision() == before
    assert store.get_prefix(keys.claims_prefix)[0] == [] and claimed_jobs(store, keys) == {}
