#!/usr/bin/env bash
# The one command to run on a GPU machine (NVIDIA GPU, CuPy, no network):
#   1. installs what it lacks from wheels kept beside the tree (.whl/, see --fetch),
#   2. runs the GPU tests (pytest -m gpu),
#   3. runs the GPU benchmarks (per-op overhead, training steps), engine beside PyTorch,
# each part under its own timeout, the whole under 6 minutes, printing as it goes.
#
#   scripts/gpu_check.sh            # on the GPU machine, from the repository root
#   scripts/gpu_check.sh --fetch    # here, with network: download the wheels into .whl/
#
# Output also lands in $OUT (when set) or ./gpu-check/, for benchmarks/RESULTS.md.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
WHEELS=.whl
NEEDS="numpy ml_dtypes safetensors pytest"

if [ "${1:-}" = "--fetch" ]; then
    mkdir -p "$WHEELS"
    for pkg in numpy ml_dtypes safetensors pytest iniconfig pluggy packaging; do
        "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
            --implementation cp --platform manylinux_2_28_x86_64 \
            --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
            --platform any -d "$WHEELS" "$pkg" || exit 1
    done
    ls -1 "$WHEELS"
    exit 0
fi

LOG=${OUT:-gpu-check}
mkdir -p "$LOG"
step() { printf '\n=== %s (%s) ===\n' "$1" "$(date -u +%H:%M:%S)"; }

step "environment"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
missing=""
for mod in $NEEDS cupy; do
    "$PY" -c "import $mod" 2>/dev/null || missing="$missing $mod"
done
if [ -n "$missing" ]; then
    echo "missing:$missing; installing from $WHEELS/"
    if ! ls "$WHEELS"/*.whl >/dev/null 2>&1; then
        echo "no wheels in $WHEELS/: run scripts/gpu_check.sh --fetch on a machine with network"
        exit 1
    fi
    "$PY" -m pip install -q --no-index --no-deps --no-compile --target /tmp/gpu-check-site \
        "$WHEELS"/*.whl || exit 1
    export PYTHONPATH=/tmp/gpu-check-site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
"$PY" - <<'PY'
import cupy, numpy, engine
print("python", __import__("sys").version.split()[0], "numpy", numpy.__version__,
      "cupy", cupy.__version__, "cuda devices", engine.cuda.device_count())
try:
    import torch
    print("torch", torch.__version__, "cuda", torch.cuda.is_available())
except ImportError:
    print("torch not installed: benchmarks run without PyTorch columns")
PY

status=0
step "GPU tests (limit 100 s)"
timeout 100 "$PY" -m pytest -q -m gpu -p no:cacheprovider tests 2>&1 | tee "$LOG/gpu-tests.txt"
rc=${PIPESTATUS[0]}
[ "$rc" -eq 0 ] || { echo "GPU tests failed (exit $rc)"; status=1; }

step "GPU benchmarks: per-op overhead (limit 45 s)"
timeout 45 "$PY" benchmarks/ops.py --device cuda --repeat 5 --number 500 2>&1 \
    | tee "$LOG/bench-ops-cuda.md"
rc=${PIPESTATUS[0]}
[ "$rc" -eq 0 ] || { echo "per-op benchmark failed (exit $rc)"; status=1; }

step "GPU benchmarks: training steps beside PyTorch (limit 190 s)"
timeout 190 "$PY" benchmarks/train.py --device cuda --steps 10 --repeats 3 2>&1 \
    | tee "$LOG/bench-train-cuda.md"
rc=${PIPESTATUS[0]}
[ "$rc" -eq 0 ] || { echo "training benchmark failed (exit $rc)"; status=1; }

step "done (exit $status)"
exit $status
