"""ICA reweighting cost on the built-in model, measured side by side in one run.

1. **Scoring vs training.** ICA weights for N training examples of intent_recognition (k = 3
   demonstrations from a 32-example holdout: the k-NN embedding pass, then each example's
   answer loss without and with its demonstrations in context) against the fine-tune they
   serve (LoRA r16, the curve settings: ⌈3·N/8⌉ steps of batch 8, i.e. 3 epochs). The ratio
   scoring / training is what the ICA paper reports as ~1.5% (their runs: many epochs over large
   sets, LLaMA-3 8B on GPUs); ours is the same ratio on this CPU.
2. **A refresh** (``train --refresh R`` recomputes the scores R − 1 more times): the scoring
   pass alone (demonstrations are kept), as a fraction of the training time.
3. **RHO-LOSS** (the baseline ICA approximates): training the reference adapter on the holdout
   plus a loss pass over the training set, against the same fine-tune.
4. **Weighted vs unweighted training step** (target ≤ 1.05×), for SFT, DPO and SimPO: the same
   steps and batches with fixed non-uniform weights and without weights.

Each variant runs in its own spawned process with the same thread count (model loading excluded).

    python benchmarks/bench_weighting.py [--threads 2] [--n 64] [--steps 12] [--repeats 2]
"""

from __future__ import annotations

import argparse

import numpy as np

from common import machine, measure, save

TASK = "intent_recognition"


def _data(n: int, holdout: int = 32, pairs: bool = False):
    from dataplan.data.loading import PreferenceExample
    from dataplan.tasks.registry import load_task

    pool = load_task(TASK, "pool")
    order = np.random.default_rng([0, 17]).permutation(len(pool))
    train = [pool[i] for i in order[:n]]
    held = [pool[i] for i in order[n : n + holdout]]
    if not pairs:
        return train, held

    def pair(e, j):
        wrong = [c for c in e.choices if c != e.answer]
        return PreferenceExample(
            id=e.id, prompt=e.prompt, chosen=e.answer, rejected=wrong[j % len(wrong)]
        )

    return [pair(e, j) for j, e in enumerate(train)], [pair(e, j) for j, e in enumerate(held)]


def _setup(n: int, pairs: bool = False):
    from dataplan.data.formatting import PromptSettings
    from dataplan.models.loading import load_model

    loaded = load_model("smollm2-135m-instruct", device="cpu", dtype="float32")
    train, held = _data(n, pairs=pairs)
    return loaded, PromptSettings().formatter(loaded.tokenizer), train, held


def training(phase: str, state=None, *, n: int, steps: int | None, objective: str, weighted: bool):
    if phase == "setup":
        return _setup(n, pairs=objective != "sft")
    from dataplan.training import TrainSettings, train

    loaded, formatter, examples, _ = state
    settings = TrainSettings()
    total = steps or settings.steps_for(len(examples))
    weights = None
    if weighted:  # fixed, non-uniform: every weighted code path runs
        weights = np.random.default_rng(0).uniform(0.0, 1.0, size=len(examples))
    result = train(
        loaded.model,
        examples,
        formatter,
        settings,
        objective=objective,
        steps=total,
        weights=weights,
    )
    return {"steps": total, "train_loss": result.train_loss}


def ica_scoring(phase: str, state=None, *, n: int, refresh_only: bool):
    if phase == "setup":
        loaded, formatter, examples, held = _setup(n)
        from dataplan.training.weighting.ica import ICASettings, choose_demonstrations

        demos = None
        if refresh_only:  # a refresh keeps the demonstrations: not timed
            demos = choose_demonstrations(loaded.model, formatter, examples, held, ICASettings())
        return loaded, formatter, examples, held, demos
    from dataplan.training.weighting.ica import ICASettings, ica_weight_function

    loaded, formatter, examples, held, demos = state
    fn = ica_weight_function(examples, held, formatter, ICASettings(), demos)
    w = fn(loaded.model, 0)
    return {"mean_weight": float(np.mean(w))}


def rho_scoring(phase: str, state=None, *, n: int):
    if phase == "setup":
        return _setup(n)
    from dataplan.training.weighting import get_weighting

    loaded, formatter, examples, held = state
    w = get_weighting("rho", holdout=held).initial(loaded.model, examples, formatter)
    return {"mean_weight": float(np.mean(w))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--n", type=int, default=64, help="training examples")
    parser.add_argument("--steps", type=int, default=12, help="steps of the per-step comparison")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each SFT step variant")
    args = parser.parse_args()
    t = args.threads
    results: dict = {"machine": machine(), "threads": t, "n": args.n, "task": TASK}

    full = measure(training, threads=t, n=args.n, steps=None, objective="sft", weighted=True)
    ica = measure(ica_scoring, threads=t, n=args.n, refresh_only=False)
    refresh = measure(ica_scoring, threads=t, n=args.n, refresh_only=True)
    rho = measure(rho_scoring, threads=t, n=args.n)
    train_s = full["seconds"]
    results["scoring"] = {
        "training": full,
        "ica": ica,
        "ica_refresh": refresh,
        "rho": rho,
        "ica_over_training": ica["seconds"] / train_s,
        "refresh_over_training": refresh["seconds"] / train_s,
        "rho_over_training": rho["seconds"] / train_s,
    }
    print(
        f"{args.n} examples, {full['output']['steps']} steps: training {train_s:.1f} s | ICA "
        f"scoring {ica['seconds']:.1f} s ({ica['seconds'] / train_s:.1%}) | one refresh "
        f"{refresh['seconds']:.1f} s ({refresh['seconds'] / train_s:.1%}) | RHO-LOSS "
        f"{rho['seconds']:.1f} s ({rho['seconds'] / train_s:.1%})"
    )

    steps: dict = {}
    for objective in ("sft", "dpo", "simpo"):
        runs = {"unweighted": [], "weighted": []}
        for _ in range(args.repeats if objective == "sft" else 1):
            for variant in ("unweighted", "weighted"):  # alternated: drifts hit both
                res = measure(
                    training,
                    threads=t,
                    n=args.n,
                    steps=args.steps,
                    objective=objective,
                    weighted=variant == "weighted",
                )
                runs[variant].append(res["seconds"] / args.steps)
        ratio = float(np.mean(runs["weighted"]) / np.mean(runs["unweighted"]))
        steps[objective] = {
            "seconds_per_step": runs,
            "weighted_over_unweighted": ratio,
            "target": 1.05,
            "met": ratio <= 1.05,
        }
        spread = ", ".join(f"{v}: {', '.join(f'{s:.2f}' for s in r)}" for v, r in runs.items())
        print(f"{objective}: s/step {spread} → weighted/unweighted {ratio:.3f}")
    results["steps"] = steps
    print(f"saved {save('weighting', results)}")


if __name__ == "__main__":
    main()
