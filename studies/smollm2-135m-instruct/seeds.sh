#!/usr/bin/env bash
# Spread across seeds of the calibration study's curves: seeds 1 and 2 (subset order and training
# randomness) beside the study's seed 0 (reused from points/, same settings), on the tasks given
# (default: three of the fit set, shortest prompts first). Resumable like run.sh.
# Run from the repository root after run.sh:  bash studies/smollm2-135m-instruct/seeds.sh [task ...]
set -euo pipefail
here=studies/smollm2-135m-instruct
mkdir -p "$here/seeds"
tasks=("$@")
if [ ${#tasks[@]} -eq 0 ]; then
  tasks=(arithmetic_2_digit_addition hyperbaton intent_recognition)
fi
for task in "${tasks[@]}"; do
  .venv/bin/dataplan curve --model smollm2-135m-instruct --task "$task" --budgets 0,16,64,256 \
    --seeds 0,1,2 --max-test 200 --cache "$here/points" --out-dir "$here/seeds/$task" --json \
    > "$here/seeds/$task.json.tmp"
  mv "$here/seeds/$task.json.tmp" "$here/seeds/$task.json"
done
