#!/usr/bin/env bash
# import-linter walks the package on disk, but the top-level folders only become
# `cellsched.<name>` through setuptools' package-dir mapping. Stage the installed
# layout in a temp dir (plain copies of the .py files) and lint that.
set -euo pipefail
cd "$(dirname "$0")/.."
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/cellsched"
cp cellsched/*.py "$stage/cellsched/"
for pkg in cellstate gpu schedulers api loadtests; do
  (cd "$pkg" && find . -name '*.py' -not -path '*/__pycache__/*' -exec install -D -m 644 {} "$stage/cellsched/$pkg/{}" \;)
done
# Run from the stage: import-linter puts the working directory first on sys.path.
repo=$(pwd)
cd "$stage" && PYTHONPATH="$stage" "$repo/.venv/bin/lint-imports" "$repo/pyproject.toml" --no-cache
