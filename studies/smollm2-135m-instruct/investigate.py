"""Why does (or doesn't) CoS-Low predict data efficiency on the built-in model? Variants of it.

For every task of the calibration study with a finished curve and estimate (study/), starting
from the estimate's own run folder (pool confidences, the 32 chosen low-confidence examples):

- ``cos_low``            the study's CoS-Low (fresh adapter r 64, seed 0, B-only gradients);
- ``cos_low_ci``         90% bootstrap interval of that median over the 32 examples (sample size);
- ``adapter_seed_1/2``   the same with other fresh-adapter seeds (A is random: seed noise);
- ``frozen``             the seed-free limit: cosines of the frozen weights' own gradients;
- ``warm``               a warmed adapter: r 64 LoRA trained 20 steps on 64 other pool examples,
                         then A and B gradients of the same 32 examples;
- ``perplexity_low``     the low set defined by answer perplexity instead of mean max-probability;
- ``cos_random``         CoS of 32 random pool examples (from the estimate).

Each variant's leave-one-task-out Spearman, Pearson and MAE against the curve AUC follow, as for
CoS-Low in `dataplan calibrate`, over the calibration's fit set (``--all-tasks`` for every
task). Cached per task in investigate/<task>.json; resumable; the summary is
investigate/investigation.{json,md}.

    .venv/bin/python studies/smollm2-135m-instruct/investigate.py
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
STUDY = HERE / "study"
OUT = HERE / "investigate"
VARIANTS = (
    "cos_low",
    "adapter_seed_1",
    "adapter_seed_2",
    "frozen",
    "warm",
    "perplexity_low",
    "cos_random",
)


def bootstrap_median_ci(cosines: np.ndarray, draws: int = 2000, seed: int = 0) -> list[float]:
    """90% interval of the median pairwise cosine when the N examples are resampled.

    Pairs of a resampled example with its own copy are left out (their cosine is 1 by
    construction, not a measurement).
    """
    rng = np.random.default_rng(seed)
    n = cosines.shape[0]
    medians = []
    for _ in range(draws):
        idx = rng.integers(0, n, size=n)
        i, j = np.triu_indices(n, k=1)
        a, b = idx[i], idx[j]
        keep = a != b
        medians.append(np.median(cosines[a[keep], b[keep]]))
    return [float(np.quantile(medians, 0.05)), float(np.quantile(medians, 0.95))]


def auc_of(task: str) -> tuple[float, str] | None:
    from dataplan.evaluation import headline_metric as auto_metric
    from dataplan.tasks.registry import get_task

    path = STUDY / "curves" / task / "summary.json"
    if not path.exists():
        return None
    summary = json.loads(path.read_text())
    aucs = summary["auc"]
    spec = get_task(task)
    metric = auto_metric(aucs, spec.metric, spec.kind)
    return (aucs[metric], metric) if metric in aucs else None


def variants_for(task: str, loaded) -> dict:
    from dataplan.data.formatting import PromptFormatter
    from dataplan.data.loading import load_examples
    from dataplan.io import read_parquet, write_json
    from dataplan.maths.confidence import lowest_confidence
    from dataplan.models.lora import LoraSettings
    from dataplan.training import TrainSettings, train
    from dataplan.workflows.coslow import coslow
    from dataplan.workflows.estimate import EstimateConfig, load_pool

    cached = OUT / f"{task}.json"
    if cached.exists():
        return json.loads(cached.read_text())
    run = STUDY / "estimates" / task
    result = json.loads((run / "result.json").read_text())
    config = json.loads((run / "config.json").read_text())
    chosen = load_examples(run / "chosen.jsonl", require_answer=True)
    pool, _, _ = load_pool(EstimateConfig(model=config["model"], task=task, max_pool=400))
    formatter = PromptFormatter(loaded.tokenizer)
    out: dict = {"task": task, "cos_low": result["cos_low"]}
    out["cos_random"] = result["baselines"]["cos_random"]
    out["cos_low_ci"] = bootstrap_median_ci(np.asarray(result["cosines"]))

    def cos(examples, **kw) -> float:
        return float(coslow(loaded, examples, formatter=formatter, progress=False, **kw).coslow)

    for seed in (1, 2):
        out[f"adapter_seed_{seed}"] = cos(chosen, lora=LoraSettings(seed=seed))
    out["frozen"] = cos(chosen, space="frozen", batch_size=32)
    # Warmed adapter: 20 steps on 64 pool examples outside the chosen 32.
    chosen_ids = {e.id for e in chosen}
    others = [e for e in pool if e.id not in chosen_ids]
    rng = np.random.default_rng(0)
    warm_set = [others[i] for i in rng.choice(len(others), size=64, replace=False)]
    settings = TrainSettings(lora_r=64, lora_alpha=32.0, min_steps=20, max_steps=20)
    warmed = train(loaded.model, warm_set, formatter, settings)
    peft_model, log = warmed.model, warmed.log()
    adapter_dir = OUT / "adapters" / task
    peft_model.save_pretrained(str(adapter_dir))
    loaded.model = peft_model.unload()
    loaded.model.eval()
    out["warm"] = cos(chosen, adapter=str(adapter_dir))
    out["warm_train_loss"] = log["train_loss"]
    # Low set by perplexity of the greedy answer instead of mean max-token probability.
    cols = read_parquet(run / "confidences.parquet")
    if list(cols["id"]) != [e.id for e in pool]:
        raise RuntimeError(f"{task}: the cached confidences do not match the pool")
    _, idx = lowest_confidence(-np.asarray(cols["perplexity"]), 0.1, k=32, seed=0)
    out["perplexity_low"] = cos([pool[i] for i in idx])
    out["perplexity_low_overlap"] = len(chosen_ids & {pool[i].id for i in idx})
    write_json(cached, out)
    return out


def main() -> None:
    import argparse

    global OUT
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct", help="for a smoke run")
    parser.add_argument("--out-dir", type=Path, default=OUT, help="for a smoke run")
    parser.add_argument(
        "--all-tasks",
        action="store_true",
        help="every task with an estimate, not only the calibration's fit set (study.json in_fit)",
    )
    args = parser.parse_args()
    OUT = args.out_dir
    from dataplan.io import write_json
    from dataplan.maths.forecast import leave_one_out_scores
    from dataplan.models.loading import load_model

    tasks = sorted(p.name for p in (STUDY / "estimates").iterdir() if (p / "result.json").exists())
    if not args.all_tasks:
        # The leave-one-task-out figures of `calibrate` are over the fit set (tasks that learn);
        # the variants are compared on the same tasks.
        study = json.loads((STUDY / "study.json").read_text())
        in_fit = {row["task"] for row in study["tasks"] if row.get("in_fit")}
        tasks = [t for t in tasks if t in in_fit]
    loaded = load_model(args.model)
    rows = []
    for task in tasks:
        auc = auc_of(task)
        if auc is None:
            continue
        row = variants_for(task, loaded)
        row["auc"], row["auc_metric"] = auc
        rows.append(row)
        print(task, {k: round(row[k], 4) for k in VARIANTS}, "AUC", round(auc[0], 3), flush=True)
    y = [r["auc"] for r in rows]
    scores = {}
    for v in VARIANTS:
        s = leave_one_out_scores([r[v] for r in rows], y)
        scores[v] = {k: s[k] for k in ("spearman", "pearson", "mae")}
    seed_spread = [np.std([r["cos_low"], r["adapter_seed_1"], r["adapter_seed_2"]]) for r in rows]
    ci_width = [r["cos_low_ci"][1] - r["cos_low_ci"][0] for r in rows]
    summary = {
        "tasks": rows,
        "leave_one_task_out": scores,
        "mean_adapter_seed_sd": float(np.mean(seed_spread)),
        "mean_bootstrap_ci_width": float(np.mean(ci_width)),
        "cos_low_range_over_tasks": float(np.ptp([r["cos_low"] for r in rows])),
    }
    write_json(OUT / "investigation.json", summary)
    lines = [
        "| variant | LOO Spearman | LOO Pearson | LOO MAE |",
        "|---|---|---|---|",
        *(
            f"| {v} | {s['spearman']:.3f} | {s['pearson']:.3f} | {s['mae']:.3f} |"
            for v, s in scores.items()
        ),
        "",
        f"{len(rows)} tasks. Mean sd of CoS-Low over 3 adapter seeds: "
        f"{summary['mean_adapter_seed_sd']:.4f}; mean width of the 90% bootstrap interval over the "
        f"32 examples: {summary['mean_bootstrap_ci_width']:.4f}; range of CoS-Low across tasks: "
        f"{summary['cos_low_range_over_tasks']:.4f}.",
    ]
    (OUT / "investigation.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
