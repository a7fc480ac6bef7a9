"""Evidence for `dataplan select` on the built-in model (proxy = the model trained).

For each task: a seeded pool of POOL examples from the task's training pool (for the corrupted
task, 30% of the pool's labels replaced by another option, on purpose). Every method chooses 10%
(the proxy ensemble: 3 members, 2 epochs over the pool, checkpoints at 25% and 100%); the built-in
model is fine-tuned on each subset with seeds 0, 1, 2 (LoRA, the curve settings) and evaluated on
TEST held-out examples (option log-likelihood accuracy for classification and multiple choice,
exact match otherwise: arithmetic's options saturate at 0.99 log-likelihood accuracy after 16
examples). Selection scores come from one proxy run (seed 0) per method; `random` draws a new
subset per seed. `gsnr-shrinkage` is `--method gsnr --snr-form shrinkage` (the G-SNR without the
members' spread), added after the first task's statistics showed the spread inverting the
shrinkage's separation of corrupted labels; it reads the same cached statistics as `gsnr`.
`…+balanced` rows add `--balance-by label` where the pool's answers are labels (at least 5
examples per distinct answer: intent_recognition, object_counting), `--balance-by answer-length`
otherwise (arithmetic); the label form was added after the first task showed every scored subset
skewed towards a few labels, the length form after arithmetic showed them skewed towards 2- or
3-digit sums. Every fine-tune result is cached in points/, every selection in runs/, so an
interrupted study resumes. Outputs: results.json, table.md, select.png.

    .venv/bin/python studies/select-smollm2/run.py [--tasks a,b,c] [--seeds 0,1,2]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
METHODS = (
    "random",
    "gsnr",
    "gsnr-shrinkage",
    "gradnorm",
    "gradsim",
    "ifd",
    "loss",
    "gsnr+balanced",
    "gsnr-shrinkage+balanced",
)
# gradsim's pass computes every member's and checkpoint's statistics, which gsnr and gradnorm
# then read from the cache: run it first.
COMPUTE_ORDER = (
    "gradsim",
    "gsnr",
    "gradnorm",
    "random",
    "ifd",
    "loss",
    "gsnr-shrinkage",
    "gsnr+balanced",
    "gsnr-shrinkage+balanced",
)
BALANCED = "+balanced"  # --balance-by label, or answer-length when the answers are not labels
STATISTICS = ("grad_norm_early", "grad_norm_late", "grad_shrinkage", "grad_spread_late")
SNR_FORM = {"gsnr-shrinkage": "shrinkage"}  # study method -> --snr-form of --method gsnr
TASKS = {  # task -> fraction of corrupted labels
    "intent_recognition": 0.3,
    "arithmetic_2_digit_addition": 0.0,
    "object_counting": 0.0,
}
POOL, TARGET, TEST, FRACTION, MEMBERS, EPOCHS = 300, 32, 150, 0.1, 3, 2.0
# Scoring shards (the unit of resume; shard files are named by their size, so a size change
# recomputes). The first two tasks ran with the 1,024 default, one shard per pass (~20 min lost
# to an interruption); later tasks use 60 (5 shards, a few minutes each).
SHARD_SIZE = {"intent_recognition": 1024, "arithmetic_2_digit_addition": 1024}


def store():
    """The study's cache of fine-tune results and noise rankings (committed)."""
    from dataplan.store import ResultStore

    return ResultStore(HERE / "points")


def ranking_key(point: dict) -> tuple[str, dict]:
    """Name and identity of a method's noise ranking: its selection (seed 0) on its pool."""
    return f"{point['task']}-{point['method']}-ranking", {
        "identity": point["identity"],
        "selection": {**point["selection"], "seed": 0},
        "pool": point["pool"],
        "fraction": point["fraction"],
    }


