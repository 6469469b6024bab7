#!/usr/bin/env bash
# The premise checks a world model must pass before a batch is run on it (docs/decisions.md, the
# world chapter), all on validation pairs, never on test prompts:
#   1. its sampling settings, swept and written into the model's invrev.json;
#   2. the premise table: each relation forward, in the role swap "B ob <words> A", and the unnamed
#      relations in their words (n = 80 per cell), with the steering words' trained share and cosines;
#   3. the decisive case: a no_inverse <r> learned on painted_on, prompted "B ob <r> A";
#   4. the inverse text: its p_inverse dose-response and <inv>'s initial word (the swap word "ob" as
#      the upper bound), each with cos(<inv>, ob) after training.
# Two jobs at a time, one thread each (two cores).
#
#   bash scripts/world_premises.sh MODEL_FOLDER OUT_FOLDER
set -euo pipefail
model=${1:?usage: world_premises.sh MODEL_FOLDER OUT_FOLDER}
out=${2:?usage: world_premises.sh MODEL_FOLDER OUT_FOLDER}
mkdir -p "$out"
export OMP_WAIT_POLICY=PASSIVE
py=${PYTHON:-python}
invrev=("$py" -c "import sys; from invrev.cli import main; sys.argv[0] = 'invrev'; sys.exit(main())")
recipe=("$py" scripts/inversion_recipe.py --relation painted_on --seed 1 --pairs 20 --samples 4 --model "$model")

"${invrev[@]}" world sweep --model "$model" --scheduler DPMSolverMultistepScheduler --steps 10 15 \
    --guidance 1.0 1.5 2.0 3.0 --unnamed --out "$out/sampling_sweep.json" --write-model

OMP_NUM_THREADS=1 "${invrev[@]}" world premises --model "$model" --split validation --prompts 20 --samples 4 \
    --out "$out/premises_validation.json" > "$out/premises_validation.log" 2>&1 &
OMP_NUM_THREADS=1 "${recipe[@]}" --variant no_inverse --swap-form --out "$out/decisive_no_inverse.json" \
    > "$out/decisive_no_inverse.log" 2>&1
OMP_NUM_THREADS=1 "${recipe[@]}" --variant inv_reversion --swap-form --inverse-form \
    --candidate "" --candidate "p_inverse=0.25" --candidate "p_inverse=0.75" \
    --out "$out/inverse_dose.json" > "$out/inverse_dose.log" 2>&1
wait
OMP_NUM_THREADS=1 "${recipe[@]}" --variant inv_reversion --swap-form --inverse-form \
    --candidate "inverse_init_word=under" --candidate "inverse_init_word=by" \
    --out "$out/inverse_init_a.json" > "$out/inverse_init_a.log" 2>&1 &
OMP_NUM_THREADS=1 "${recipe[@]}" --variant inv_reversion --swap-form --inverse-form \
    --candidate "inverse_init_word=ob" --out "$out/inverse_init_b.json" > "$out/inverse_init_b.log" 2>&1
wait
echo "premise checks written to $out"
