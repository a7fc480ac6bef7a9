"""Evaluation speed of a curve point on the built-in model, before vs after, side by side in one run.

A curve point is a LoRA fine-tune (the curve settings, ``--n`` training examples) followed by
the evaluation core on ``--max-test`` test prompts (greedy answers, and the options'
log-likelihood where the task has options). For each task the point is trained once, then its
evaluation is timed both ways on the same trained model, in ABBA order (``--repeats`` blocks):

- **before** — the evaluation as it was: the adapter unmerged (three matmuls per adapted
  layer), options scored whenever the test set has them, and the option pass computing the
  vocabulary projection at every prompt position (reproduced here by patching
  ``option_scoring.forward_kept`` to compute all logits);
- **after** — :func:`dataplan.evaluation.evaluate` with the curve's settings: the adapter
  merged (base weights restored bit for bit after), options only where the headline metric
  reads them (not arithmetic), the vocabulary projection of the prompt pass at its last
  position only.

Reported per task: training seconds, evaluation seconds before/after (median), evaluation's
share of the point before/after (target ≤ 25%), the point's speed-up (target ≥ 2×), and
whether the metrics agree (greedy answers identical; option accuracy within 1/n_test).

    python benchmarks/bench_evaluation.py [--threads 2] [--n 64] [--max-test 200] [--repeats 1]
"""

from __future__ import annotations

import argparse
import statistics
import time

from common import machine, save

TASKS = ("intent_recognition", "arithmetic_2_digit_addition")


def _before(model, formatter, test, settings):
    """The evaluation as it was (module docstring)."""
    from dataclasses import replace

    from dataplan.compute import option_scoring
    from dataplan.evaluation import core

    kept = option_scoring.forward_kept
    option_scoring.forward_kept = lambda model, keep, **inputs: model(**inputs)
    try:
        return core._evaluate(model, formatter, test, replace(settings, options=True), False)
    finally:
        option_scoring.forward_kept = kept


def _after(model, formatter, test, settings):
    from dataplan.evaluation import evaluate

    return evaluate(model, formatter, test, settings)


def bench_task(task: str, loaded, n: int, max_test: int, repeats: int) -> dict:
    from dataplan.data.formatting import PromptSettings
    from dataplan.tasks.registry import load_task
    from dataplan.training import train
    from dataplan.training.settings import TrainSettings
    from dataplan.workflows.curve import CurveConfig

    formatter = PromptSettings().formatter(loaded.tokenizer)
    pool, test = load_task(task, "pool")[:n], load_task(task, "test")[:max_test]
    settings = CurveConfig(task=task, budgets=(0, n), seeds=(0,)).evaluation
    start = time.perf_counter()
    result = train(loaded.model, pool, formatter, TrainSettings(), seed=0)
    train_seconds = time.perf_counter() - start
    model = result.model.eval()
    times: dict[str, list[float]] = {"before": [], "after": []}
    metrics: dict[str, dict] = {}
    for _ in range(repeats):
        for variant in ("before", "after", "after", "before"):
            fn = _before if variant == "before" else _after
            start = time.perf_counter()
            metrics[variant] = fn(model, formatter, test, settings)
            times[variant].append(time.perf_counter() - start)
            print(f"{task} {variant}: {times[variant][-1]:.1f} s", flush=True)
    loaded.model = model.unload()
    before, after = (statistics.median(times[v]) for v in ("before", "after"))
    b, a = metrics["before"], metrics["after"]
    same_answers = [x["prediction"] for x in b["examples"]] == [
        x["prediction"] for x in a["examples"]
    ]
    return {
        "task": task,
        "n_train": n,
        "train_steps": result.steps,
        "n_test": len(test),
        "options_scored_after": settings.options,
        "train_seconds": round(train_seconds, 2),
        "eval_seconds": {k: [round(t, 2) for t in v] for k, v in times.items()},
        "eval_before_median": round(before, 2),
        "eval_after_median": round(after, 2),
        "eval_speedup": round(before / after, 3),
        "eval_share_before": round(before / (train_seconds + before), 3),
        "eval_share_after": round(after / (train_seconds + after), 3),
        "point_speedup": round((train_seconds + before) / (train_seconds + after), 3),
        "metrics_before": {k: b[k] for k in ("exact_match", "token_f1", "loglik_accuracy")},
        "metrics_after": {k: a[k] for k in ("exact_match", "token_f1", "loglik_accuracy")},
        "first_20_answers_identical": same_answers,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--max-test", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--tasks", default=",".join(TASKS))
    args = parser.parse_args()
    import torch

    from dataplan.workflows.experiment import ModelSpec

    torch.set_num_threads(args.threads)
    loaded = ModelSpec("smollm2-135m-instruct").load()
    rows = [
        bench_task(t, loaded, args.n, args.max_test, args.repeats) for t in args.tasks.split(",")
    ]
    for r in rows:
        print(
            f"{r['task']}: train {r['train_seconds']:.0f} s; evaluation {r['eval_before_median']:.0f}"
            f" → {r['eval_after_median']:.0f} s ({r['eval_speedup']:.2f}×); evaluation share "
            f"{r['eval_share_before']:.0%} → {r['eval_share_after']:.0%}; point "
            f"{r['point_speedup']:.2f}× faster"
        )
    save(
        "evaluation",
        {"machine": machine(), "threads": args.threads, "settings": vars(args), "tasks": rows},
    )


if __name__ == "__main__":
    main()
