#!/usr/bin/env bash
# The premise checks a world model must pass before a batch is run on it (docs/decisions.md, the
# world chapter), all on validation pairs, never on test prompts. Run them on a model whose
# sampling settings are its own (`invrev world sweep --write-model`), shipped or not:
#   table:   each relation forward, in the role swap "B ob <words> A", and the unnamed relations in
#            their words (n = 80 per cell), with the steering words' trained share and cosines;
#   inverse: the decisive case (a no_inverse <r> learned on painted_on, prompted "B ob <r> A"), the
#            inverse text's p_inverse dose-response and <inv>'s initial word (the swap word "ob" as
#            the upper bound), each with cos(<inv>, ob) after training;
#   all:     both.
# Jobs run two at a time (three while 'all' overlaps the table with them), one thread each; each
# writes a JSON file and a log in OUT.
#
#   bash scripts/world_premises.sh MODEL_FOLDER OUT_FOLDER [table|inverse|all]
set -euo pipefail
usage="usage: world_premises.sh MODEL_FOLDER OUT_FOLDER [table|inverse|all]"
model=${1:?$usage}
out=${2:?$usage}
what=${3:-all}
case $what in table|inverse|all) ;; *) echo "$usage" >&2; exit 2 ;; esac
mkdir -p "$out"
export OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=1
py=${PYTHON:-python}
invrev=("$py" -c "import sys; from invrev.cli import main; sys.argv[0] = 'invrev'; sys.exit(main())")
recipe=("$py" scripts/inversion_recipe.py --relation painted_on --seed 1 --pairs 20 --samples 4 --model "$model")
job() {  # job NAME COMMAND...: run it with its output in OUT/NAME.log, naming it if it fails
    local name=$1; shift
    "$@" > "$out/$name.log" 2>&1 || { echo "$name failed: see $out/$name.log" >&2; return 1; }
}

if [[ $what != inverse ]]; then
    job premises_validation "${invrev[@]}" world premises --model "$model" --split validation --prompts 20 \
        --samples 4 --out "$out/premises_validation.json" &
fi
if [[ $what != table ]]; then
    job decisive_no_inverse "${recipe[@]}" --variant no_inverse --swap-form --out "$out/decisive_no_inverse.json" &
    job inverse_init_ob "${recipe[@]}" --variant inv_reversion --swap-form --inverse-form \
        --candidate "inverse_init_word=ob" --out "$out/inverse_init_ob.json"
    wait
    job inverse_dose "${recipe[@]}" --variant inv_reversion --swap-form --inverse-form \
        --candidate "" --candidate "p_inverse=0.25" --candidate "p_inverse=0.75" --out "$out/inverse_dose.json" &
    job inverse_init "${recipe[@]}" --variant inv_reversion --swap-form --inverse-form \
        --candidate "inverse_init_word=under" --candidate "inverse_init_word=by" --out "$out/inverse_init.json"
fi
wait
echo "premise checks ($what) written to $out"
