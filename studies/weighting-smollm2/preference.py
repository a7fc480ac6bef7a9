"""Evidence for ICA reweighting (issue 15) on the built-in model: DPO and SimPO under preference noise.

Pairs come from a suite task with options: for each of the select study's 300 pool examples,
chosen = the gold answer and rejected = one wrong option drawn at random (seeded); 30% of the pairs
are then swapped on purpose (the "corrupted" pairs). The holdout is 32 clean pairs built the same
way from pool examples outside the training pool. SmolLM2-135M-Instruct is fine-tuned with
``dataplan train``'s defaults for each objective (LoRA r16, batch 8; DPO β = 0.1 with the frozen
model as reference; SimPO β = 2, γ = 1) for the same STEPS optimiser steps under each weighting,
at a learning rate chosen per objective on VALIDATION pool examples outside the training pool
and the holdout (``--learning-rates 5e-4,5e-5`` probes them with uniform weights and writes
preference-learning-rate.json; ``--learning-rate auto`` then takes the best of each objective) — ``uniform``, ``ica`` (k = 3 nearest holdout demonstrations, the margin
change in context) and ``rho`` (the margin added by a LoRA adapter trained on the holdout's chosen
responses) — with training seeds 0, 1, 2.

Reported per objective and weighting, as mean ± std over seeds with the paired difference to
``uniform``:

- ``loglik_accuracy``: held-out test accuracy by option log-likelihood (TEST test examples);
- ``reward_accuracy``: on held-out clean pairs built from those test examples the same way, the
  fraction whose implicit reward prefers the chosen response — DPO: the margin of
  β·log π/π_ref (π_ref the frozen model), SimPO: of the length-normalised log-probability (TRL's
  ``rewards/accuracies`` of each trainer);
- the weights' AUROC: P(a clean pair's weight > a swapped pair's), ties half.

Every fine-tune and every weighting is cached in points/, so an interrupted study resumes.
Outputs: preference.json and the preference section of docs/weighting.md (with report.py).

    .venv/bin/python studies/weighting-smollm2/preference.py [--objectives dpo,simpo] [--seeds 0,1,2]

The reported study: ``--learning-rate dpo=auto,simpo=5e-5,simpo=5e-6``. SimPO collapsed at both
rates of the validation probe (5e-4 and 5e-5: the option accuracy falls to about 0), so its
``auto`` rate (5e-5) ran one seed, and SimPO was rerun at 5e-6, a decade below the probed grid,
for three seeds — a deviation from the pre-registered grid, reported as such.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
TASK = "arithmetic_2_digit_addition"
METHODS = ("uniform", "ica", "rho")
OBJECTIVES = ("dpo", "simpo")
POOL, HOLDOUT, TEST, NOISE, STEPS = 300, 32, 150, 0.3, 48
VALIDATION = 100


def pairs_of(examples, seed: int):
    """(prompt, gold, one random wrong option) preference pairs, ids kept."""
    from dataplan.data.loading import PreferenceExample

    rng = np.random.default_rng(seed)
    out = []
    for e in examples:
        wrong = [c for c in e.choices if c != e.answer]
        out.append(
            PreferenceExample(
                id=e.id, prompt=e.prompt, chosen=e.answer, rejected=wrong[rng.integers(len(wrong))]
            )
        )
    return out


def swap(pairs, fraction: float, seed: int):
    """The pairs with ``fraction`` of them swapped (chosen ↔ rejected), and the swapped ids."""
    from dataclasses import replace

    rng = np.random.default_rng(seed)
    bad = set(rng.choice(len(pairs), size=round(fraction * len(pairs)), replace=False).tolist())
    noisy = [
        replace(p, chosen=p.rejected, rejected=p.chosen) if i in bad else p
        for i, p in enumerate(pairs)
    ]
    return noisy, {pairs[i].id for i in bad}


def task_data(task: str):
    """(noisy pairs, holdout pairs, test examples, test pairs, swapped ids) of a task."""
    from dataplan.tasks.registry import load_task

    pool = load_task(task, "pool")
    order = np.random.default_rng([0, 17]).permutation(len(pool))  # the select study's pool
    train = [pool[i] for i in order[:POOL]]
    held = [pool[i] for i in order[POOL : POOL + HOLDOUT]]
    test = load_task(task, "test")[:TEST]
    noisy, bad = swap(pairs_of(train, seed=1), NOISE, seed=0)
    return noisy, pairs_of(held, seed=2), test, pairs_of(test, seed=3), bad


def validation_examples(task: str) -> list:
    """VALIDATION pool examples outside the training pool and the holdout (for choosing the
    learning rate; never the test set)."""
    from dataplan.tasks.registry import load_task

    pool = load_task(task, "pool")
    order = np.random.default_rng([0, 17]).permutation(len(pool))
    start = POOL + HOLDOUT
    return [pool[i] for i in order[start : start + VALIDATION]]


def learning_rate_probe(objectives, rates, loaded, store) -> dict:
    """Uniform DPO/SimPO on the noisy pairs at each learning rate (seed 0), scored by option
    log-likelihood accuracy on validation examples: how the study's learning rate is chosen."""
    from dataplan.data.formatting import PromptSettings
    from dataplan.digests import examples_digest, pairs_digest
    from dataplan.evaluation import EvalSettings, evaluate
    from dataplan.store import canonical
    from dataplan.training import TrainSettings, train
    from dataplan.training.objectives import get_objective

    formatter = PromptSettings().formatter(loaded.tokenizer)
    noisy = task_data(TASK)[0]
    validation = validation_examples(TASK)
    base = {
        "model": "smollm2-135m-instruct",
        "task": TASK,
        "pairs": pairs_digest(noisy),
        "validation": examples_digest(validation),
    }
    before = store.cached_json(
        f"pref-{TASK}-validation-base",
        base,
        lambda: evaluate(loaded.model, formatter, validation, EvalSettings()),
    )
    out: dict = {"before": before["loglik_accuracy"], "runs": {}}
    for objective in objectives:
        for rate in rates:
            hyper = TrainSettings(min_steps=STEPS, max_steps=STEPS, learning_rate=rate)
            identity = {
                **base,
                "train": canonical(hyper),
                "objective": objective,
                "objective_settings": get_objective(objective).settings(),
            }

            def run(objective=objective, hyper=hyper) -> dict:
                result = train(loaded.model, noisy, formatter, hyper, objective=objective, seed=0)
                scores = evaluate(result.model, formatter, validation, EvalSettings())
                loaded.model = result.model.unload()
                loaded.model.eval()
                return {**scores, "train": result.log()}

            point = store.cached_json(f"pref-{TASK}-lr-{objective}-{rate:g}", identity, run)
            out["runs"].setdefault(objective, {})[f"{rate:g}"] = point["loglik_accuracy"]
            print(
                f"{objective} lr {rate:g}: validation loglik_accuracy "
                f"{point['loglik_accuracy']:.3f} (before training {out['before']:.3f})",
                flush=True,
            )
    return out


