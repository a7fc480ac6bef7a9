"""results.json, table.md, weighting.png and docs/weighting.md of the weighting study."""

from __future__ import annotations

from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
DOC = HERE.parent.parent / "docs" / "weighting.md"


def auroc(weights: np.ndarray, is_bad: np.ndarray) -> float:
    """P(a clean example's weight > a corrupted one's), ties counted half."""
    from scipy.stats import mannwhitneyu

    u = mannwhitneyu(weights[~is_bad], weights[is_bad]).statistic
    return float(u / ((~is_bad).sum() * is_bad.sum()))


def spread(values: list[float], signed: bool = False) -> str:
    mean = float(np.mean(values))
    text = f"{mean:+.3f}" if signed else f"{mean:.3f}"
    return text + (" (n=1)" if len(values) < 2 else f" ± {float(np.std(values, ddof=1)):.3f}")


def summarise(results: dict) -> dict:
    """Per task and method: mean, std, paired Δ to uniform, recovered fraction, weight AUROC."""
    out: dict = {}
    for task, entry in results.items():
        methods = entry["methods"]
        by_seed = {m: dict(zip(v["seeds"], v["per_seed"], strict=True)) for m, v in methods.items()}
        uniform, clean = by_seed.get("uniform", {}), by_seed.get("clean", {})
        rows = {}
        for method, v in methods.items():
            perf = by_seed[method]
            row = {
                "per_seed": [perf[s] for s in sorted(perf)],
                "mean": float(np.mean(list(perf.values()))),
                "std": float(np.std(list(perf.values()), ddof=1)) if len(perf) > 1 else None,
            }
            paired = [perf[s] - uniform[s] for s in perf if s in uniform]
            if method != "uniform" and paired:
                row["delta_vs_uniform"] = paired
            recovered = [
                (perf[s] - uniform[s]) / (clean[s] - uniform[s])
                for s in perf
                if s in uniform and s in clean and clean[s] != uniform[s]
            ]
            if method not in ("uniform", "clean") and recovered:
                row["recovered"] = recovered
            for key in ("weight_auroc", "weight_mean_corrupted", "weight_mean_clean"):
                if key in v:
                    row[key] = v[key]
            if "final_weight_auroc" in v:
                row["final_weight_auroc"] = v["final_weight_auroc"]
            rows[method] = row
        out[task] = {"metric": entry["metric"], "methods": rows}
    return out


def auroc_cell(r: dict) -> str:
    """The weights' AUROC; for refreshed weights also the range over seeds at the end."""
    if "weight_auroc" not in r:
        return "—"
    text = f"{r['weight_auroc']:.3f}"
    final = r.get("final_weight_auroc")
    if final:
        text += f" before training; {min(final):.2f}–{max(final):.2f} after the last refresh"
    return text


