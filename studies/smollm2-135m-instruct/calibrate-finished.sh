#!/usr/bin/env bash
# Calibrate on the tasks of run.sh whose four curve points are cached (no new fine-tuning; the
# CoS-Low estimate of a task is computed if missing). Writes study/ like run.sh, for shipping a
# calibration while the study is still running. Run from the repository root:
#   bash studies/smollm2-135m-instruct/calibrate-finished.sh
set -euo pipefail
here=studies/smollm2-135m-instruct
tasks=$(sed -n 's/^tasks=//p' "$here/run.sh" | tr ',' '\n' | while read -r t; do
  n=$(ls "$here/points/" | grep -cE "^${t}-n(0|16|64|256)-s0-" || true)
  if [ "$n" -ge 4 ]; then printf "%s," "$t"; fi
done)
tasks=${tasks%,}
echo "calibrating on: $tasks" >&2
.venv/bin/dataplan calibrate --name smollm2-135m-instruct --model smollm2-135m-instruct \
  --tasks "$tasks" --budgets 0,16,64,256 --seeds 0 --max-test 200 --max-pool 400 \
  --cache "$here/points" --out-dir "$here/study" "$@"
