"""The stores a run goes through: the embedded store, or a 1- or 3-member etcd started
for the run (its members' write counters and CPU are read from etcd and /proc)."""

from __future__ import annotations

import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass, field

from cellsched.cellstate.store import CellStore, StoreLimits
from cellsched.cellstate.store.memory import MemoryStore
from cellsched.loadtests.etcd_process import etcd_binary
from cellsched.loadtests.proc_cpu import processes_cpu_s

from .workload import BenchmarkError


@dataclass
class Backend:
    name: str  # memory | etcd-1 | etcd-3
    endpoints: str | None = None  # what scheduler clients connect to
    pids: list[int] = field(default_factory=list)  # the etcd members'
    memory: MemoryStore | None = None
    host_name: str | None = None  # the memory store hosted in its Ray actor (runners.hosted_memory)
    host_pids: list[int] = field(default_factory=list)  # that actor's process

    def connect(self) -> CellStore:
        """A new client (etcd, or the hosted memory store), or the one shared embedded store (memory)."""
        if self.memory is not None:
            return self.memory
        if self.host_name is not None:
            from cellsched.schedulers import ray_actors

            return ray_actors.StoreSpec(host_name=self.host_name).connect()
        if self.endpoints is None:
            raise BenchmarkError(f"backend {self.name}: neither an embedded store nor etcd endpoints")
        from cellsched.cellstate.store.etcd import EtcdStore

        return EtcdStore(self.endpoints)

    def writes(self) -> int | None:
        """Keys put or deleted so far, by etcd's own counters (every member applies every write)."""
        if self.endpoints is None:
            return None
        ep = self.endpoints.split(",")[0]
        with urllib.request.urlopen(f"http://{ep}/metrics", timeout=5) as r:
            text = r.read().decode()
        return sum(int(float(line.split()[1])) for line in text.splitlines()
                   if line.startswith(("etcd_mvcc_put_total ", "etcd_mvcc_delete_total ")))

    def cpu_s(self) -> float:
        """CPU seconds (user + system) the etcd members have used so far."""
        return processes_cpu_s(self.pids)

    def host_cpu_s(self) -> float:
        """CPU seconds the memory store's Ray actor has used so far (0 without one)."""
        return processes_cpu_s(self.host_pids)


@contextmanager
def open_backend(name: str, clients: str = "leader"):
    if name == "memory":
        yield Backend(name, memory=MemoryStore(StoreLimits()))
        return
    from cellsched.loadtests.etcd_process import start_etcd_cluster

    cluster = start_etcd_cluster(int(name.split("-")[1]))
    try:
        endpoints = cluster.leader().endpoint if clients == "leader" else cluster.endpoints
        yield Backend(name, endpoints, [m.process.pid for m in cluster.members if m.process is not None])
    finally:
        # SIGKILL, by PID: a SIGTERMed 3-member cluster spends ~5 s on its last member.
        for m in cluster.members:
            cluster.kill(m)
        cluster.stop()


def etcd_available() -> bool:
    return etcd_binary() is not None
