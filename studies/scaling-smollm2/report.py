"""Write docs/scaling.md from the scaling study's files (whatever tasks are finished).

Reads runs-<task>.csv, fit-<task>.json (`scaling fit --json`), law-<task>.json (`--out`) and,
if present, law-<task>-strategy.json (`scaling fit --strategy-effects --out`) written by run.sh,
and plans each task's own budget with each fitted law.

    .venv/bin/python studies/scaling-smollm2/report.py [--here DIR] [--doc FILE]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
ROOT = HERE.parent.parent


def fmt(v, d=3):
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "—"
    return f"{v:.{d}g}" if abs(v) >= 1e4 or (v and abs(v) < 1e-3) else f"{v:.{d}f}"


def paired_rmse_gap(winner, other, n_boot: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% percentile interval of RMSE(other) − RMSE(winner), resampling runs in pairs."""
    a, b = np.asarray(winner), np.asarray(other)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, a.size, size=(n_boot, a.size))
    gaps = np.sqrt(np.mean(b[idx] ** 2, axis=1)) - np.sqrt(np.mean(a[idx] ** 2, axis=1))
    lo, hi = np.quantile(gaps, [0.025, 0.975])
    return float(lo), float(hi)


def params_table(law: dict) -> list[str]:
    lines = ["| parameter | value | 95% interval |", "|---|---|---|"]
    for name, value in law["params"].items():
        iv = law["intervals"].get(name)
        shown = (
            "fixed"
            if name in law["fixed"]
            else ("—" if iv is None else f"[{fmt(iv[0])}, {fmt(iv[1])}]")
        )
        lines.append(f"| {name} | {fmt(value)} | {shown} |")
    return lines


