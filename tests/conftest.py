"""Shared fixtures: real etcd servers on free loopback ports, and both store backends."""

from __future__ import annotations

import os

import pytest

from cellsched.cellstate.etcd_process import etcd_binary, start_etcd_cluster
from cellsched.cellstate.memory_store import MemoryStore
from cellsched.cellstate.store import StoreLimits


def require_etcd() -> None:
    if etcd_binary() is None:
        msg = "etcd server not installed (make test installs Debian's etcd-server)"
        if os.environ.get("CI") == "true":
            pytest.fail(msg)
        pytest.skip(msg)


@pytest.fixture
def etcd_member():
    require_etcd()
    cluster = start_etcd_cluster(1)
    yield cluster
    cluster.stop()


@pytest.fixture
def etcd_three():
    require_etcd()
    cluster = start_etcd_cluster(3)
    yield cluster
    cluster.stop()


@pytest.fixture(params=["memory", "etcd"])
def store(request):
    """One contract, two backends: every test using this runs against both."""
    if request.param == "memory":
        s = MemoryStore(StoreLimits())
        yield s
        s.close()
        return
    require_etcd()
    from cellsched.cellstate.etcd_store import EtcdStore

    cluster = start_etcd_cluster(1)
    s = EtcdStore(cluster.endpoints, StoreLimits())
    yield s
    s.close()
    cluster.stop()
