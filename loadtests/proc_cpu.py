"""CPU seconds of this machine's processes and threads, read from Linux /proc: the benchmarks
count CPU next to wall time because two shared cores make wall time noisy."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path


def _stat_cpu_s(path: str) -> float:
    """User + system CPU seconds in a /proc stat file (fields 14 and 15; the command name in
    parentheses may hold spaces, so fields are counted after its closing one)."""
    fields = Path(path).read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def processes_cpu_s(pids: Iterable[int]) -> float:
    """CPU seconds these processes (every thread) have used so far; a process gone counts 0."""
    total = 0.0
    for pid in pids:
        try:
            total += _stat_cpu_s(f"/proc/{pid}/stat")
        except OSError:
            continue
    return total


def thread_cpu_s(pid: int) -> float:
    """CPU seconds of a process's main thread alone (the API's event loop)."""
    return _stat_cpu_s(f"/proc/{pid}/task/{pid}/stat")
