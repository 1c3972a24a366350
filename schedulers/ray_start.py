"""Starting a local Ray instance that starts every time: two retries, each after a pause and
with the cause logged.

Why a local start fails at all (docs/architecture.md,
"Environment facts the code depends on"): ``include_dashboard=False`` does not keep Ray's
dashboard process from starting.
Ray's head node always runs ``dashboard/dashboard.py`` as its API server and only loads
fewer modules (``--modules-to-load=UsageStatsHead --disable-frontend``); every raylet also
starts a dashboard agent and a runtime-env agent. On a small, shared machine this
cold start of half a dozen Python processes can outrun Ray's fixed 30 s wait for the raylet
to register ("The current node timed out during startup"); a dashboard process that
aborts (return code -6) is logged, not raised, when the dashboard is not asked for.

One retry was not enough (a benchmark's start failed twice in a row, right after an earlier
Ray instance of the same process had shut down and its processes were still exiting): a retry
now waits first (RETRY_PAUSE_S times the attempt's number), so the start it repeats does not
race the same spell of load, and a third attempt follows a second failure.

This module does not import Ray (only schedulers/ray_actors.py does): it retries the start
function it is given, after logging the cause (the exception and the tail of the
session's raylet and dashboard logs) and killing, by PID, the Ray processes the failed
attempt left behind (children of this process whose command line names ray).
"""

from __future__ import annotations

import logging
import os
import signal
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

log = logging.getLogger("cellsched.ray")

T = TypeVar("T")
START_ATTEMPTS = 3  # the first start, and two retries
RETRY_PAUSE_S = 5.0  # before retry k (1, 2): k times this
LOG_FILES = ("raylet.out", "raylet.err", "dashboard.err", "dashboard.log", "gcs_server.out")
TAIL_LINES = 5


def start_with_retry(start: Callable[[], T], what: str, attempts: int = START_ATTEMPTS,
                     pause_s: float = RETRY_PAUSE_S, sleep: Callable[[float], None] = time.sleep) -> T:
    """``start()``, retried on failure up to ``attempts`` times in all, retry k after
    ``k * pause_s`` seconds. Argument errors (TypeError, ValueError) are not retried: a
    second try would fail the same way."""
    attempt = 1
    while True:
        before = descendants(os.getpid())
        try:
            return start()
        except (TypeError, ValueError):
            raise
        except Exception as exc:
            if attempt >= attempts:
                log.error("%s failed on attempt %d of %d: %s", what, attempt, attempts, startup_cause(exc))
                raise
            log.warning("%s failed on attempt %d of %d, retrying: %s", what, attempt, attempts, startup_cause(exc))
            stopped = stop_leftovers(before)
            if stopped:
                log.warning("%s: stopped %d process(es) the failed attempt left: pids %s", what, len(stopped), stopped)
            sleep(attempt * pause_s)
        attempt += 1


def startup_cause(exc: BaseException) -> str:
    """The exception and the last lines of the newest Ray session's logs that exist."""
    parts = [f"{type(exc).__name__}: {exc}".strip()]
    logs = session_logs()
    for name in LOG_FILES:
        path = logs / name if logs else None
        if path is None or not path.is_file():
            continue
        try:
            lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()][-TAIL_LINES:]
        except OSError:
            continue
        if lines:
            parts.append(f"{path}:\n  " + "\n  ".join(lines))
    return "\n".join(parts)


def session_logs() -> Path | None:
    """Ray's newest session log folder: $RAY_TMPDIR/ray/session_latest/logs (Ray's own rule)."""
    root = Path(os.environ.get("RAY_TMPDIR") or tempfile.gettempdir()) / "ray" / "session_latest" / "logs"
    return root if root.is_dir() else None


def descendants(pid: int) -> set[int]:
    """Every live descendant of ``pid``, read from /proc (empty where /proc is missing)."""
    children: dict[int, list[int]] = {}
    try:
        entries = [int(e) for e in os.listdir("/proc") if e.isdigit()]
    except OSError:
        return set()
    for p in entries:
        try:
            # The field after the command name in parentheses: state, then the parent's pid.
            ppid = int(Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(p)
    out: set[int] = set()
    todo = [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            if c not in out:
                out.add(c)
                todo.append(c)
    return out


def stop_leftovers(before: set[int]) -> list[int]:
    """SIGKILL, by PID, the Ray processes started since ``before`` was taken: descendants
    of this process whose command line names ray. Returns their PIDs."""
    stopped = []
    for pid in sorted(descendants(os.getpid()) - before):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if b"ray" not in cmdline:
            continue
        try:
            os.kill(pid, signal.SIGKILL)
            stopped.append(pid)
        except ProcessLookupError:
            pass
    return stopped
