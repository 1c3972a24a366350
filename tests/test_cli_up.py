"""`cellsched up` deploys named scheduler actors onto an existing Ray cluster."""

from __future__ import annotations

import subprocess
import sys

import pytest

from cellsched.schedulers import ray_actors


@pytest.mark.ray
@pytest.mark.etcd
def test_cli_up_deploys_detached_schedulers_on_existing_cluster(ray_cluster, etcd_member):
    out = subprocess.run([sys.executable, "-m", "cellsched.cli", "up", "--ray-address", ray_cluster.address,
                          "--etcd", etcd_member.endpoints, "--cell", "upcell", "--batch", "1", "--service", "1",
                          "--gpu", "0"], capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "started upcell-batch-0" in out.stdout and "started upcell-service-0" in out.stdout
    for name in ("upcell-batch-0", "upcell-service-0"):
        actor = ray_actors.get_actor(name)
        status = ray_actors.get(actor.stop.remote(), timeout=60)
        assert status["error"] is None
        ray_actors.kill_actor(actor, no_restart=True)


def test_cli_up_refuses_bad_arguments():
    out = subprocess.run([sys.executable, "-m", "cellsched.cli", "up", "--etcd", "nohost"], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 2 and "host:port" in out.stderr
    out = subprocess.run([sys.executable, "-m", "cellsched.cli", "up", "--batch", "0", "--service", "0", "--gpu",
                          "0"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "at least one scheduler" in out.stderr
