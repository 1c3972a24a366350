#!/usr/bin/env bash
# import-linter walks the package on disk, but the top-level folders only become
# `cellsched.<name>` through setuptools' package-dir mapping. tools/stage.py builds that
# layout as symlinks under build/stage (the same tree mypy reads); lint it from there.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
stage=$("$repo/.venv/bin/python" tools/stage.py)
# Run from the stage: import-linter puts the working directory first on sys.path.
cd "$stage" && PYTHONPATH="$stage" "$repo/.venv/bin/lint-imports" --config "$repo/pyproject.toml" --no-cache
