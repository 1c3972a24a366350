"""Start and stop real etcd servers on free loopback ports (tests, benchmarks, demos).

Processes are tracked and stopped by PID, never by name. Data dirs live under
/dev/shm when present (about 1.6x faster). Tuned heartbeat/election timeouts make a
member ready in about 0.1 s and an election after a leader kill take well under a second.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from cellsched.cellstate.errors import DataNotFoundError, StoreUnavailableError
from cellsched.cellstate.store import DEFAULT_MAX_TXN_OPS


def etcd_binary() -> str | None:
    return shutil.which("etcd")


def free_ports(n: int) -> list[int]:
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


@dataclass
class EtcdMember:
    name: str
    client_port: int
    peer_port: int
    data_dir: Path
    process: subprocess.Popen | None = None
    log_path: Path | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


@dataclass
class EtcdCluster:
    members: list[EtcdMember]
    root: Path
    max_txn_ops: int = DEFAULT_MAX_TXN_OPS
    extra_args: list[str] = field(default_factory=list)

    @property
    def endpoints(self) -> str:
        return ",".join(m.endpoint for m in self.members if m.alive)

    @property
    def all_endpoints(self) -> str:
        return ",".join(m.endpoint for m in self.members)

    def _args(self, m: EtcdMember, state: str) -> list[str]:
        initial = ",".join(f"{x.name}=http://127.0.0.1:{x.peer_port}" for x in self.members)
        return [
            etcd_binary() or "etcd", "--name", m.name, "--data-dir", str(m.data_dir),
            "--listen-client-urls", f"http://127.0.0.1:{m.client_port}",
            "--advertise-client-urls", f"http://127.0.0.1:{m.client_port}",
            "--listen-peer-urls", f"http://127.0.0.1:{m.peer_port}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{m.peer_port}",
            "--initial-cluster", initial, "--initial-cluster-state", state,
            "--initial-cluster-token", f"cellsched-{self.root.name}",
            "--heartbeat-interval", "10", "--election-timeout", "100",
            "--max-txn-ops", str(self.max_txn_ops), "--quota-backend-bytes", str(2 * 1024**3),
            "--log-level", "error", *self.extra_args,
        ]

    def start_member(self, m: EtcdMember, state: str = "new") -> None:
        m.log_path = self.root / f"{m.name}.log"
        log = open(m.log_path, "ab")
        # etcd reads every ETCD_* variable as a flag; hand it a clean environment.
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD_")}
        m.process = subprocess.Popen(self._args(m, state), stdout=log, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)
        log.close()

    def wait_healthy(self, timeout_s: float = 20.0) -> None:
        deadline = time.monotonic() + timeout_s
        pending = [m for m in self.members if m.alive]
        while pending:
            m = pending[0]
            if not m.alive:
                log = m.log_path.read_text()[-2000:] if m.log_path else ""
                raise StoreUnavailableError(f"etcd member {m.name} exited: {log}")
            try:
                with urllib.request.urlopen(f"http://{m.endpoint}/health", timeout=1) as r:
                    if b'"true"' in r.read():
                        pending.pop(0)
                        continue
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise StoreUnavailableError(f"etcd member {m.name} not healthy after {timeout_s}s")
            time.sleep(0.05)

    def leader(self, timeout_s: float = 15.0) -> EtcdMember:
        """The member that reports itself leader (via its /metrics is_leader gauge), asked
        again until `timeout_s`: on a loaded machine a member's /metrics can take over a
        second, and a slow heartbeat can start an election just after the members were
        healthy (one pass found no leader in a benchmark once)."""
        deadline = time.monotonic() + timeout_s
        while True:
            for m in self.members:
                if not m.alive:
                    continue
                try:
                    with urllib.request.urlopen(f"http://{m.endpoint}/metrics", timeout=2) as r:
                        if b"etcd_server_is_leader 1" in r.read():
                            return m
                except OSError:
                    continue
            if time.monotonic() > deadline:
                raise StoreUnavailableError(f"no etcd leader found within {timeout_s}s")
            time.sleep(0.1)

    def kill(self, m: EtcdMember, sig: int = signal.SIGKILL) -> None:
        if m.process is not None and m.process.poll() is None:
            os.kill(m.process.pid, sig)
            m.process.wait(timeout=10)

    def stop(self) -> None:
        for m in self.members:
            if m.process is not None and m.process.poll() is None:
                os.kill(m.process.pid, signal.SIGTERM)
        for m in self.members:
            if m.process is not None:
                try:
                    m.process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    os.kill(m.process.pid, signal.SIGKILL)
                    m.process.wait(timeout=5)
        shutil.rmtree(self.root, ignore_errors=True)


def start_etcd_cluster(members: int = 1, max_txn_ops: int = DEFAULT_MAX_TXN_OPS,
                       extra_args: list[str] | None = None) -> EtcdCluster:
    if etcd_binary() is None:
        raise DataNotFoundError("etcd is not installed (Debian: apt-get install etcd-server)")
    base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    root = Path(tempfile.mkdtemp(prefix="cellsched-etcd-", dir=base))
    ports = free_ports(2 * members)
    ms = [EtcdMember(f"m{i}", ports[2 * i], ports[2 * i + 1], root / f"m{i}") for i in range(members)]
    cluster = EtcdCluster(ms, root, max_txn_ops, list(extra_args or []))
    try:
        for m in ms:
            cluster.start_member(m)
        cluster.wait_healthy()
    except BaseException:
        cluster.stop()
        raise
    return cluster