def response_logps(model, formatter, pairs, pad_id: int) -> dict[str, np.ndarray]:
    """Summed log-probability and token count of each pair's chosen and rejected response."""
    from dataplan.compute.example_stats import answer_losses
    from dataplan.data.formatting import encode_examples

    out = {}
    for side in ("chosen", "rejected"):
        encoded = encode_examples(formatter, [p.response(side) for p in pairs])
        tokens = np.array([len(e.answer_ids) for e in encoded], dtype=np.float64)
        out[side] = -answer_losses(model, encoded, pad_id) * tokens
        out[f"{side}_tokens"] = tokens
    return out


def reward_accuracy(objective: str, policy: dict, reference: dict) -> float:
    """The fraction of pairs whose implicit reward prefers the chosen response (module doc)."""
    if objective == "dpo":
        margin = (policy["chosen"] - reference["chosen"]) - (
            policy["rejected"] - reference["rejected"]
        )
    else:
        margin = (
            policy["chosen"] / policy["chosen_tokens"]
            - policy["rejected"] / policy["rejected_tokens"]
        )
    return float(np.mean(margin > 0))


def learning_rates(spec: str | None, objectives: list[str]) -> list[tuple[str, float | None]]:
    """The (objective, learning rate) fine-tunes of ``--learning-rate``: one value (a rate,
    ``auto`` or nothing: ``dataplan train``'s default) for every objective, or
    ``objective=value`` items, an objective named twice trained at both rates. ``auto`` is the
    objective's rate with the best validation accuracy in preference-learning-rate.json."""

    def resolve(objective: str, value: str | None) -> float | None:
        if value is None:
            return None
        if value != "auto":
            return float(value)
        import json

        path = HERE / "preference-learning-rate.json"
        if not path.exists():
            raise SystemExit(f"--learning-rate auto needs {path} (run --learning-rates first)")
        runs = json.loads(path.read_text())["runs"][objective]
        best = max(runs.items(), key=lambda kv: (kv[1], -float(kv[0])))  # ties: the smaller
        return float(best[0])

    if spec is None or "=" not in spec:
        return [(o, resolve(o, spec)) for o in objectives]
    runs: list[tuple[str, float | None]] = []
    for item in spec.split(","):
        objective, sep, value = (part.strip() for part in item.partition("="))
        if not sep or objective not in OBJECTIVES:
            raise SystemExit(f"--learning-rate: {item!r} is not OBJECTIVE=RATE ({OBJECTIVES})")
        run = (objective, resolve(objective, value))
        if objective in objectives and run not in runs:
            runs.append(run)
    unset = [o for o in objectives if all(o != r[0] for r in runs)]
    if unset:
        raise SystemExit(f"--learning-rate names no rate for {', '.join(unset)}")
    return runs