def task_section(here: Path, task: str) -> list[str]:
    import pandas as pd

    from dataplan.workflows.scaling import plan, plot_plan

    runs = pd.read_csv(here / f"runs-{task}.csv")
    fit = json.loads((here / f"fit-{task}.json").read_text())
    law = json.loads((here / f"law-{task}.json").read_text())
    lines = [f"## {task}", ""]
    metric = runs["metric"].iloc[0] if "metric" in runs else "performance"
    budget = float(np.median(runs["tokens_seen"]))
    lines += [
        f"{len(runs)} runs, metric {metric}, about {budget:,.0f} training tokens per run "
        f"(pool {int(runs['pool_size'].max()) if 'pool_size' in runs else '?'} examples).",
        "",
        "Performance by N (rows) and subsampling strategy (columns), mean tokens per example "
        "in brackets:",
        "",
    ]
    strategies = sorted(runs["strategy"].unique())
    lines.append("| N | " + " | ".join(strategies) + " |")
    lines.append("|---" * (len(strategies) + 1) + "|")
    for n, group in runs.groupby("n_examples"):
        cells = []
        for s in strategies:
            g = group[group.strategy == s]
            cells.append(
                "—" if g.empty else f"{g.performance.mean():.3f} ({g.mean_tokens.mean():.0f})"
            )
        lines.append(f"| {int(n)} | " + " | ".join(cells) + " |")
    laws = {"volume law": law}
    strategy_path = here / f"law-{task}-strategy.json"
    if strategy_path.exists():
        laws["volume law with one intercept per strategy"] = json.loads(strategy_path.read_text())
    for title, fitted_law in laws.items():
        lines += ["", f"Fit of the {title}: {fitted_law['equation']}", ""]
        lines += params_table(fitted_law)
    lines += ["", f"Forms by held-out error (leave one {fit['heldout']['by']} out):", ""]
    lines.append("| form | equation | RMSE | MAE | runs | note |")
    lines.append("|---|---|---|---|---|---|")
    for row in fit["comparison"]:
        note = row.get("error") or "; ".join(row.get("notes", [])) or ""
        lines.append(
            f"| {row['form']} | {row.get('equation', '')} | {fmt(row.get('heldout_rmse'))} | "
            f"{fmt(row.get('heldout_mae'))} | {row.get('heldout_n', '—')} | {note} |"
        )
    rows = {r["form"]: r for r in fit["comparison"] if "error" not in r}
    fitted = [r for r in fit["comparison"] if "error" not in r and not r.get("baseline")]
    pairs = []
    if len(fitted) >= 2:
        pairs.append((fitted[0]["form"], fitted[1]["form"], "winner vs runner-up"))
    pairs += [
        ("volume", "constant", "the paper's form vs no law"),
        ("volume+strategy", "volume", "strategy intercepts vs none"),
        ("volume+strategy", "constant+strategy", "the volume term beyond the intercepts"),
    ]
    lines += [
        "",
        "Paired comparisons on the same held-out runs (RMSE gap = second − first; "
        "95% paired-bootstrap interval):",
        "",
    ]
    lines.append("| comparison | first | RMSE | second | RMSE | first lower by | 95% interval |")
    lines.append("|---|---|---|---|---|---|---|")
    for first, second, what in pairs:
        a, b = rows.get(first), rows.get(second)
        if not a or not b or len(a["heldout_errors"]) != len(b["heldout_errors"]):
            continue
        lo, hi = paired_rmse_gap(a["heldout_errors"], b["heldout_errors"])
        verdict = "" if lo > 0 or hi < 0 else " (includes 0)"
        lines.append(
            f"| {what} | {first} | {fmt(a['heldout_rmse'])} | {second} | "
            f"{fmt(b['heldout_rmse'])} | {100 * (1 - a['heldout_rmse'] / b['heldout_rmse']):.0f}%"
            f" | [{lo:.3f}, {hi:.3f}]{verdict} |"
        )
    if fitted:
        lines += ["", f"**Best form on held-out runs: {fitted[0]['form']}.**"]
    for title, fitted_law in laws.items():
        p = plan(fitted_law, budget)
        best = p["best"]
        iv = best["interval"]
        lines += [
            "",
            f"Plan with the {title} for the same budget ({budget:,.0f} tokens): "
            f"{best['strategy']}, N = {best['n_examples']}, L̄ = {best['mean_tokens']:.1f}, "
            f"{best['epochs']:.2f} epochs, predicted {best['predicted_performance']:.3f}"
            + ("" if iv is None else f" [{iv[0]:.3f}, {iv[1]:.3f}]")
            + (" (extrapolated)" if best["extrapolated"] else "")
            + ". Best per strategy: "
            + ", ".join(
                f"{c['strategy']} {c['predicted_performance']:.3f} (N {c['n_examples']})"
                for c in sorted(p["per_strategy"], key=lambda c: -c["predicted_performance"])
            )
            + ".",
        ]
        for note in p["notes"]:
            lines.append(f"- note: {note}")
    for suffix, fitted_law in zip(("", "-strategy"), laws.values(), strict=False):
        plot_plan(fitted_law, here / f"plan-{task}{suffix}.png")
    pngs = [
        f"{kind}-{task}{suffix}.png" for kind in ("fit", "plan") for suffix in ("", "-strategy")
    ]
    for png in pngs:
        if (here / png).exists():
            rel = (
                Path("..") / (here / png).relative_to(ROOT)
                if here.is_relative_to(ROOT)
                else here / png
            )
            lines += ["", f"![{png[: -len('.png')]}]({rel.as_posix()})"]
    return [*lines, ""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--here", type=Path, default=HERE)
    parser.add_argument("--doc", type=Path, default=ROOT / "docs" / "scaling.md")
    args = parser.parse_args()
    here = args.here.resolve()
    tasks = sorted(
        p.name[len("runs-") : -len(".csv")]
        for p in here.glob("runs-*.csv")
        if (here / f"law-{p.name[5:-4]}.json").exists()
        and (here / f"fit-{p.name[5:-4]}.json").exists()
    )
    lines = [
        "# Scaling-law evidence: the dataset-volume law on the built-in model",
        "",
        "SmolLM2-135M-Instruct fine-tuned with LoRA (the curve settings) at N ∈ {32, 64, 128, 256} "
        "examples chosen by four subsampling strategies, every run under the same compute "
        "budget of C = 24,000 training tokens (steps = C / (batch · L̄)), seed 0; performance "
        "on 150 held-out examples (exact match for addition, option log-likelihood accuracy "
        "for intent_recognition). Then `dataplan scaling fit` (soft-L1, bootstrap 200, "
        "held-out by design point) compares the volume, tokens, examples and Chinchilla-style "
        "forms, each also with one intercept per strategy, against two yardsticks (the "
        "training fold's mean, overall and per strategy). Reproduce: "
        "`bash studies/scaling-smollm2/run.sh` (cached runs: about a minute; from scratch "
        "about 1 CPU-hour per task on 2 cores).",
        "",
        f"**Tasks finished: {len(tasks)}.**",
        "",
    ]
    reading = here / "reading.md"  # the hand-written summary of what the numbers say
    if reading.exists():
        lines += [reading.read_text(encoding="utf-8").rstrip(), ""]
    for task in tasks:
        lines += task_section(here, task)
    args.doc.parent.mkdir(parents=True, exist_ok=True)
    args.doc.write_text("\n".join(lines), encoding="utf-8")
    print(f"wrote {args.doc}")


if __name__ == "__main__":
    main()
