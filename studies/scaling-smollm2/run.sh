#!/usr/bin/env bash
# Evidence for `dataplan scaling` on the built-in model: fine-tune at each (N, strategy) under a
# fixed compute budget of training tokens, on two suite tasks, then fit and compare the forms.
# Resumable: every run is cached in points/ (committed); ends by writing docs/scaling.md.
# Run from the repository root:
#   bash studies/scaling-smollm2/run.sh
# (MODEL, HERE, NS, TOKENS and TEST override the settings, e.g. for a smoke run on a tiny model.)
set -euo pipefail
MODEL=${MODEL:-smollm2-135m-instruct}
HERE=${HERE:-studies/scaling-smollm2}
NS=${NS:-32,64,128,256}
TOKENS=${TOKENS:-24000}
TEST=${TEST:-150}
TASKS="arithmetic_2_digit_addition intent_recognition"
for task in $TASKS; do
  .venv/bin/dataplan scaling runs --model "$MODEL" --task "$task" --n "$NS" \
    --strategies random,shortest,longest,stratified --compute-tokens "$TOKENS" \
    --max-test "$TEST" --cache "$HERE/points" --out "$HERE/runs-$task.csv" --quiet
  .venv/bin/dataplan scaling fit "$HERE/runs-$task.csv" --form volume --out "$HERE/law-$task.json" \
    --plot "$HERE/fit-$task.png" --json > "$HERE/fit-$task.json"
  .venv/bin/dataplan scaling fit "$HERE/runs-$task.csv" --form volume --strategy-effects \
    --out "$HERE/law-$task-strategy.json" --plot "$HERE/fit-$task-strategy.png" --json \
    > "$HERE/fit-$task-strategy.json"
done
.venv/bin/python "$HERE/report.py"
