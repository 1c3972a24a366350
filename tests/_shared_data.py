"""Where tests find ../shared/data, the real workloads kept outside the repository.

Missing data skips a test with the reason, except in CI (CI=true), where it must be
there: a silent skip would let a data test stop running without anyone noticing.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ENV_VAR = "CELLSCHED_SHARED_DATA"
REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_data_dir(require: str | None = None) -> Path:
    """../shared/data from the repo root ($CELLSCHED_SHARED_DATA overrides).

    `require` names a path inside it that must exist too, e.g. "google2011".
    """
    override = os.environ.get(ENV_VAR)
    root = Path(override) if override else REPO_ROOT.parent / "shared" / "data"
    needed = root / require if require else root
    if not needed.exists():
        reason = f"shared data not found at {needed} (set {ENV_VAR} to point elsewhere)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}; CI must have it")
        pytest.skip(reason)
    return root