def table(summary: dict) -> str:
    lines = []
    for task, entry in summary.items():
        lines += [
            f"**{task}** ({entry['metric']}, 30% of the 300 training labels corrupted):",
            "",
            "| weighting | mean ± std | per seed | Δ vs uniform (paired) | noise loss recovered "
            "| weights' AUROC (clean > corrupted) | mean weight clean / corrupted |",
            "|---|---|---|---|---|---|---|",
        ]
        for method, r in entry["methods"].items():
            std = r["std"]
            cells = [
                method,
                f"{r['mean']:.3f}" + ("" if std is None else f" ± {std:.3f}"),
                ", ".join(f"{v:.3f}" for v in r["per_seed"]),
                spread(r["delta_vs_uniform"], signed=True) if "delta_vs_uniform" in r else "—",
                spread(r["recovered"], signed=True) if "recovered" in r else "—",
                auroc_cell(r),
                (
                    f"{r['weight_mean_clean']:.2f} / {r['weight_mean_corrupted']:.2f}"
                    if "weight_mean_clean" in r
                    else "—"
                ),
            ]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def preference_table(results: dict) -> str:
    """The DPO/SimPO table of preference.py's results: per objective and weighting, mean ± std,
    per seed and the paired difference to uniform of both accuracies, and the weights' AUROC."""
    base = results.get("base_loglik_accuracy")
    lines = [
        f"**{results['task']}** preference pairs (30% of the 300 training pairs swapped, "
        f"{results['steps']} steps"
        + ("" if base is None else f"; the model before training: loglik_accuracy {base:.3f}")
        + "):",
        "",
        "| objective | weighting | loglik_accuracy | Δ vs uniform (paired) | reward_accuracy "
        "| Δ vs uniform (paired) | weights' AUROC (clean > swapped) |",
        "|---|---|---|---|---|---|---|",
    ]
    for objective, methods in results["objectives"].items():
        uniform = methods.get("uniform")
        for method, r in methods.items():
            cells = [objective, method]
            for metric in ("loglik_accuracy", "reward_accuracy"):
                values = r[metric]
                cells.append(spread(values) + " [" + ", ".join(f"{v:.3f}" for v in values) + "]")
                paired = []
                if uniform is not None and method != "uniform":
                    ref = dict(zip(uniform["seeds"], uniform[metric], strict=True))
                    paired = [
                        v - ref[s] for s, v in zip(r["seeds"], values, strict=True) if s in ref
                    ]
                cells.append(spread(paired, signed=True) if paired else "—")
            cells.append(f"{r['weight_auroc']:.3f}" if "weight_auroc" in r else "—")
            lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    return "\n".join(lines)


def cost_section(b: dict) -> list[str]:
    """The benchmark's figures (benchmarks/bench_weighting.py) as a section of the doc."""
    sc = b["scoring"]
    train = sc["training"]
    lines = [
        "## Cost",
        "",
        f"Measured by `benchmarks/bench_weighting.py` ({b['n']} {b['task']} examples, "
        f"{b['threads']} threads on a {b['machine']['cpus']}-core CPU; "
        "`benchmarks/results/weighting.json`):",
        "",
        "| pass | seconds | vs the fine-tune it serves |",
        "|---|---|---|",
        f"| LoRA fine-tune, {train['output']['steps']} steps (3 epochs) | "
        f"{train['seconds']:.1f} | 1 |",
        f"| ICA scoring (k-NN embedding + loss without and with 3 demonstrations) | "
        f"{sc['ica']['seconds']:.1f} | {sc['ica_over_training']:.1%} |",
        f"| one refresh (the scoring pass, demonstrations kept) | "
        f"{sc['ica_refresh']['seconds']:.1f} | {sc['refresh_over_training']:.1%} |",
        f"| RHO-LOSS (reference adapter on the holdout + a loss pass) | "
        f"{sc['rho']['seconds']:.1f} | {sc['rho_over_training']:.1%} |",
        "",
        "The ICA paper reports scoring at about 1.5% of training. Here it is a third to a half, "
        "and the reason is arithmetic, not overhead: scoring costs about one forward pass at the "
        "example's length plus one at the length of the example with k = 3 demonstrations in "
        "front (several times longer: these prompts are long and the answers short), while a "
        "3-epoch LoRA fine-tune costs about 3 × (forward + backward) ≈ 9 forward passes at the "
        "example's length. The ratio falls in proportion to the epochs and to how much of a "
        "sequence the response is (the paper's setting: many epochs of long chat responses on "
        "GPUs). RHO-LOSS costs three quarters of the fine-tune or more here, because its reference "
        "adapter is a fine-tune (of the 32-example holdout, at the curve settings' minimum of 20 "
        "steps).",
        "",
    ]
    steps = b.get("steps", {})
    if steps:
        lines += [
            "| objective | median s/step unweighted | weighted | weighted / unweighted "
            "(median of paired steps) | interquartile range | ≤ 1.05? |",
            "|---|---|---|---|---|---|",
        ]
        for name, r in steps.items():
            med = r.get("median_step_seconds")
            iqr = r.get("paired_ratio_quartiles")
            lines.append(
                f"| {name} | {med['unweighted']:.2f} | {med['weighted']:.2f} | "
                f"{r['weighted_over_unweighted']:.3f} | "
                + (f"{iqr[0]:.3f}–{iqr[2]:.3f}" if iqr else "—")
                + f" | {'yes' if r['met'] else 'no'} |"
                if med
                else f"| {name} | — | — | {r['weighted_over_unweighted']:.3f} | — | "
                f"{'yes' if r['met'] else 'no'} |"
            )
        lines += [
            "",
            "Each step is timed on its own (TrainerCallback), weighted and unweighted runs "
            "alternate with the same batches, and the ratio is the median of step-by-step "
            "ratios. Weighting adds a multiply per example (SFT, SimPO) or per gradient row (DPO): "
            "nothing measurable next to a forward and backward pass; ratios below 1 are noise "
            "(and the weighted run always follows its unweighted twin, which a warm allocator "
            "may favour).",
            "",
        ]
    return lines


