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
4. **Weighted vs unweighted training step** (target ≤ 1.05×), for SFT, DPO and SimPO: in one
   process per objective, fine-tunes without and with fixed non-uniform weights alternate
   (``--repeats`` of each, after an untimed warm-up); each optimiser step is timed by a
   ``TrainerCallback`` (step begin to step end: forward, loss, backward, optimiser), so Trainer
   construction and tokenisation are not counted. The same seed gives both variants the same
   batches, so step i of one is paired with step i of the other; the ratio reported is the
   median of the paired per-step ratios, with the ratio of median step times beside it.

Parts 1–3 run each variant in its own spawned process with the same thread count (model loading
excluded).

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


def _step_timer():
    """A TrainerCallback recording each optimiser step's wall time (begin to end)."""
    import time

    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.seconds: list[float] = []
            self._start = 0.0

        def on_step_begin(self, args, state, control, **kwargs):
            self._start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.seconds.append(time.perf_counter() - self._start)

    return StepTimer()


def step_times(phase: str, state=None, *, n: int, steps: int, objective: str, repeats: int):
    """Per-step seconds of alternating unweighted / weighted fine-tunes in this one process."""
    if phase == "setup":
        return _setup(n, pairs=objective != "sft")
    from dataplan.training import TrainSettings, train

    loaded, formatter, examples, _ = state
    weights = np.random.default_rng(0).uniform(0.0, 1.0, size=len(examples))
    runs: dict[str, list[list[float]]] = {"unweighted": [], "weighted": []}
    schedule = ["unweighted"] + ["unweighted", "weighted"] * repeats  # the first: warm-up
    for i, variant in enumerate(schedule):
        timer = _step_timer()
        result = train(
            loaded.model,
            examples,
            formatter,
            TrainSettings(),
            objective=objective,
            steps=steps,
            seed=0,
            weights=weights if variant == "weighted" else None,
            callbacks=[timer],
        )
        loaded.model = result.model.unload()
        if i > 0:
            runs[variant].append(timer.seconds)
    return runs


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
        res = measure(
            step_times,
            threads=t,
            n=args.n,
            steps=args.steps,
            objective=objective,
            repeats=args.repeats,
        )
        runs = res["output"]
        plain = np.array(runs["unweighted"])  # (repeats, steps)
        weighted = np.array(runs["weighted"])
        paired = weighted / plain  # the same batch, step by step, repeat by repeat
        ratio = float(np.median(paired))
        steps[objective] = {
            "seconds_per_step": {
                k: np.median(np.array(v), axis=0).tolist() for k, v in runs.items()
            },
            "median_step_seconds": {
                "unweighted": float(np.median(plain)),
                "weighted": float(np.median(weighted)),
            },
            "paired_ratio_quartiles": np.quantile(paired, [0.25, 0.5, 0.75]).tolist(),
            "weighted_over_unweighted": ratio,
            "ratio_of_medians": float(np.median(weighted) / np.median(plain)),
            "target": 1.05,
            "met": ratio <= 1.05,
        }
        q1, _, q3 = steps[objective]["paired_ratio_quartiles"]
        print(
            f"{objective}: median step {np.median(plain):.2f} s unweighted, "
            f"{np.median(weighted):.2f} s weighted → paired ratio {ratio:.3f} "
            f"(IQR {q1:.3f}–{q3:.3f})"
        )
    results["steps"] = steps
    print(f"saved {save('weighting', results)}")


if __name__ == "__main__":
    main()
