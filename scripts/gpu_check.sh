#!/usr/bin/env bash
# GPU check (scripts/gpu_check.py --help states its target): on a CUDA machine, every variant
# against float64 on the GPU, then a short CUDA sweep, judged. Exit 0 only when nothing is wrong,
# erroring or unexpectedly unsupported; non-zero, with one line saying why, on a machine without CUDA.
# Usage: bash scripts/gpu_check.sh            (uses `python3`; set PYTHON to pick another)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
if ! "$PY" -c "import harness, torch" 2>/dev/null; then
  # A CUDA machine brings its own CUDA torch; install only the project around it.
  "$PY" -m pip install --quiet -e '.[test]'
fi
exec timeout 600 "$PY" scripts/gpu_check.py "$@"