def rate_spec(results: dict) -> str:
    """The ``--learning-rate`` spec of the rows in ``results`` (objective=rate, in order)."""
    items = []
    for label, methods in results["objectives"].items():
        if methods:
            rate = float(next(iter(methods.values()))["learning_rate"])
            items.append(f"{label.split(' ')[0]}={rate:g}")
    return ",".join(items)


def learning_rate_lines(path: Path, results: dict) -> list[str]:
    """How the preference study's learning rates were chosen (the validation probe's numbers),
    and the SimPO rows at rates off the probed grid, as far as ``results`` has them."""
    import json

    if not path.exists():
        return []
    probe = json.loads(path.read_text(encoding="utf-8"))
    cells = [
        f"{objective} {float(rate):g}: {acc:.3f}"
        for objective, runs in probe["runs"].items()
        for rate, acc in runs.items()
    ]
    text = (
        "Learning rates were chosen on 100 validation examples outside the pool, the holdout "
        "and the test set (uniform weights, seed 0; option accuracy, "
        f"{probe['before']:.3f} before training): " + "; ".join(cells) + " (ties: the smaller "
        "rate)."
    )
    grid = {float(r) for r in probe["runs"].get("simpo", {})}
    collapsed = bool(grid) and all(acc < 0.1 for acc in probe["runs"]["simpo"].values())
    seeds = {
        label: (
            float(next(iter(methods.values()))["learning_rate"]),
            max(len(m["seeds"]) for m in methods.values()),
        )
        for label, methods in results["objectives"].items()
        if label.startswith("simpo") and methods
    }
    if collapsed:
        text += (
            " SimPO collapsed at every probed rate (validation option accuracy below 0.1; on "
            "the test pairs below its reward accuracy stays well above chance while the "
            "option accuracy falls: the pairs' margins are learnt, the options' likelihoods "
            "are not kept — we did not study why). Its rows at a probed rate are the collapse, "
            "one seed, not evidence of a weighting's effect."
        )
        below = {k: n for k, (rate, n) in seeds.items() if rate not in grid}
        if below:
            text += (
                " So SimPO also ran below the grid — a deviation from the pre-registered choice, "
                "shown as its own rows: "
                + ", ".join(f"{label} with {n} seed(s)" for label, n in below.items())
                + "."
            )
            base = results.get("base_loglik_accuracy")
            for label in below:
                uniform = results["objectives"][label].get("uniform")
                if base is None or not uniform:
                    continue
                acc = float(np.mean(uniform["loglik_accuracy"]))
                reward = float(np.mean(uniform["reward_accuracy"]))
                rate = label.split("(")[-1].rstrip(")")
                if acc < base:
                    text += (
                        f" At {rate} SimPO does not collapse but still lowers the option "
                        f"accuracy ({acc:.3f} with uniform weights against {base:.3f} before "
                        f"training) while its reward accuracy is {reward:.3f}: the weightings "
                        "are compared on a fine-tune that makes the model worse on the task."
                    )
                else:
                    text += (
                        f" At {rate} uniform SimPO reaches option accuracy {acc:.3f} (before "
                        f"training {base:.3f}), reward accuracy {reward:.3f}."
                    )
    return [text, ""]


