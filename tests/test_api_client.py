"""The `cellsched` client commands against a live API (a real uvicorn subprocess):
submit FILE, jobs, job, explain, cancel, machines, drain, each with and without --json."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.apiserver import TOKENS, machines_body, start_api, wait_for


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    server = start_api(tmp_path_factory.mktemp("client"), None)
    with server.client() as op:
        assert op.post("/v1/machines", json=machines_body("m1", "m2")).status_code == 201
    yield server
    server.stop()


def cli(api, *args, token="operator"):
    env = {**os.environ, "CELLSCHED_API": api.base, "CELLSCHED_TOKEN": TOKENS[token] if token else ""}
    return subprocess.run([sys.executable, "-m", "cellsched.cli", *args], capture_output=True, text=True,
                          timeout=120, env=env)


JOB_YAML = """\
id: cli-1
class: service
priority: 7
mode: incremental
groups:
  - name: web
    count: 2
    resources: {cpu: 500m, memory: 2Gi}
    labels: {}
  - name: db
    count: 1
    different_machines: true
    resources: {cpu: "1", memory: 512Mi}
"""


def test_submit_show_explain_cancel(api, tmp_path):
    f = tmp_path / "job.yaml"
    f.write_text(JOB_YAML)
    out = cli(api, "submit", str(f))
    assert out.returncode == 0, out.stderr
    assert "submitted cli-1" in out.stdout
    shown = json.loads(cli(api, "job", "cli-1", "--json").stdout)
    assert shown["class"] == "service" and shown["priority"] == 7
    assert shown["groups"][0]["request"]["human"] == {"cpu": "500m", "memory": "2Gi", "gpu": "0"}
    wait_for(lambda: json.loads(cli(api, "job", "cli-1", "--json").stdout)["status"] == "placed", "cli-1 placed",
             every=0.5)
    text = cli(api, "job", "cli-1").stdout
    assert "cli-1" in text and "placed" in text and "cli-1/0/0 -> m" in text
    listed = cli(api, "jobs", "--class", "service")
    assert listed.returncode == 0 and "cli-1" in listed.stdout
    assert json.loads(cli(api, "jobs", "--json").stdout)["items"]
    exp = cli(api, "explain", "cli-1")
    assert exp.returncode == 0 and "cli-1: placed" in exp.stdout and "not recorded" in exp.stdout
    again = cli(api, "submit", str(f))
    assert again.returncode == 1 and "HTTP 409" in again.stderr and "already exists" in again.stderr
    cancelled = cli(api, "cancel", "cli-1", "--json")
    assert json.loads(cancelled.stdout)["released_tasks"] == 3
    assert "already" in cli(api, "cancel", "cli-1").stdout


def test_bulk_file_and_json_file(api, tmp_path):
    f = tmp_path / "jobs.json"
    f.write_text(json.dumps([{"id": f"cli-b{i}", "groups": [{"name": "g", "resources": {"cpu": "250m"}}]}
                             for i in range(3)]))
    out = cli(api, "submit", str(f), "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["created"] == 3


def test_machines_and_drain(api):
    out = cli(api, "machines")
    assert out.returncode == 0 and "m1" in out.stdout and "up" in out.stdout
    drained = cli(api, "drain", "m2", "--json")
    assert json.loads(drained.stdout)["state"] == "draining"
    assert "draining" in cli(api, "machines").stdout
    assert cli(api, "drain", "nope").returncode == 1


def test_client_errors(api, tmp_path):
    denied = cli(api, "drain", "m1", token="reader")
    assert denied.returncode == 1 and "HTTP 403" in denied.stderr and TOKENS["reader"] not in denied.stderr
    missing = cli(api, "submit", str(tmp_path / "nope.yaml"))
    assert missing.returncode == 2 and "nope.yaml" in missing.stderr
    env = {**os.environ, "CELLSCHED_API": "http://127.0.0.1:9", "CELLSCHED_TOKEN": "x" * 20}
    down = subprocess.run([sys.executable, "-m", "cellsched.cli", "jobs"], capture_output=True, text=True, env=env,
                          timeout=60)
    assert down.returncode == 2 and "cannot reach the API" in down.stderr
