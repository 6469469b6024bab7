#!/usr/bin/env bash
# One prepared command for a lent GPU machine (see benchmarks/README.md and docs/gpu.md).
# Usage there:  bash scripts/gpu_run.sh bench|pretrain|full     (results under $OUT)
# Prepare here first: `make gpu-wheels` (diffusers and papermill travel as wheels; carry .whl).
set -euo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD:/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
OUT=${OUT:-outputs/gpu}
mkdir -p "$OUT"
[ -n "${SKIP_INSTALL:-}" ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt" || true
case "${1:-}" in
  bench)  # issue 4: the side-by-side table, then the optimisations one by one
    python3 benchmarks/train_step.py --scale sd15 --k auto --out "$OUT/bench" 2>&1 | tee "$OUT/bench.log"
    python3 benchmarks/train_step.py --scale sd15 --ablate --out "$OUT/ablate" 2>&1 | tee "$OUT/ablate.log" ;;
  pretrain)  # issue 6: the world model in bf16 with large batches, then its report in words
    python3 -m invrev.cli world pretrain --out "$OUT/world" --minutes "${MINUTES:-7}" --batch-size 512 --learning-rate 1e-3 2>&1 | tail -5
    python3 -m invrev.cli world report --model "$OUT/world/model" | tee "$OUT/report.md"
    rm -f "$OUT/world/checkpoint.pt" ;;
  full)  # issue 3: pretrain the world model, ship it as the embedded default, then the whole batch on it
    # through papermill; the batch stops DEADLINE seconds after the start so that the record always comes back.
    logs=outputs/gpu_logs; mkdir -p "$logs"; cp "$OUT/gpu.txt" "$logs/"
    pack() {  # what the repository keeps, in parts the device returns (8 files of 16 MiB at most, 64 MiB in all):
      # the model, logs and compact run records first; the executed run notebooks only if they fit beside them
      tar czf /tmp/a.tgz --exclude checkpoint.pt --exclude run.ipynb data/world outputs/world_pretrain/pretrain_log.csv \
        outputs/world_pretrain/pretrain_summary.json "$logs" $(ls -d runs 2>/dev/null) || true
      split -b 15M /tmp/a.tgz "$OUT/a.tgz.part-"
      find runs -name run.ipynb 2>/dev/null | tar czf /tmp/b.tgz -T - || true
      if [ $(( $(stat -c %s /tmp/a.tgz) + $(stat -c %s /tmp/b.tgz) )) -lt $(( 62 * 1048576 )) ]; then
        split -b 15M /tmp/b.tgz "$OUT/b.tgz.part-"
      else echo "run notebooks left out: $(stat -c %s /tmp/b.tgz) bytes do not fit"; fi
      ls -l "$OUT"
    }
    trap pack EXIT
    python3 -m invrev.cli world pretrain --out outputs/world_pretrain --fresh --minutes "${MINUTES:-3.5}" \
      --batch-size "${BATCH:-512}" --learning-rate "${LR:-1e-3}" > "$logs/pretrain.log" 2>&1 || { tail -20 "$logs/pretrain.log"; exit 1; }
    tr '\r' '\n' < "$logs/pretrain.log" | grep -v '^ *$' | tail -3
    python3 -m invrev.cli world ship --source outputs/world_pretrain/model --prompts "${REPORT_PROMPTS:-20}" \
      --samples "${REPORT_SAMPLES:-4}" 2>&1 | grep -v "Loading" | tee "$logs/ship.log"
    echo "pretrained and shipped at ${SECONDS} s"
    left=$(( ${DEADLINE:-565} - SECONDS - 25 ))
    timeout "$left" python3 -m invrev.cli batch --experiments "${EXPERIMENTS:-experiments/full.yaml}" --runs runs \
      --joint "${JOINT:-15}" --workers "${WORKERS:-14}" ${BATCH_ARGS:-} > "$logs/batch.log" 2>&1 || echo "batch exit $? at ${SECONDS} s"
    grep -v "TCP\|^$" "$logs/batch.log" | tail -6 ;;
  *) echo "usage: bash scripts/gpu_run.sh bench|pretrain|full" >&2; exit 2 ;;
esac