def gain_lines(tasks: list[str]) -> list[str]:
    """How much k = 1 and k = 3 demonstrations lower clean and corrupted answers' loss: the
    study's cached ICA scores (summed answer-token loss drop), no model needed."""
    import glob

    from run import task_data

    lines = []
    for task in tasks:
        noisy, _, _, _, bad, _ = task_data(task)
        is_bad = np.array([e.id in bad for e in noisy])
        cells, gaps, means = [], [], []
        for k in (1, 3):
            found = sorted(glob.glob(str(HERE / "points" / f"{task}-ica-k{k}-*.safetensors")))
            if len(found) != 1:  # not scored (yet)
                break
            from safetensors.numpy import load_file

            v = load_file(found[0])["v"]
            gaps.append(float(v[~is_bad].mean() - v[is_bad].mean()))
            means.append(float(v.mean()))
            cells.append(
                f"k = {k}: {v[~is_bad].mean():+.2f} nats for clean answers, "
                f"{v[is_bad].mean():+.2f} for corrupted ones ({np.mean(v[~is_bad] < 0):.0%} and "
                f"{np.mean(v[is_bad] < 0):.0%} made less likely)"
            )
        if len(cells) < 2:
            continue
        better = "one demonstration" if gaps[0] > gaps[1] else "three demonstrations"
        lines += [
            f"One demonstration or three on {task}: the mean ICA gain ℓ(y | x) − "
            "ℓ(y | demonstrations; x) of the noisy pool's answers is " + "; ".join(cells) + ". "
            "What separates clean from corrupted examples is the difference of their gains: "
            f"{gaps[0]:+.2f} nats with one demonstration, {gaps[1]:+.2f} with three, larger "
            f"with {better}"
            + _losing(means)
            + ". Whether the difference ranks the examples is the weights' AUROC above.",
            "",
        ]
    return lines


def _losing(means: list[float]) -> str:
    """Which demonstrations (one, three) make the pool's answers less likely on average."""
    losing = [name for name, m in zip(("one", "three"), means, strict=True) if m < 0]
    if not losing:
        return ""
    which = "either" if len(losing) == 2 else losing[0]
    return f"; with {which} in front the answers lose likelihood on the whole"


def margin_lines(path: Path) -> list[str]:
    """Why ICA's margin scores rank swapped pairs first (``ica_margin.py``), if measured."""
    import json

    if not path.exists():
        return []
    m = json.loads(path.read_text(encoding="utf-8"))
    g, w, r = m["gold"], m["wrong"], m["spearman_gain_vs_base_loss"]
    return [
        "Why ICA's weights rank swapped pairs above clean ones (`ica_margin.py`: the two halves "
        "of every training pair's score, same demonstrations; the margins reproduce the "
        f"weights' AUROC, {m['margin_auroc_clean_over_swapped']:.3f}): the three "
        "demonstrations make *both* answers less likely — the mean ICA gain ℓ(y | x) − "
        f"ℓ(y | demonstrations; x) is {g['mean_gain']:+.2f} nats for the gold answer and "
        f"{w['mean_gain']:+.2f} for the wrong one (summed answer loss without them "
        f"{g['mean_base_loss']:.1f} and {w['mean_base_loss']:.1f}) — and the gold answer "
        f"loses more: the wrong answer comes out ahead in {m['share_wrong_gains_more']:.0%} of "
        "pairs. So the margin's change favours whichever pair calls the wrong answer chosen. "
        "The gain rises only weakly with how unlikely the answer was to begin with (Spearman "
        f"{r['rho']:+.2f}, p = {r['p']:.2g}); on this model and format the demonstrations act "
        "as a distraction, not as evidence of the right answer.",
        "",
    ]


