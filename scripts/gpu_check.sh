#!/usr/bin/env bash
# GPU check: on a CUDA machine, correctness against float64 on the GPU, then a short CUDA sweep
# (fwd and fwd_bwd, float16 and bfloat16, every variant) and its status table. Under 5 minutes.
# Usage: bash scripts/gpu_check.sh            (uses `python3`; set PYTHON to pick another)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
if ! "$PY" -c "import harness, torch" 2>/dev/null; then
  # A CUDA machine brings its own CUDA torch; install only the project around it.
  "$PY" -m pip install --quiet -e '.[test]'
fi
"$PY" - <<'PY'
import torch
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, device: "
      f"{torch.cuda.get_device_name() if torch.cuda.is_available() else 'NONE'}")
PY
"$PY" -m harness list
echo "== attnbench check --device cuda"
rc=0
timeout 150 "$PY" -m harness check --device cuda || rc=$?
echo "== short CUDA sweep"
out="results/gpu-check-$(date -u +%Y%m%dT%H%M%SZ)"
timeout 150 "$PY" -m harness sweep --preset gpu --seq-lens 1024,4096 --heads 8 --batch 1 --head-dims 64 \
  --budget-s 0.05 --timeout-s 60 --out "$out" --quiet || rc=$?
"$PY" -m harness show "$out" --all || rc=$?
exit $rc
