#!/usr/bin/env bash
# The calibration study of the built-in model (issue "ground truth"). Resumable: every curve point
# is cached in points/ and every CoS-Low run folder in study/estimates/, both committed, so an
# interrupted run continues where it stopped. Run from the repository root:
#   bash studies/smollm2-135m-instruct/run.sh
set -euo pipefail
here=studies/smollm2-135m-instruct
# Tasks whose training pool holds at least 320 examples (the lowest 10% must give 32 to label).
tasks=sports_understanding,object_counting,temporal_sequences,hyperbaton,formal_fallacies_syllogisms_negation,reasoning_about_colored_objects,tracking_shuffled_objects,disfl_qa,qa_wikidata,mnist_ascii,unit_conversion_si_conversion,elementary_math_qa_question_only,intent_recognition,navigate,epistemic_reasoning,presuppositions_as_nli,strategyqa,social_iqa,arithmetic_2_digit_addition,arithmetic_2_digit_multiplication,arithmetic_3_digit_subtraction,basic_arithmetic,chain_sum,gsm_symbolic,letter_counting,spell_backward,family_relationships,calendar_arithmetic
.venv/bin/dataplan calibrate --name smollm2-135m-instruct --model smollm2-135m-instruct \
  --tasks "$tasks" --budgets 0,16,64,256 --seeds 0 --max-test 200 --max-pool 400 \
  --cache "$here/points" --out-dir "$here/study" "$@"
