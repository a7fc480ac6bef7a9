#!/usr/bin/env bash
# Regenerate every committed study's outputs and docs from its committed cache, with every compute
# entry point disabled (studies/no_compute.py): a missing or mis-keyed cached result fails
# loudly instead of being recomputed. Run from the repository root, then `git status`: the docs
# (ground-truth.md, scaling runs, select table) must be unchanged; run folders' result.json and
# PNGs are re-rendered (timings, versions) and can be restored with `git checkout studies`.
set -euo pipefail
here=studies/smollm2-135m-instruct
tasks=$(sed -n 's/^tasks=//p' "$here/run.sh" | tr ',' '\n' | while read -r t; do
  n=$(ls "$here/points/" | grep -cE "^${t}-n(0|16|64|256)-s0-" || true)
  if [ "$n" -ge 4 ]; then printf "%s," "$t"; fi
done)
tasks=${tasks%,}
echo "== ground truth: $tasks"
.venv/bin/python studies/no_compute.py cli calibrate --name smollm2-135m-instruct --model smollm2-135m-instruct \
  --tasks "$tasks" --budgets 0,16,64,256 --seeds 0 --max-test 200 --max-pool 400 \
  --cache "$here/points" --out-dir "$here/study" --probe-steps 8,16,32,64 --probe-seeds 3 --quiet > /dev/null
.venv/bin/python $here/probe_report.py
for task in arithmetic_2_digit_addition hyperbaton; do
  .venv/bin/python studies/no_compute.py cli curve --model smollm2-135m-instruct --task "$task" --budgets 0,16,64,256 \
    --seeds 0,1,2 --max-test 200 --cache "$here/points" --out-dir "$here/seeds/$task" --json --quiet > "$here/seeds/$task.json"
done
.venv/bin/python $here/report.py
echo "== scaling"
H=studies/scaling-smollm2
for task in arithmetic_2_digit_addition intent_recognition; do
  .venv/bin/python studies/no_compute.py cli scaling runs --model smollm2-135m-instruct --task "$task" --n 32,64,128,256 \
    --strategies random,shortest,longest,stratified --compute-tokens 24000 \
    --max-test 150 --cache "$H/points" --out "$H/runs-$task.csv" --quiet
done
echo "== select"
.venv/bin/python studies/no_compute.py studies/select-smollm2/run.py > /dev/null
echo "== weighting"  # preference.json first: run.py writes docs/weighting.md with it
.venv/bin/python studies/no_compute.py studies/weighting-smollm2/preference.py --report-only \
  --learning-rate dpo=auto,simpo=5e-5,simpo=5e-6 > /dev/null
.venv/bin/python studies/no_compute.py studies/weighting-smollm2/run.py --report-only > /dev/null
echo "regenerated without computing anything"
