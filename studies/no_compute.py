"""Run a dataplan CLI command or a study script with every compute entry point disabled.

    .venv/bin/python studies/no_compute.py cli calibrate ...      # a dataplan command
    .venv/bin/python studies/no_compute.py studies/x/run.py ...   # a study script

Used by regenerate.sh to prove that the committed caches hold every result the docs need.
"""

import runpy
import sys

import dataplan.compute.example_stats as stats
import dataplan.compute.generation as gen
import dataplan.compute.gradients as grads
import dataplan.training as training
import dataplan.workflows.coslow as coslow
import dataplan.workflows.curve as curve
import dataplan.workflows.scaling_runs as scaling_runs


def boom(*a, **k):
    raise SystemExit("GUARD: tried to compute")


gen.greedy_answers = boom
grads.gradient_gram = boom
coslow.gradient_gram = boom
stats.gradient_stats = boom
stats.answer_losses = boom
training.train = boom
curve.train_and_evaluate = boom
scaling_runs.train_and_evaluate = boom
if sys.argv[1] == "cli":
    from dataplan.cli.app import main

    sys.argv = ["dataplan", *sys.argv[2:]]
    main()
else:
    script = sys.argv[1]
    sys.argv = sys.argv[1:]
    runpy.run_path(script, run_name="__main__")