def study(runs, seeds, methods, loaded, store, report_only: bool) -> dict:
    """``runs``: (objective, learning rate) pairs (:func:`learning_rates`); the rows are keyed
    by objective, with the rate when an objective runs at several."""
    from report import auroc

    from dataplan.data.formatting import PromptSettings
    from dataplan.digests import examples_digest, pairs_digest
    from dataplan.evaluation import EvalSettings, evaluate
    from dataplan.store import canonical, key_of
    from dataplan.training import TrainSettings, train
    from dataplan.training.objectives import get_objective
    from dataplan.training.weighting import get_weighting

    formatter = None if loaded is None else PromptSettings().formatter(loaded.tokenizer)
    pad = None if loaded is None else loaded.tokenizer.pad_token_id
    noisy, holdout, test, test_pairs, bad = task_data(TASK)
    is_bad = np.array([p.id in bad for p in noisy])
    evaluation = EvalSettings()
    base = {
        "model": "smollm2-135m-instruct",
        "task": TASK,
        "prompt": canonical(PromptSettings()),
        "pairs": pairs_digest(noisy),
        "holdout": pairs_digest(holdout),
        "test": examples_digest(test),
        "test_pairs": pairs_digest(test_pairs),
        "evaluation": canonical(evaluation),
    }

    def weights_of(method: str) -> np.ndarray | None:
        if method == "uniform":
            return None
        scheme = get_weighting(method, holdout=holdout)
        key = f"pref-{TASK}-{method}-{key_of({**base, 'weighting': scheme.settings()})}"
        found = store.get_arrays(key)
        if found is not None:
            return found[0]["v"]
        if report_only:
            return None
        value = np.asarray(scheme.initial(loaded.model, noisy, formatter), dtype=np.float64)
        loaded.model.eval()
        store.put_arrays(key, {"v": value})
        return value

    def reference_logps() -> dict | None:
        key = f"pref-{TASK}-reference-{key_of(base)}"
        found = store.get_arrays(key)
        if found is not None:
            return found[0]
        if report_only:
            return None
        value = response_logps(loaded.model, formatter, test_pairs, pad)
        store.put_arrays(key, value)
        return value

    rows: dict = {}
    several = {o for o, _ in runs if sum(1 for p, _ in runs if p == o) > 1}
    for seed in seeds:
        for objective, rate in runs:
            settings = get_objective(objective).settings()
            label = f"{objective} (lr {rate:g})" if objective in several else objective
            hyper = TrainSettings(
                min_steps=STEPS,
                max_steps=STEPS,
                **({} if rate is None else {"learning_rate": rate}),
            )
            for method in methods:
                identity = {**base, "train": canonical(hyper), "objective": objective}
                identity = {**identity, "objective_settings": settings}
                identity = {**identity, "method": method, "seed": seed}
                name = f"pref-{TASK}-{objective}-{method}-s{seed}"
                if report_only and store.get_json(name, identity) is None:
                    continue
                weights = weights_of(method)

                def run(objective=objective, weights=weights, seed=seed, hyper=hyper) -> dict:
                    start = time.perf_counter()
                    reference = reference_logps()
                    result = train(
                        loaded.model,
                        noisy,
                        formatter,
                        hyper,
                        objective=objective,
                        seed=seed,
                        weights=weights,
                    )
                    out = evaluate(result.model, formatter, test, evaluation)
                    policy = response_logps(result.model, formatter, test_pairs, pad)
                    loaded.model = result.model.unload()
                    loaded.model.eval()
                    return {
                        **out,
                        "reward_accuracy": reward_accuracy(objective, policy, reference),
                        "train": result.log(),
                        "seconds": time.perf_counter() - start,
                    }

                point = store.cached_json(name, identity, run)
                entry = rows.setdefault(label, {}).setdefault(
                    method, {"seeds": [], "loglik_accuracy": [], "reward_accuracy": []}
                )
                entry["seeds"].append(seed)
                entry["learning_rate"] = hyper.learning_rate
                entry["loglik_accuracy"].append(point["loglik_accuracy"])
                entry["reward_accuracy"].append(point["reward_accuracy"])
                if weights is not None:
                    entry["weight_auroc"] = auroc(weights, is_bad)
                print(
                    f"{TASK} {objective} {method} seed {seed}: loglik_accuracy "
                    f"{point['loglik_accuracy']:.3f}, reward_accuracy "
                    f"{point['reward_accuracy']:.3f}",
                    flush=True,
                )
    base_acc = None
    if not report_only or store.get_json(f"pref-{TASK}-base", base) is not None:

        def base_point() -> dict:
            return evaluate(loaded.model, formatter, test, evaluation)

        base_acc = store.cached_json(f"pref-{TASK}-base", base, base_point)["loglik_accuracy"]
    return {"task": TASK, "steps": STEPS, "base_loglik_accuracy": base_acc, "objectives": rows}