def write_report(results: dict, out_dir: Path, seeds: list[int]) -> None:
    from dataplan.io import atomic_path, save_figure, write_json
    from dataplan.plots import pyplot

    summary = summarise(results)
    write_json(out_dir / "results.json", summary)
    text = table(summary)
    with atomic_path(out_dir / "table.md") as tmp:
        tmp.write_text(text, encoding="utf-8")
    plt = pyplot()
    fig, axes = plt.subplots(1, len(summary), figsize=(5 * len(summary), 3.8), squeeze=False)
    for ax, (task, entry) in zip(axes[0], summary.items(), strict=True):
        names = list(entry["methods"])
        means = [entry["methods"][m]["mean"] for m in names]
        stds = [entry["methods"][m]["std"] or 0.0 for m in names]
        ax.bar(range(len(names)), means, yerr=stds, capsize=3, color="C0")
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel(f"test {entry['metric']} (mean ± std, {len(seeds)} seeds)", fontsize=8)
        ax.set_title(task, fontsize=9)
        ax.grid(alpha=0.3, axis="y")
    save_figure(fig, out_dir / "weighting.png")
    plt.close(fig)
    if out_dir.resolve() == HERE.resolve():
        write_doc(summary, text, seeds)
    print(text)


def write_doc(summary: dict, table_text: str, seeds: list[int]) -> None:
    """docs/weighting.md: the settings, the table so far, and how complete it is."""
    from dataplan.io import atomic_path

    counts = [len(r["per_seed"]) for e in summary.values() for r in e["methods"].values()]
    complete = bool(counts) and min(counts) >= len(seeds)
    status = (
        f"SFT: complete for the tasks below, every method with {len(seeds)} seeds."
        if complete
        else (
            "**Partial** — the study is still running (it resumes from its cache: "
            "`.venv/bin/python studies/weighting-smollm2/run.py`). Rows with n=1 are one seed: "
            "not evidence yet."
        )
    )
    lines = [
        "# Weighting training examples: evidence on the built-in model",
        "",
        "Generated by `studies/weighting-smollm2/run.py` (settings in its docstring; methods in "
        "`docs/methods.md §6`). SmolLM2-135M-Instruct is fine-tuned (LoRA r16, the same 75 "
        "optimiser steps for every method, training seeds 0, 1, 2) on a 300-example pool of the "
        "task whose labels are 30% corrupted on purpose (the select study's pool), with a clean "
        "32-example holdout for the weightings that use one, and tested on 150 held-out "
        "examples. `clean` trains on the true labels: the ceiling. *Noise loss recovered* = "
        "(method − uniform) / (clean − uniform), per seed. *Weights' AUROC* = P(a clean "
        "example's weight > a corrupted one's), ties counted half (0.5 = no separation).",
        "",
        status,
        "",
        "## SFT with label noise",
        "",
        table_text,
        "![test performance per weighting](../studies/weighting-smollm2/weighting.png)",
        "",
        *gain_lines(list(summary)),
    ]
    bench = HERE.parent.parent / "benchmarks" / "results" / "weighting.json"
    if bench.exists():
        import json

        lines += cost_section(json.loads(bench.read_text(encoding="utf-8")))
    preference = HERE / "preference.json"
    if preference.exists():
        import json

        results = json.loads(preference.read_text(encoding="utf-8"))
        lines += [
            "## DPO and SimPO with preference noise",
            "",
            "Generated by `studies/weighting-smollm2/preference.py --learning-rate "
            + rate_spec(results)
            + "` (settings in its docstring). Pairs: chosen = the "
            "gold answer, rejected = a random wrong option; 30% of the training pairs swapped; "
            "a clean 32-pair holdout. *loglik_accuracy*: test accuracy by option "
            "log-likelihood; *reward_accuracy*: the share of the 150 clean test pairs whose "
            "implicit reward (DPO: β·log π/π_ref margin; SimPO: length-normalised "
            "log-probability margin) prefers the chosen answer. Values in brackets: per seed.",
            "",
            *learning_rate_lines(HERE / "preference-learning-rate.json", results),
            preference_table(results),
            *margin_lines(HERE / "ica-margin.json"),
        ]
    lines.append("")
    with atomic_path(DOC) as tmp:
        tmp.write_text("\n".join(lines), encoding="utf-8")