def pool_files(task: str, noise: float) -> tuple[Path, Path, list[str]]:
    from dataplan.io import write_json, write_jsonl
    from dataplan.tasks.registry import load_task

    pool = load_task(task, "pool")
    order = np.random.default_rng([0, 17]).permutation(len(pool))
    chosen = [pool[i] for i in order[:POOL]]
    target = [pool[i] for i in order[POOL : POOL + TARGET]]  # clean, disjoint from the pool
    bad: list[str] = []
    if noise > 0:
        from dataplan.tasks.noise import corrupt_answers

        chosen, bad = corrupt_answers(chosen, noise, seed=0)
    folder = HERE / "data"
    label = f"{task}-noisy{round(noise * 100)}" if noise else task
    pool_path, target_path = folder / f"{label}.jsonl", folder / f"{label}-target.jsonl"
    write_jsonl(pool_path, (e.to_record() for e in chosen))
    write_jsonl(target_path, (e.to_record() for e in target))
    if noise:
        write_json(
            folder / f"{label}-corrupted.json",
            {"fraction": noise, "seed": 0, "n": len(bad), "ids": bad},
        )
    return pool_path, target_path, bad


def main() -> None:
    global HERE, POOL, TEST
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--pool", type=int, default=POOL)
    parser.add_argument("--test", type=int, default=TEST)
    parser.add_argument("--out-dir", type=Path, default=HERE, help="for a smoke run elsewhere")
    parser.add_argument("--model", default="smollm2-135m-instruct", help="for a smoke run")
    args = parser.parse_args()
    HERE, POOL, TEST = args.out_dir, args.pool, args.test
    seeds = [int(s) for s in args.seeds.split(",")]
    methods = args.methods.split(",")
    tasks = args.tasks.split(",")
    unknown = [m for m in methods if m not in METHODS] + [t for t in tasks if t not in TASKS]
    if unknown:  # fail now, not hours in
        parser.error(f"unknown method or task: {', '.join(unknown)}")

    from dataclasses import replace

    from dataplan.data.formatting import PromptFormatter
    from dataplan.data.loading import load_examples
    from dataplan.digests import examples_digest
    from dataplan.evaluation import headline_metric
    from dataplan.models.loading import load_model
    from dataplan.store import canonical
    from dataplan.tasks.registry import get_task, load_task
    from dataplan.workflows.curve import CurveConfig, point_settings
    from dataplan.workflows.experiment import train_and_evaluate
    from dataplan.workflows.select import (
        SelectConfig,
        answers_are_labels,
        balance_groups,
        select,
    )

    loaded = load_model(args.model)
    formatter = PromptFormatter(loaded.tokenizer)
    results: dict = {}
    ranking: dict = {}  # task -> method -> how the pool's ranking separates corrupted labels
    info: dict = {}  # task -> how its +balanced rows group the pool
    cache = store()
    for task in tasks:
        noise = TASKS.get(task, 0.0)
        pool_path, target_path, bad = pool_files(task, noise)
        label = pool_path.stem
        test = load_task(task, "test")[:TEST]
        curve_cfg = CurveConfig(model=args.model, task=task, max_test=TEST)
        spec = get_task(task)  # the metric by the project's rule (options for classification / MC)
        has_options = all(e.choices for e in test)
        metric = headline_metric(
            {"loglik_accuracy": 0.0} if has_options else {}, spec.metric, spec.kind
        )
        if metric != "loglik_accuracy":  # scoring every option would be wasted compute
            test = [replace(e, choices=None) for e in test]
        pool_examples = load_examples(pool_path)
        # The groups +balanced rows balance (answers as trained on, corrupted or not), also
        # to report each subset's mix.
        labels = answers_are_labels([e.answer for e in pool_examples])
        balance_by = "label" if labels else "answer-length"
        groups = balance_groups(pool_examples, balance_by)[0].tolist()
        group_of = dict(zip((e.id for e in pool_examples), groups, strict=True))
        target_examples = load_examples(target_path)
        identity = {
            **point_settings(curve_cfg, pool_examples, test),
            "target": examples_digest(target_examples),
            "noise": noise,
            "target_size": TARGET,
        }
        rows = results.setdefault(label, {})
        info[label] = {
            "balance_by": balance_by,
            "pool_top_group_share": max(map(groups.count, set(groups))) / len(groups),
        }
        ranking.setdefault(label, {})
        for method in sorted(methods, key=COMPUTE_ORDER.index):
            base = method.removesuffix(BALANCED)
            for seed in seeds:
                sel_seed = seed if method == "random" else 0
                sel_cfg = SelectConfig(
                    method=base.split("-")[0],
                    snr_form=SNR_FORM.get(base, "default"),
                    balance_by=balance_by if method.endswith(BALANCED) else None,
                    data=str(pool_path),
                    model=args.model,
                    fraction=FRACTION,
                    target=str(target_path) if method == "gradsim" else None,
                    members=MEMBERS if method != "random" else None,
                    epochs=EPOCHS,
                    seed=sel_seed,
                    run_dir=str(HERE / "runs" / label),
                    shard_size=SHARD_SIZE.get(task, 60),
                    progress=True,
                )
                selection = sel_cfg.method_settings()
                if "ensemble" in selection:  # its non-default settings, as the store keys them
                    selection["ensemble"] = canonical(sel_cfg.ensemble)
                if method == "gradsim":  # the target's content, not its path
                    selection["target"] = examples_digest(target_examples)
                key = {
                    "task": label,
                    "method": method,
                    "seed": seed,
                    "selection_seed": sel_seed,
                    "pool": POOL,
                    "fraction": FRACTION,
                    "members": MEMBERS,
                    "epochs": EPOCHS,
                    "test": TEST,
                    "identity": identity,
                    "selection": selection,
                }
                name = f"{label}-{method}-s{seed}"
                point = cache.get_json(name, key)
                if point is None:
                    start = time.perf_counter()
                    chosen = select(sel_cfg, loaded=loaded)
                    select_seconds = time.perf_counter() - start
                    out = train_and_evaluate(
                        loaded,
                        formatter,
                        chosen.selected,
                        test,
                        train_settings=curve_cfg.train,
                        evaluation=curve_cfg.evaluation,
                        seed=seed,
                    )
                    ids = [e.id for e in chosen.selected]
                    point = {
                        **key,
                        **{k: v for k, v in out.items() if k not in ("seed",)},
                        "metric": metric,
                        "performance": out[metric],
                        "k": len(ids),
                        "n_pool": len(pool_examples),
                        "selected_ids": ids,
                        "corrupted_share": float(np.mean([i in set(bad) for i in ids]))
                        if bad
                        else None,
                        "select_seconds": select_seconds,
                        "select_stage_seconds": chosen.seconds,
                    }
                    point = cache.put_json(name, key, point)
                # A subset of one label (or one answer length) teaches the model that answer.
                kept = [group_of[i] for i in point["selected_ids"]]
                point["subset_top_group_share"] = max(map(kept.count, set(kept))) / len(kept)
                print(
                    f"{label} {method} seed {seed}: {metric} {point['performance']:.3f}", flush=True
                )
                rows.setdefault(method, []).append(point)
            if bad and method != "random":  # cached; else recomputed from the cached scores
                sel_cfg = replace(sel_cfg, seed=0, progress=False)
                name, rid = ranking_key(point)
                found = cache.cached_json(
                    name,
                    rid,
                    lambda c=sel_cfg, b=set(bad): noise_ranking(select(c, loaded=loaded), b),
                )
                ranking[label][method] = {k: v for k, v in found.items() if k != "settings"}
    write_report(results, ranking, info)


