#!/usr/bin/env bash
# GPU check in one command, for a lent GPU machine (cupy, numpy, pytest, hypothesis
# preinstalled; no package registry): runs tests/gpu with the CuPy cases enabled, then
# the kernel benchmark. Installs nothing: it copies the package folders into a temp tree
# laid out as the installed `cellsched.` namespace and puts that on PYTHONPATH.
#
#   bash gpu/device_check.sh            # from the repository root
#   OUT=/some/dir bash gpu/device_check.sh   # also writes logs and bench JSON there
#   BENCH_ARGS=--quick bash gpu/device_check.sh   # small benchmark sizes
#
# Exit status: 0 when the tests pass, a GPU is usable and the benchmark ran.
set -uo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${OUT:-}"
PY="${PYTHON:-python3}"
case "$PY" in */*) PY="$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")" ;; esac  # survives the cd below
TREE="$(mktemp -d "${TMPDIR:-/tmp}/cellsched-gpu.XXXXXX")"
trap 'rm -rf "$TREE"' EXIT

# The installed layout: cellsched/{gpu,cellstate,...} as copies of the top-level folders.
mkdir -p "$TREE/cellsched" "$TREE/tests"
cp "$REPO/cellsched/__init__.py" "$TREE/cellsched/__init__.py"
for pkg in cellstate gpu; do
  cp -R "$REPO/$pkg" "$TREE/cellsched/$pkg"
done
cp -R "$REPO/loadtests" "$TREE/loadtests"
cp "$REPO/tests/__init__.py" "$TREE/tests/__init__.py"
cp -R "$REPO/tests/gpu" "$TREE/tests/gpu"
find "$TREE" -name __pycache__ -prune -exec rm -rf {} +
# A private pytest config: markers only, no plugins the machine may lack (pytest-timeout).
cat >"$TREE/pytest.ini" <<'INI'
[pytest]
testpaths = tests
markers =
    cupy: needs a usable CUDA GPU; skipped without one
    trace: needs ../shared/data
    etcd: needs a real etcd server
    ray: needs a real local Ray instance
filterwarnings = ignore::DeprecationWarning
INI
# The trace lives beside the repository, not beside the temp tree.
export CELLSCHED_SHARED_DATA="${CELLSCHED_SHARED_DATA:-$REPO/../shared/data}"
export PYTHONPATH="$TREE" PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
unset CELLSCHED_ARRAY_BACKEND
cd "$TREE" || exit 2

log() { if [ -n "$OUT" ]; then tee -a "$OUT/$1"; else cat; fi; }
[ -n "$OUT" ] && mkdir -p "$OUT"

echo "== environment" | log device_check.log
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | log device_check.log
"$PY" - <<'PYEOF' 2>&1 | log device_check.log
import numpy, sys
print("python", sys.version.split()[0], "numpy", numpy.__version__)
try:
    import cupy
    print("cupy", cupy.__version__, "is_available", cupy.cuda.is_available())
    print("device", cupy.cuda.runtime.getDeviceProperties(0)["name"].decode())
except Exception as exc:
    print("cupy unusable:", repr(exc))
from cellsched.gpu import cupy_usable
print("cellsched.gpu.cupy_usable()", cupy_usable())
import cellsched.gpu
print("cellsched.gpu from", cellsched.gpu.__file__)
PYEOF
"$PY" -c 'from cellsched.gpu import cupy_usable; raise SystemExit(0 if cupy_usable() else 1)'
gpu_ok=$?
[ $gpu_ok -eq 0 ] || echo "!! no usable GPU: the cupy tests will skip and the check fails" | log device_check.log

echo "== tests/gpu" | log device_check.log
timeout 420 "$PY" -m pytest -q -p no:cacheprovider -rs tests/gpu 2>&1 | log device_check.log
tests_rc=${PIPESTATUS[0]}

echo "== bench" | log device_check.log
timeout 300 "$PY" -m loadtests.bench_kernels --json ${BENCH_ARGS:-} 2>&1 | log bench.log
bench_rc=${PIPESTATUS[0]}
if [ -n "$OUT" ] && [ -f "$OUT/bench.log" ]; then tail -n 1 "$OUT/bench.log" >"$OUT/bench.json"; fi

echo "== summary: tests rc=$tests_rc bench rc=$bench_rc gpu_check rc=$gpu_ok" | log device_check.log
[ $tests_rc -eq 0 ] && [ $bench_rc -eq 0 ] && [ $gpu_ok -eq 0 ]
