"""The `cellsched` command through real subprocesses: demo and check."""

from __future__ import annotations

import subprocess
import sys

from cellsched.cellstate.store.etcd import EtcdStore
from tests.cellfactory import make_cell


def run_cli(*args, timeout=180):
    return subprocess.run([sys.executable, "-m", "cellsched.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_cli_demo_runs_on_embedded_store():
    out = run_cli("demo-engine", "--jobs", "150")
    assert out.returncode == 0, out.stderr
    assert "invariant check              ok" in out.stdout
    placed = int(next(line for line in out.stdout.splitlines() if line.startswith("tasks placed")).split()[-1])
    assert placed > 0


def test_cli_check_reports_violations_and_exit_code(etcd_member):
    store = EtcdStore(etcd_member.endpoints)
    keys = make_cell(store, 2, cell="cli")
    ok = run_cli("check", "--etcd", etcd_member.endpoints, "--cell", "cli")
    assert ok.returncode == 0 and "2 machines" in ok.stdout
    store.put(keys.alloc("m1"), b'{"v":1,"u":[999999,0,0],"t":{}}')  # used without tasks, over capacity
    bad = run_cli("check", "--etcd", etcd_member.endpoints, "--cell", "cli")
    assert bad.returncode == 1
    assert "overcommitted" in bad.stdout and "sum of bound requests" in bad.stdout
    store.close()


def test_cli_check_bad_endpoint_is_a_clear_error():
    out = run_cli("check", "--etcd", "nonsense")
    assert out.returncode == 2 and "host:port" in out.stderr
