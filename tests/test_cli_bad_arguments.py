"""Bad command-line values are refused by name, with exit status 2, before anything starts.

Before: `cellsched api --port 99999` printed an address and hung, `--audit-chains -3` served
with no audit at all, `--max-body-bytes -1` served and refused every body, `--cell a/b` died
in a traceback, and `cellsched demo-engine --jobs -3` replayed all but the last three jobs."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys

import httpx
import pytest

from cellsched.cellstate.errors import InvalidInputError
from cellsched.cellstate.keys import CellKeys
from tests.apiserver import wait_for

REFUSED = [
    (["api", "--port", "99999"], "--port", "0..65535"),
    (["api", "--port", "-1"], "--port", "0..65535"),
    (["api", "--max-body-bytes", "-1"], "--max-body-bytes", "at least 1"),
    (["api", "--audit-chains", "-3"], "--audit-chains", "at least 0"),
    (["api", "--burst", "0"], "--burst", "at least 1"),
    (["api", "--rate", "nan"], "--rate", "above 0"),
    (["api", "--rate", "-2"], "--rate", "above 0"),
    (["api", "--cell", "a/b"], "--cell", "not a cell name"),
    (["api", "--cell", ""], "--cell", "not a cell name"),
    (["demo", "--horizon", "0"], "--horizon", "above 0"),
    (["demo-engine", "--jobs", "-3"], "--jobs", "at least 1"),
    (["demo-engine", "--jobs", "three"], "--jobs", "not a whole number"),
    (["up", "--gpu", "-1"], "--gpu", "at least 0"),
    (["check", "--etcd", "127.0.0.1:1", "--cell", "x/y"], "--cell", "not a cell name"),
    (["jobs", "--limit", "0"], "--limit", "at least 1"),
    (["audit", "verify", "--cell", "../etc"], "--cell", "not a cell name"),
]


def cellsched(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cellsched.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "CELLSCHED_API": "http://127.0.0.1:1"})


@pytest.mark.parametrize(("args", "name", "reason"), REFUSED, ids=[" ".join(a) for a, _, _ in REFUSED])
def test_a_bad_value_is_refused_by_name(args, name, reason):
    run = cellsched(*args)
    assert run.returncode == 2, (run.stdout, run.stderr)
    assert f"argument {name}:" in run.stderr and reason in run.stderr, run.stderr
    assert "Traceback" not in run.stderr and "serving" not in run.stderr


def test_a_cell_name_that_would_nest_keys_is_refused_by_the_key_schema():
    for bad in ("a/b", "", "-x", "x" * 64, "a b", "ä"):
        with pytest.raises(InvalidInputError, match="cell name"):
            CellKeys(bad)
    for good in ("cell", "t", "stress7", "demo-api", "a.b_c", "x" * 63):
        assert CellKeys(good).root == f"/{good}/"


def test_a_port_in_use_or_an_unknown_host_is_an_error_before_anything_starts(tmp_path):
    (tmp_path / "tokens").write_text("operator:op:" + "s" * 32 + "\n")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        run = cellsched("api", "--tokens", str(tmp_path / "tokens"), "--port", str(port))
    assert run.returncode == 2 and f"cannot listen on 127.0.0.1:{port}" in run.stderr, run.stderr
    assert "serving" not in run.stderr
    run = cellsched("api", "--tokens", str(tmp_path / "tokens"), "--host", "999.1.1.1", "--port", "8080")
    assert run.returncode == 2 and "cannot listen on 999.1.1.1:8080" in run.stderr, run.stderr


def test_port_zero_serves_on_the_free_port_it_prints(tmp_path):
    (tmp_path / "tokens").write_text("operator:op:" + "s" * 32 + "\n")
    log = tmp_path / "api.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "cellsched.cli", "api", "--tokens", str(tmp_path / "tokens"),
                                 "--port", "0", "--schedulers", "off"], stdout=out, stderr=subprocess.STDOUT)
    try:
        def printed_port():
            assert proc.poll() is None, log.read_text()
            found = re.search(r"serving cell 'cell' on http://127\.0\.0\.1:(\d+) ", log.read_text())
            return int(found.group(1)) if found else None

        port = wait_for(printed_port, "the serving line")
        assert port not in (0, 8080)

        def ready():
            try:
                return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(ready, f"the API ready on the printed port {port}")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert "Traceback" not in log.read_text()