def main() -> None:
    global STEPS, POOL, TEST
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objectives", default=",".join(OBJECTIVES))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--steps", type=int, default=STEPS, help="for a smoke run")
    parser.add_argument("--pool", type=int, default=POOL, help="for a smoke run")
    parser.add_argument("--test", type=int, default=TEST, help="for a smoke run")
    parser.add_argument("--out-dir", type=Path, default=HERE, help="for a smoke run")
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument(
        "--learning-rates",
        default=None,
        help="comma-separated: only probe these learning rates on validation examples",
    )
    parser.add_argument(
        "--learning-rate",
        default=None,
        help="of every fine-tune (a rate; auto: per objective, the best of the validation "
        "probe), or per objective: dpo=auto,simpo=5e-6,simpo=5e-5 (an objective named twice "
        "runs at both rates)",
    )
    args = parser.parse_args()
    STEPS, POOL, TEST = args.steps, args.pool, args.test
    from dataplan.io import write_json
    from dataplan.store import ResultStore
    from dataplan.workflows.experiment import ModelSpec

    loaded = None if args.report_only else ModelSpec("smollm2-135m-instruct").load()
    store = ResultStore(args.out_dir / "points")
    if args.learning_rates:
        rates = [float(r) for r in args.learning_rates.split(",")]
        probe = learning_rate_probe(args.objectives.split(","), rates, loaded, store)
        write_json(args.out_dir / "preference-learning-rate.json", probe)
        return
    results = study(
        learning_rates(args.learning_rate, args.objectives.split(",")),
        [int(s) for s in args.seeds.split(",")],
        args.methods.split(","),
        loaded,
        store,
        args.report_only,
    )
    write_json(args.out_dir / "preference.json", results)
    from report import preference_table

    print(preference_table(results))


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    main()
