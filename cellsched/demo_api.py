"""`make demo` through the REST API: the API served in the demo's process, on the store the
scheduler actors use (the embedded store hosted in its Ray actor), and a submitter that
sends the replay's jobs to it over HTTP (POST /v1/jobs/bulk) instead of into the store.

The operator token is the first-try one of `cellsched api` (a private file, never
printed), so the `cellsched` client commands the demo suggests work while it runs.
"""

from __future__ import annotations

import socket
import threading
import time

import httpx

from cellsched.cellstate.errors import StoreUnavailableError
from cellsched.cellstate.model import Job, TransactionMode
from cellsched.cellstate.submission import SubmitResult

BULK_LIMIT = 500  # jobs per bulk request (the API takes up to 1,000)


def job_body(job: Job) -> dict:
    """The API's JSON form of a job (base units written with their unit: milli-CPU, MiB)."""
    return {
        "id": job.id, "class": job.job_class.value, "priority": job.priority, "max_failures": job.max_failures,
        "mode": "gang" if job.mode is TransactionMode.ALL_OR_NOTHING else "incremental",
        "groups": [{"name": g.name, "count": g.count, "labels": dict(g.labels),
                    "different_machines": g.different_machines,
                    "resources": {"cpu": f"{g.request[0]}m", "memory": f"{g.request[1]}Mi", "gpu": g.request[2]}}
                   for g in job.groups],
    }


class HttpSubmitter:
    """Submits jobs over HTTP; the replay driver's `submit` (loadtests.replay.ReplayDriver).
    A transport error or a 5xx raises StoreUnavailableError, so the driver sends those jobs
    again (a job already created comes back refused as existing, and counts as accepted)."""

    def __init__(self, base: str, token: str):
        self.client = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=60)
        self.requests = 0

    def __call__(self, jobs: list[Job], now: float) -> SubmitResult:
        out = SubmitResult()
        for start in range(0, len(jobs), BULK_LIMIT):
            body = {"jobs": [job_body(j) for j in jobs[start:start + BULK_LIMIT]]}
            try:
                resp = self.client.post("/v1/jobs/bulk", json=body)
            except httpx.HTTPError as exc:
                raise StoreUnavailableError(f"POST /v1/jobs/bulk: {exc}") from None
            self.requests += 1
            if resp.status_code >= 500:
                raise StoreUnavailableError(f"POST /v1/jobs/bulk: HTTP {resp.status_code}")
            if resp.status_code != 200:
                reason = resp.json().get("detail", resp.text[:200])
                out.rejected.update({j["id"]: f"HTTP {resp.status_code}: {reason}" for j in body["jobs"]})
                continue
            for r in resp.json()["results"]:
                if r["created"]:
                    out.accepted.append(r["id"])
                else:
                    out.rejected[r["id"]] = r["reason"]
        return out

    def close(self) -> None:
        self.client.close()


class ApiThread:
    """`create_app` served by uvicorn (uvloop, httptools) on a thread of this process."""

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0):
        import uvicorn

        self.host = host
        self.port = port or _free_port(host)
        config = uvicorn.Config(app, host=host, port=self.port, loop="uvloop", http="httptools",
                                log_level="warning", access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="demo-api", daemon=True)

    @property
    def base(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout_s: float = 30.0) -> None:
        self.thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise StoreUnavailableError(f"the demo's API did not start on {self.base}")
            time.sleep(0.05)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]