def noise_ranking(chosen, bad: set[str]) -> dict:
    """How a method's ranking of the whole pool separates the corrupted examples.

    ``auroc``: P(a clean example ranks above a corrupted one), ties counted half (Mann-Whitney
    U / (n_clean · n_bad)); 0.5 is chance, 1.0 puts every corrupted example last.
    ``bottom_share``: share of corrupted examples among the |bad| ranked last.
    """
    from scipy.stats import mannwhitneyu

    is_bad = np.array([i in bad for i in chosen.columns["id"]])
    rank = np.asarray(chosen.rank)
    # A lower rank is better: a clean example "wins" when its rank is smaller.
    u = mannwhitneyu(-rank[~is_bad], -rank[is_bad]).statistic
    bottom = np.argsort(rank)[-int(is_bad.sum()) :]
    pairs = (~is_bad).sum() * is_bad.sum()
    out = {
        "auroc": float(u / pairs),
        "bottom_share": float(is_bad[bottom].mean()),
        "selected_share": float(is_bad[rank < chosen.k].mean()),
    }
    # The statistics behind a gradient score: P(a clean example's value > a corrupted one's).
    for column in STATISTICS:
        if column in chosen.columns:
            v = np.asarray(chosen.columns[column], dtype=np.float64)
            u = mannwhitneyu(v[~is_bad], v[is_bad]).statistic
            out.setdefault("statistics", {})[column] = float(u / pairs)
    return out


