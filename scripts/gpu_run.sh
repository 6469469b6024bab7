#!/usr/bin/env bash
# One prepared command for a lent GPU machine (see benchmarks/README.md and docs/gpu.md).
# Usage there:  bash scripts/gpu_run.sh bench|pretrain     (results under $OUT)
# Prepare here first: `make gpu-wheels` (diffusers travels as a wheel; carry .whl).
set -euo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD:/tmp/site"
OUT=${OUT:-outputs/gpu}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
case "${1:-}" in
  bench)  # issue 4: the side-by-side table, then the optimisations one by one
    python3 benchmarks/train_step.py --scale sd15 --k auto --out "$OUT/bench" 2>&1 | tee "$OUT/bench.log"
    python3 benchmarks/train_step.py --scale sd15 --ablate --out "$OUT/ablate" 2>&1 | tee "$OUT/ablate.log" ;;
  pretrain)  # issue 6: the world model in bf16 with large batches, then its report in words
    python3 -m invrev.cli world pretrain --out "$OUT/world" --minutes "${MINUTES:-7}" --batch-size 512 --learning-rate 1e-3 2>&1 | tail -5
    python3 -m invrev.cli world report --model "$OUT/world/model" | tee "$OUT/report.md"
    rm -f "$OUT/world/checkpoint.pt" ;;
  *) echo "usage: bash scripts/gpu_run.sh bench|pretrain" >&2; exit 2 ;;
esac
