"""Evidence for ICA reweighting (issue 15) on the built-in model: SFT under label noise.

For each task: the select study's pool of 300 training examples with 30% of the labels
corrupted on purpose (intent_recognition: another option; arithmetic: a shifted sum), its clean
32-example holdout (disjoint from the pool), and TEST held-out test examples. SmolLM2-135M-Instruct
is fine-tuned on the noisy pool (LoRA r16, the curve settings, the same STEPS optimiser steps for
every method) with training seeds 0, 1, 2, under each weighting:

- ``uniform``: every example once (the plain loss);
- ``ica``: ICA weights (k = 3 nearest holdout demonstrations, scores from the base model, min-max
  over the pool), fixed during training;
- ``ica-refresh3``: the same, recomputed from the current parameters after each third of training;
- ``one-shot``: ICA with a single demonstration (k = 1);
- ``rho``: RHO-LOSS weights, s = ℓ(y | x; θ) − ℓ(y | x; θ_holdout) with θ_holdout a LoRA adapter
  trained on the holdout (the paper's reference method), min-max over the pool;
- ``filter-0.7``: the 70% of the pool with the highest ICA scores, uniform weights (hard filtering);
- ``clean``: uniform weights on the pool's true labels (the ceiling).

Reported per method: test performance (option log-likelihood accuracy for classification, exact
match otherwise) as mean ± std over seeds, the paired difference to ``uniform`` (same training
seed), the fraction of the accuracy lost to noise that the method recovers, (acc − uniform) /
(clean − uniform), and how well its weights separate corrupted from clean examples (AUROC:
P(a clean example's weight > a corrupted one's), ties half). Every fine-tune is cached in
points/ (and the weights), so an interrupted study resumes. Outputs: results.json, table.md,
weighting.png, and docs/weighting.md.

    .venv/bin/python studies/weighting-smollm2/run.py [--tasks a,b] [--seeds 0,1,2]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
ROOT = HERE.parent.parent
# In the order they run within a seed: the two ends (uniform, clean) first, so that every
# finished seed gives paired differences and the recovered fraction.
METHODS = ("uniform", "clean", "ica", "rho", "filter-0.7", "one-shot", "ica-refresh3")
TASKS = ("intent_recognition", "arithmetic_2_digit_addition")
POOL, HOLDOUT, TEST, NOISE, STEPS = 300, 32, 150, 0.3, 75


def task_data(task: str):
    """(noisy pool, clean pool, holdout, test, corrupted ids, metric) of a task."""
    from dataclasses import replace

    from dataplan.tasks.registry import get_task, load_task

    pool = load_task(task, "pool")
    order = np.random.default_rng([0, 17]).permutation(len(pool))  # the select study's pool
    clean = [pool[i] for i in order[:POOL]]
    holdout = [pool[i] for i in order[POOL : POOL + HOLDOUT]]
    from dataplan.tasks.noise import corrupt_answers

    noisy, bad = corrupt_answers(clean, NOISE, seed=0)  # the select study's corruption
    spec = get_task(task)
    test = load_task(task, "test")[:TEST]
    from dataplan.evaluation import headline_metric  # options for classification / MC

    has_options = all(e.choices for e in test)
    metric = headline_metric(
        {"loglik_accuracy": 0.0} if has_options else {}, spec.metric, spec.kind
    )
    if metric != "loglik_accuracy":  # scoring every option would be wasted compute
        test = [replace(e, choices=None) for e in test]
    return noisy, clean, holdout, test, set(bad), metric


def study_task(
    task: str, seeds: list[int], methods: list[str], spec, loaded, store, report_only=False
) -> dict:
    """Every (method, seed) fine-tune of one task (cached), and the weights' separation.

    With ``report_only`` nothing is computed: only cached fine-tunes and weights are read."""
    from report import auroc

    from dataplan.compute.example_stats import answer_losses
    from dataplan.compute.ica import ica_scores
    from dataplan.data.formatting import PromptSettings, encode_examples
    from dataplan.digests import examples_digest
    from dataplan.evaluation import EvalSettings, evaluate
    from dataplan.maths.weights import minmax_weights, top_fraction_weights
    from dataplan.store import canonical, key_of
    from dataplan.training import Refresh, TrainSettings, train
    from dataplan.training.weighting.ica import (
        ICASettings,
        choose_demonstrations,
        ica_weight_function,
    )
    from dataplan.workflows.experiment import point_identity

    formatter = None if loaded is None else PromptSettings().formatter(loaded.tokenizer)
    hyper = TrainSettings(min_steps=STEPS, max_steps=STEPS)
    evaluation = EvalSettings()
    noisy, clean, holdout, test, bad, metric = task_data(task)
    noisy, clean = noisy[:POOL], clean[:POOL]
    is_bad = np.array([e.id in bad for e in noisy])
    base = {
        **point_identity(spec, PromptSettings(), noisy, test, hyper, evaluation),
        "holdout": examples_digest(holdout),
        "noise": NOISE,
    }

    def cached_arrays(name: str, identity: dict, compute) -> np.ndarray | None:
        key = f"{task}-{name}-{key_of(identity)}"
        found = store.get_arrays(key)
        if found is not None:
            return found[0]["v"]
        if report_only:
            return None
        value = np.asarray(compute(), dtype=np.float64)
        store.put_arrays(key, {"v": value})
        return value

    def ica(k: int) -> np.ndarray:
        settings = ICASettings(k=k)

        def compute():
            demos = choose_demonstrations(loaded.model, formatter, noisy, holdout, settings)
            return ica_scores(loaded.model, formatter, noisy, holdout, demos).score

        return cached_arrays(f"ica-k{k}", {**base, "ica": canonical(settings)}, compute)

    def rho() -> np.ndarray:
        def compute():
            trained = train(loaded.model, holdout, formatter, TrainSettings(), seed=0)
            encoded = encode_examples(formatter, noisy)
            pad = loaded.tokenizer.pad_token_id
            tokens = np.array([len(e.answer_ids) for e in encoded])
            with_holdout = answer_losses(trained.model, encoded, pad) * tokens
            loaded.model = trained.model.unload()
            loaded.model.eval()
            plain = answer_losses(loaded.model, encoded, pad) * tokens
            return plain - with_holdout

        return cached_arrays("rho", {**base, "rho": canonical(TrainSettings())}, compute)

    rows = {"metric": metric, "methods": {}}
    for seed in seeds:
        for method in methods:
            identity = {**base, "method": method, "seed": seed}
            name = f"{task}-{method}-s{seed}"
            if report_only and store.get_json(name, identity) is None:
                continue
            weights, refresh, examples = None, None, noisy
            scores = None
            if method in ("ica", "ica-refresh3", "filter-0.7"):
                scores = ica(3)
            elif method == "one-shot":
                scores = ica(1)
            elif method == "rho":
                scores = rho()
            if method == "filter-0.7" and scores is not None:
                weights = top_fraction_weights(scores, 0.7)
            elif scores is not None:
                weights = minmax_weights(scores)
            if method == "ica-refresh3" and not report_only:
                demos = choose_demonstrations(
                    loaded.model, formatter, noisy, holdout, ICASettings(k=3)
                )
                fn = ica_weight_function(noisy, holdout, formatter, ICASettings(k=3), demos)
                refresh = Refresh(fn, every=-(-STEPS // 3))
            if method == "clean":
                examples = clean

            def run(examples=examples, weights=weights, refresh=refresh, seed=seed) -> dict:
                start = time.perf_counter()
                result = train(
                    loaded.model,
                    examples,
                    formatter,
                    hyper,
                    seed=seed,
                    weights=weights,
                    refresh=refresh,
                )
                out = evaluate(result.model, formatter, test, evaluation)
                loaded.model = result.model.unload()
                loaded.model.eval()
                final = result.weights[-1][1] if result.weights else weights
                return {
                    **out,
                    "train": result.log(),
                    "seconds": time.perf_counter() - start,
                    "final_weights": None if final is None else np.asarray(final).tolist(),
                    "refresh_steps": [s for s, _ in result.weights],
                }

            point = store.cached_json(name, identity, run)
            entry = rows["methods"].setdefault(method, {"per_seed": [], "seeds": []})
            entry["per_seed"].append(point[metric])
            entry["seeds"].append(seed)
            if weights is not None and "weight_auroc" not in entry:
                entry["weight_auroc"] = auroc(np.asarray(weights), is_bad)
                entry["weight_mean_corrupted"] = float(np.mean(np.asarray(weights)[is_bad]))
                entry["weight_mean_clean"] = float(np.mean(np.asarray(weights)[~is_bad]))
            if point.get("final_weights") and method == "ica-refresh3":
                entry.setdefault("final_weight_auroc", []).append(
                    auroc(np.asarray(point["final_weights"]), is_bad)
                )
            print(f"{task} {method} seed {seed}: {metric} {point[metric]:.3f}", flush=True)
    return rows


def main() -> None:
    global POOL, STEPS, TEST
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--model", default="smollm2-135m-instruct", help="for a smoke run")
    parser.add_argument("--out-dir", type=Path, default=HERE, help="for a smoke run")
    parser.add_argument("--pool", type=int, default=POOL, help="for a smoke run")
    parser.add_argument("--steps", type=int, default=STEPS, help="for a smoke run")
    parser.add_argument("--test", type=int, default=TEST, help="for a smoke run")
    parser.add_argument(
        "--report-only", action="store_true", help="tables from the cached points, no compute"
    )
    args = parser.parse_args()
    POOL, STEPS, TEST = args.pool, args.steps, args.test
    seeds = [int(s) for s in args.seeds.split(",")]
    methods = args.methods.split(",")
    tasks = args.tasks.split(",")
    unknown = [m for m in methods if m not in METHODS] + [t for t in tasks if t not in TASKS]
    if unknown:
        parser.error(f"unknown method or task: {', '.join(unknown)}")

    from dataplan.store import ResultStore
    from dataplan.workflows.experiment import ModelSpec

    spec = ModelSpec(args.model)
    loaded = None if args.report_only else spec.load()
    store = ResultStore(args.out_dir / "points")
    results = {
        task: study_task(task, seeds, methods, spec, loaded, store, args.report_only)
        for task in tasks
    }
    results = {t: r for t, r in results.items() if r["methods"]}
    from report import write_report  # the table, plot and docs from results

    write_report(results, args.out_dir, seeds)


if __name__ == "__main__":
    import sys

    sys.path.insert(0, str(HERE))
    main()
