"""The Locust users of `loadtests.bench_api` (run by it as `locust -f` in a subprocess).

Read from the environment, so one file serves every phase:
- BENCH_API_MODE: "single" (POST /v1/jobs, one job), "bulk" (POST /v1/jobs/bulk,
  BENCH_API_BULK jobs) or "bare" (POST /submit of the bare-ceiling app);
- BENCH_API_TOKEN: the bearer token (never printed).

A 429 is counted apart (as its own request name), not as a failure: the bench sets the
token's rate limit above the offered load, so any 429 says the limit was hit after all.
"""

from __future__ import annotations

import json
import os

from locust import FastHttpUser, constant, task

MODE = os.environ.get("BENCH_API_MODE", "single")
BULK = int(os.environ.get("BENCH_API_BULK", "500"))
HEADERS = {"Authorization": f"Bearer {os.environ.get('BENCH_API_TOKEN', '')}",
           "Content-Type": "application/json"}


def job_body(jid: str) -> dict:
    """About 1 KB: two task groups with labels, human units, a priority and a class."""
    pad = "x" * 40
    return {
        "id": jid,
        "class": "batch",
        "priority": 5,
        "groups": [
            {"name": "frontend", "count": 1, "resources": {"cpu": "10m", "memory": "16Mi"},
             "labels": {f"team-{k}": f"{pad}{k}" for k in range(3)}},
            {"name": "worker", "count": 1, "resources": {"cpu": "10m", "memory": "16Mi"},
             "labels": {f"zone-{k}": f"{pad}{k}" for k in range(3)}},
        ],
    }


# A job's body as json.dumps writes it, cut at its id: a request's bodies are these bytes around
# fresh ids, the same bytes json.dumps would give, without encoding 500 dicts per bulk request
# (Locust shares the bench machine's cores with the API: its own CPU per job is reported apart).
_BEFORE_ID, _AFTER_ID = json.dumps(job_body("@ID@")).encode().split(b"@ID@")


def body_of(n: int | None = None) -> bytes:
    """One job's body (n None), or a bulk's of n jobs: json.dumps of job_body(id) with fresh ids."""
    ids = os.urandom(16 * (n or 1)).hex().encode()  # uuid4().hex's length and alphabet
    jobs = [_BEFORE_ID + ids[i:i + 32] + _AFTER_ID for i in range(0, len(ids), 32)]
    return jobs[0] if n is None else b'{"jobs": [' + b", ".join(jobs) + b"]}"


def _post(client, path: str, body: bytes, name: str) -> None:
    with client.post(path, data=body, headers=HEADERS, name=name, catch_response=True) as resp:
        if resp.status_code == 429:
            resp.request_meta["name"] = f"{name} (429)"
            resp.success()  # counted apart, under its own name
        elif resp.status_code not in (200, 201):
            resp.failure(f"HTTP {resp.status_code}: {resp.text[:200]}")
        elif MODE == "bulk":
            out = json.loads(resp.text)
            if out.get("refused"):
                bad = next(o for o in out["results"] if not o["created"])
                resp.failure(f"bulk: {out['refused']} jobs refused, first {bad}")


class ApiUser(FastHttpUser):
    wait_time = constant(0)

    @task
    def submit(self) -> None:
        if MODE == "bare":
            _post(self.client, "/submit", body_of(), "bare")
        elif MODE == "bulk":
            _post(self.client, "/v1/jobs/bulk", body_of(BULK), "bulk")
        else:
            _post(self.client, "/v1/jobs", body_of(), "single")
