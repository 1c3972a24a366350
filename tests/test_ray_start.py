"""Local Ray starts that start every time (schedulers/ray_start.py): two retries on a failed
start, each after a growing pause, the cause logged with the tail of Ray's session logs, and the processes the failed
attempt left behind stopped by PID. The real start path runs in every Ray test (the
session's ray_cluster fixture goes through ray_actors.local_cluster)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest

from cellsched.schedulers import ray_start

TIMEOUT_MESSAGE = ("The current node timed out during startup. This could happen because some of the raylet "
                   "failed to startup or the GCS has become overloaded.")


def fake_session(tmp_path, monkeypatch):
    logs = tmp_path / "ray" / "session_latest" / "logs"
    logs.mkdir(parents=True)
    (logs / "dashboard.err").write_text("starting\nFatal Python error: Aborted\n")
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))
    return logs


def test_a_timed_out_start_is_retried_after_a_pause_with_its_cause_logged(tmp_path, monkeypatch, caplog):
    fake_session(tmp_path, monkeypatch)
    leftovers: list[subprocess.Popen] = []
    calls = []
    pauses: list[float] = []

    def start():
        calls.append(1)
        if len(calls) == 1:
            # What a failed start leaves: a process of ours whose command line names ray.
            leftovers.append(subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", "fake-raylet"]))
            raise Exception(TIMEOUT_MESSAGE)
        return "started"

    with caplog.at_level(logging.WARNING, logger="cellsched.ray"):
        assert ray_start.start_with_retry(start, "local Ray start", sleep=pauses.append) == "started"
    assert len(calls) == 2
    assert pauses == [ray_start.RETRY_PAUSE_S]
    text = caplog.text
    assert "attempt 1 of 3, retrying" in text and "timed out during startup" in text
    assert "Fatal Python error: Aborted" in text  # the dashboard's own last words
    assert leftovers[0].wait(timeout=10) == -9  # stopped by PID before the retry
    assert f"pids [{leftovers[0].pid}]" in text


def test_a_second_failure_gets_a_longer_pause_and_a_third_attempt(tmp_path, monkeypatch):
    fake_session(tmp_path, monkeypatch)
    calls = []
    pauses: list[float] = []

    def start():
        calls.append(1)
        if len(calls) < 3:
            raise RuntimeError(TIMEOUT_MESSAGE)
        return "started"

    assert ray_start.start_with_retry(start, "local Ray start", pause_s=2.0, sleep=pauses.append) == "started"
    assert len(calls) == 3
    assert pauses == [2.0, 4.0]


def test_a_start_that_fails_every_time_raises_the_last_error(tmp_path, monkeypatch, caplog):
    fake_session(tmp_path, monkeypatch)
    calls = []

    def start():
        calls.append(1)
        raise RuntimeError(f"attempt {len(calls)}: {TIMEOUT_MESSAGE}")

    with caplog.at_level(logging.WARNING, logger="cellsched.ray"), pytest.raises(RuntimeError, match="attempt 3"):
        ray_start.start_with_retry(start, "local Ray start", sleep=lambda s: None)
    assert len(calls) == 3
    assert "failed on attempt 3 of 3" in caplog.text


def test_argument_errors_are_not_retried():
    calls = []

    def start():
        calls.append(1)
        raise ValueError("When connecting to an existing cluster, num_cpus and num_gpus must not be provided.")

    with pytest.raises(ValueError, match="num_cpus"):
        ray_start.start_with_retry(start, "local Ray start")
    assert calls == [1]


def test_processes_that_do_not_name_ray_are_left_alone():
    before = ray_start.descendants(os.getpid())
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", "etcd-like"])
    try:
        assert other.pid in ray_start.descendants(os.getpid())
        assert ray_start.stop_leftovers(before) == []
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()
