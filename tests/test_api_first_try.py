"""`cellsched api` with no token configuration: the embedded first try. It writes an
operator token to ~/.cellsched/token (mode 0600), never prints it, hosts the schedulers,
and the client commands find the token on their own. (--port only: 8080 may be taken.)"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import httpx

from cellsched.loadtests.etcd_process import free_ports
from tests.apiserver import machines_body, wait_for


def test_first_try_serves_the_embedded_cell_with_a_private_token(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("CELLSCHED_API_TOKENS", "CELLSCHED_TOKEN")}
    env["HOME"] = str(home)
    port = free_ports(1)[0]
    log = tmp_path / "api.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "cellsched.cli", "api", "--port", str(port)], stdout=out,
                                stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        def ready():
            assert proc.poll() is None, log.read_text()
            try:
                return httpx.get(base + "/readyz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(ready, "the first-try API ready")
        token_file = home / ".cellsched" / "token"
        secret = token_file.read_text().strip()
        assert len(secret) >= 32 and stat.S_IMODE(token_file.stat().st_mode) == 0o600
        headers = {"Authorization": f"Bearer {secret}"}
        assert httpx.get(base + "/v1/jobs").status_code == 401
        assert httpx.post(base + "/v1/machines", json=machines_body("m1"), headers=headers).status_code == 201
        client_env = {**env, "CELLSCHED_API": base}
        job = tmp_path / "j.json"
        job.write_text(json.dumps({"id": "first", "groups": [{"name": "w", "resources": {"cpu": "100m"}}]}))
        sub = subprocess.run([sys.executable, "-m", "cellsched.cli", "submit", str(job)], capture_output=True,
                             text=True, env=client_env, timeout=60)
        assert sub.returncode == 0, sub.stderr

        def placed():
            out = subprocess.run([sys.executable, "-m", "cellsched.cli", "job", "first", "--json"],
                                 capture_output=True, text=True, env=client_env, timeout=60)
            return json.loads(out.stdout)["status"] == "placed"

        wait_for(placed, "the first job placed by the hosted schedulers", every=0.5)
        summary = httpx.get(base + "/v1/cell", headers=headers).json()
        assert summary["schedulers"]["in_process"] == 3
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert secret not in log.read_text() and str(token_file) in log.read_text()
