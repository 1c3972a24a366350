"""Shared fixtures: real etcd servers on free loopback ports, and both store backends."""

from __future__ import annotations

import os

import pytest

from cellsched.cellstate.store import StoreLimits
from cellsched.cellstate.store.memory import MemoryStore
from cellsched.loadtests.etcd_process import etcd_binary, start_etcd_cluster


def require_etcd() -> None:
    if etcd_binary() is None:
        msg = "etcd server not installed (make test installs Debian's etcd-server)"
        if os.environ.get("CI") == "true":
            pytest.fail(msg)
        pytest.skip(msg)


def _etcd(members: int):
    require_etcd()
    cluster = start_etcd_cluster(members)
    yield cluster
    cluster.stop()


@pytest.fixture
def etcd_member():
    yield from _etcd(1)


@pytest.fixture
def etcd_three():
    yield from _etcd(3)


@pytest.fixture(params=["memory", "etcd"])
def store(request):
    """One contract, two backends: every test using this runs against both."""
    if request.param == "memory":
        s = MemoryStore(StoreLimits())
        yield s
        s.close()
        return
    require_etcd()
    from cellsched.cellstate.store.etcd import EtcdStore

    cluster = start_etcd_cluster(1)
    s = EtcdStore(cluster.endpoints, StoreLimits())
    yield s
    s.close()
    cluster.stop()


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory):
    """One real Ray cluster for the whole session (ray.init costs ~4.5 s).

    Built with ray.cluster_utils.Cluster so tests can add and remove worker nodes; the
    head node alone is a normal local instance. Ray's own processes are stopped by
    cluster.shutdown() (by PID), never with `ray stop`.
    """
    os.environ["RAY_AUTH_MODE"] = "disabled"
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    os.environ["RAY_TMPDIR"] = str(tmp_path_factory.mktemp("ray"))
    from cellsched.schedulers import ray_actors

    cluster = ray_actors.local_cluster(num_cpus=2)  # one retry on a failed start, cause logged
    ray_actors.init_ray(cluster.address, num_cpus=None)
    yield cluster
    ray_actors.shutdown()
    cluster.shutdown()
