"""A real `cellsched api` (uvicorn, uvloop, httptools) in a subprocess on a free loopback
port, for the API tests. Stopped by its PID."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from cellsched.loadtests.etcd_process import free_ports

TOKENS = {"operator": "operator-secret-0000000001", "submitter": "submitter-secret-000000001",
          "reader": "reader-secret-00000000001"}


def write_tokens(path: Path) -> Path:
    path.write_text("# role:name:secret\n" + "".join(f"{r}:{r}-1:{s}\n" for r, s in TOKENS.items()))
    return path


@dataclass
class ApiServer:
    proc: subprocess.Popen
    base: str
    log: Path

    def client(self, role: str | None = "operator", token: str | None = None) -> httpx.Client:
        headers = {}
        secret = token if token is not None else (TOKENS[role] if role else None)
        if secret is not None:
            headers["Authorization"] = f"Bearer {secret}"
        return httpx.Client(base_url=self.base, headers=headers, timeout=30)

    def output(self) -> str:
        return self.log.read_text() if self.log.exists() else ""

    def stop(self, kill: bool = False) -> None:
        stop_process(self.proc, kill)


def stop_process(proc: subprocess.Popen, kill: bool = False) -> None:
    """SIGTERM (or SIGKILL), by this test's own PID; SIGKILL after 15 s if it lingers."""
    if proc.poll() is None:
        if kill:
            proc.kill()
        else:
            proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)


def start_api(tmp: Path, etcd: str | None = None, *extra: str, cell: str = "t",
              env: dict[str, str] | None = None) -> ApiServer:
    """`env`: variables added to this process's for the server (its OTEL_* tracing, say)."""
    port = free_ports(1)[0]
    tokens = write_tokens(tmp / f"tokens-{port}.txt")
    log = tmp / f"api-{port}.log"
    cmd = [sys.executable, "-m", "cellsched.cli", "api", "--port", str(port), "--tokens", str(tokens), "--cell", cell,
           *(["--etcd", etcd] if etcd else []), *extra]
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    server = ApiServer(proc, f"http://127.0.0.1:{port}", log)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"cellsched api exited with {proc.returncode}:\n{server.output()}")
        try:
            if httpx.get(server.base + "/readyz", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    server.stop(kill=True)
    raise RuntimeError(f"cellsched api did not become ready:\n{server.output()}")


def wait_for(fn, what: str, timeout: float = 60.0, every: float = 0.1):
    """Poll fn() until it returns something truthy; fail naming `what` (a bound, not a timing)."""
    deadline = time.monotonic() + timeout
    while True:
        got = fn()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(every)


def job_body(jid: str | None = None, count: int = 2, cpu: str = "500m", memory: str = "1Gi", **more) -> dict:
    body = {"groups": [{"name": "w", "count": count, "resources": {"cpu": cpu, "memory": memory}}], **more}
    if jid:
        body["id"] = jid
    return body


def machines_body(*ids: str, cpu: str = "4", memory: str = "16Gi", **labels: str) -> dict:
    return {"machines": [{"id": m, "capacity": {"cpu": cpu, "memory": memory}, "labels": labels} for m in ids]}