def write_report(results: dict, ranking: dict, info: dict) -> None:
    """results.json, table.md and select.png from the points of this invocation.

    Scored methods select once (seed 0) and their seeds vary only the fine-tune; ``random``
    varies selection and fine-tune. Training seeds are shared by all methods, so per-seed
    differences to ``random`` are paired. ``test_se`` is the binomial standard error of one
    evaluation on the test set, which the spread over seeds does not include.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dataplan.io import atomic_path, save_figure, write_json

    summary: dict = {}
    for label, rows in results.items():
        first = next(iter(rows.values()))[0]
        summary[label] = {
            "metric": first["metric"],
            "k": first["k"],
            "n_pool": first["n_pool"],
            "n_test": first["n_test"],
            "fraction": FRACTION,
            **info[label],
            "methods": {},
        }
        majority_key = (
            "loglik_majority_share"
            if first["metric"] == "loglik_accuracy"
            else "prediction_majority_share"
        )
        base = {p["seed"]: p["performance"] for p in rows.get("random", [])}
        for method in METHODS:
            pts = rows.get(method, [])
            if not pts:
                continue
            perf = np.array([p["performance"] for p in pts])
            mean = float(perf.mean())
            entry = {
                "mean": mean,
                "std": float(perf.std(ddof=1)) if len(perf) > 1 else None,
                "seeds": [p["seed"] for p in pts],
                "per_seed": perf.tolist(),
                "test_se": float(np.sqrt(mean * (1 - mean) / first["n_test"])),
                # Share of the most common test prediction (1.0: the model answers one label).
                "prediction_majority_share": float(
                    np.mean([p.get(majority_key) or 0.0 for p in pts])
                ),
            }
            paired = [p["performance"] - base[p["seed"]] for p in pts if p["seed"] in base]
            if method != "random" and paired:  # same training seed: a paired difference
                entry["delta_vs_random"] = {
                    "mean": float(np.mean(paired)),
                    "std": float(np.std(paired, ddof=1)) if len(paired) > 1 else None,
                    "n": len(paired),
                }
            entry["subset_top_group_share"] = float(
                np.mean([p["subset_top_group_share"] for p in pts])
            )
            shares = [p["corrupted_share"] for p in pts if p["corrupted_share"] is not None]
            if shares:
                entry["corrupted_share"] = float(np.mean(shares))
            if ranking.get(label, {}).get(method):
                entry["noise_ranking"] = ranking[label][method]
            summary[label]["methods"][method] = entry
        # Cost when first computed (later seeds reuse the cached ensemble and scores).
        stages = [p.get("select_stage_seconds") or {} for pts in rows.values() for p in pts]
        summary[label]["ensemble_training_seconds"] = max(
            (st.get("ensemble_training", 0.0) for st in stages), default=None
        )
        summary[label]["scoring_seconds"] = {
            m: max((p.get("select_stage_seconds") or {}).get("scoring", 0.0) for p in pts)
            for m, pts in rows.items()
        }
        stats: dict = {}  # statistic -> separation (every gradient method reads one ensemble)
        for r in ranking.get(label, {}).values():
            stats.update(r.get("statistics", {}))
        if stats:
            summary[label]["ensemble_statistics_clean_above_corrupted"] = stats

    def spread(mean: float, std: float | None, signed: bool = False) -> str:
        text = f"{mean:+.3f}" if signed else f"{mean:.3f}"
        return text + (" (n=1)" if std is None else f" ± {std:.3f}")

    labels = list(summary)
    lines = [
        "Test performance, mean ± std over fine-tune seeds:",
        "",
        "| method | " + " | ".join(f"{lb} ({summary[lb]['metric']})" for lb in labels) + " |",
        "|---|" + "---|" * len(labels),
    ]
    for method in METHODS:
        cells = [summary[lb]["methods"].get(method) for lb in labels]
        if any(cells):
            shown = [spread(c["mean"], c["std"]) if c else "—" for c in cells]
            lines.append(f"| {method} | " + " | ".join(shown) + " |")
    for label, entry in summary.items():
        methods = entry["methods"]
        noisy = any("corrupted_share" in m for m in methods.values())
        labelled = entry["balance_by"] == "label"
        group = "label" if labelled else "answer length"
        head = ["method", "mean ± std", "per seed", "Δ vs random (paired)"]
        if noisy:
            head += ["corrupted kept", "corrupted AUROC"]
        head += [f"subset's top {group}"]
        if labelled:
            head += ["test predictions' top label"]
        lines += [
            "",
            f"**{label}**: {entry['metric']}, k = {entry['k']} of a pool of {entry['n_pool']}, "
            f"{entry['n_test']} test examples; +balanced = --balance-by {entry['balance_by']}; "
            f"the pool's top {group} holds {entry['pool_top_group_share']:.0%} of it"
            + (
                "; corrupted AUROC = P(a clean example ranks above a corrupted one), 0.5 = chance"
                if noisy
                else ""
            )
            + ".",
            "",
            "| " + " | ".join(head) + " |",
            "|" + "---|" * len(head),
        ]
        for method, m in methods.items():
            delta = m.get("delta_vs_random")
            row = [
                method,
                spread(m["mean"], m["std"]),
                ", ".join(f"{v:.3f}" for v in m["per_seed"]),
                spread(delta["mean"], delta["std"], signed=True) if delta else "—",
            ]
            if noisy:
                auroc = m.get("noise_ranking", {}).get("auroc")
                row += [
                    f"{m['corrupted_share']:.0%}" if "corrupted_share" in m else "—",
                    "—" if auroc is None else f"{auroc:.3f}",
                ]
            row += [f"{m['subset_top_group_share']:.0%}"]
            if labelled:
                row += [f"{m['prediction_majority_share']:.0%}"]
            lines.append("| " + " | ".join(row) + " |")
        stats = entry.get("ensemble_statistics_clean_above_corrupted")
        if stats:
            lines += [
                "",
                "The ensemble's per-example statistics, P(a clean example's value > a corrupted "
                "one's) (0.5 = no separation; < 0.5: corrupted examples have higher values):",
                "",
                "| " + " | ".join(STATISTICS) + " |",
                "|" + "---|" * len(STATISTICS),
                "| "
                + " | ".join(f"{stats[c]:.3f}" if c in stats else "—" for c in STATISTICS)
                + " |",
            ]
    write_json(HERE / "results.json", summary)
    with atomic_path(HERE / "table.md") as tmp:
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / len(METHODS)
    for j, method in enumerate(METHODS):
        xs, ys, es = [], [], []
        for i, label in enumerate(summary):
            entry = summary[label]["methods"].get(method)
            if entry:
                xs.append(i + j * width)
                ys.append(entry["mean"])
                es.append(entry["std"] or 0.0)
        ax.bar(xs, ys, width, yerr=es, label=method, capsize=2)
    ticks = [f"{label}\n({summary[label]['metric']})" for label in summary]
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(summary))], ticks, fontsize=7)
    ax.set_ylabel("test performance (mean ± std over seeds)")
    ax.set_title(f"SmolLM2-135M fine-tuned on {FRACTION:.0%} subsets of {POOL}", fontsize=9)
    ax.legend(fontsize=7, ncol=3)
    save_figure(fig, HERE / "select.png")
    plt.close(fig)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
