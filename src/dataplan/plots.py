"""The figures every command draws (PNG, written atomically), in one place.

Each function takes results (plain numbers, dicts or dataclasses) and a path; matplotlib runs
headless (Agg) and is imported only when a figure is drawn, as are the scaling workflow's
readers and planner the scaling figures use, so importing this module stays cheap.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from dataplan.errors import ConfigError
from dataplan.evaluation.metrics import METRICS
from dataplan.io import save_figure
from dataplan.maths.forecast import Calibration, Forecast, predicted_curve


def pyplot() -> Any:
    """matplotlib's pyplot on the headless Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_forecast(
    path: Path, fc: Forecast, model: str, label: str, zero_shot: float | None, ceiling: float
) -> None:
    """Predicted normalised curve (log budget axis) with the target and n* marked."""
    plt = pyplot()

    n = np.unique(np.round(np.logspace(0, np.log10(fc.n_max), 200)))
    fig, ax = plt.subplots(figsize=(7, 4.2))
    if fc.auc_interval is not None:
        lo = predicted_curve(fc.auc_interval[0], n, fc.n_max)
        hi = predicted_curve(fc.auc_interval[1], n, fc.n_max)
        ax.fill_between(n, lo, hi, alpha=0.2, label=f"{fc.interval_level:.0%} interval")
    ax.plot(n, predicted_curve(fc.auc, n, fc.n_max), lw=2, label=f"predicted (AUC' = {fc.auc:.3f})")
    ax.axhline(fc.target, color="grey", ls="--", lw=1, label=f"target τ = {fc.target:.2f}")
    ax.axvline(fc.n_star, color="C3", ls=":", lw=1.5, label=f"n* ≈ {fc.n_star:,.0f}")
    ax.set_xscale("log", base=2)
    ax.set_xlim(1, fc.n_max)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("labelled training examples")
    ax.set_ylabel("normalised performance (0 = zero-shot, 1 = ceiling)")
    title = f"{model} on {Path(label).name}: CoS-Low {fc.cos_low:.3f}, calibration {fc.calibration}"
    ax.set_title(title, fontsize=9)
    if zero_shot is not None and ceiling > zero_shot:
        sec = ax.secondary_yaxis(
            "right",
            functions=(
                lambda y: zero_shot + y * (ceiling - zero_shot),
                lambda a: (a - zero_shot) / (ceiling - zero_shot),
            ),
        )
        sec.set_ylabel("accuracy")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    save_figure(fig, path)
    plt.close(fig)


def plot_curve(
    path: Path, label: str, model: str, curve: dict[int, dict[str, float]], majority: float
) -> None:
    plt = pyplot()

    ns = sorted(curve)
    x = [max(n, 1) for n in ns]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for metric in METRICS:
        ys = [curve[n].get(metric) for n in ns]
        if all(y is not None for y in ys):
            ax.plot(x, ys, marker="o", label=metric)
    ax.axhline(majority, color="grey", ls="--", lw=1, label=f"always-majority ({majority:.2f})")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("training examples (0 plotted at 1)")
    ax.set_ylabel("test performance")
    ax.set_ylim(0, 1.02)
    ax.set_title(f"{model} on {label}", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save_figure(fig, path)
    plt.close(fig)


def plot_calibration(path: Path, rows: list[dict[str, Any]], calibration: Calibration) -> None:
    """Measured AUC against CoS-Low per task, the fitted line, tasks left out marked."""
    plt = pyplot()

    x = np.array([r["cos_low"] for r in rows])
    y = np.array([r["auc"] for r in rows])
    fit = np.array([r.get("in_fit", True) for r in rows])
    fig, ax = plt.subplots(figsize=(6, 4.5))
    ax.scatter(x[fit], y[fit], label="in the fit")
    if (~fit).any():
        ax.scatter(x[~fit], y[~fit], marker="x", color="grey", label="left out: no learning gain")
    for r in rows:
        ax.annotate(r["task"], (r["cos_low"], r["auc"]), fontsize=6, alpha=0.7)
    grid = np.linspace(x.min(), x.max(), 50)
    ax.plot(
        grid,
        calibration.coef * grid + calibration.intercept,
        color="C3",
        label=f"AUC' = {calibration.coef:.3f}·CoS + {calibration.intercept:.3f}",
    )
    ax.set_xlabel("CoS-Low")
    ax.set_ylabel("measured AUC")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    save_figure(fig, path)
    plt.close(fig)


def plot_weights(path: Path, weights: np.ndarray | Mapping[str, np.ndarray], *, title: str) -> None:
    """Histogram of per-example training weights in [0, 1]; a mapping (label → weights, e.g.
    one entry per refresh during training) draws one outlined histogram per entry."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    if isinstance(weights, Mapping):
        for i, (label, w) in enumerate(weights.items()):
            ax.hist(
                np.asarray(w, dtype=float),
                bins=20,
                range=(0.0, 1.0),
                histtype="step",
                linewidth=1.6,
                color=f"C{i % 10}",
                label=label,
            )
        ax.legend(fontsize=8)
    else:
        ax.hist(np.asarray(weights, dtype=float), bins=20, range=(0.0, 1.0), color="C0")
    ax.set_xlabel("weight")
    ax.set_ylabel("examples")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    save_figure(fig, path)
    plt.close(fig)


def _save_to(fig: Any, out: Any) -> None:
    """A figure to a path (atomically) or into a binary file object (the report draws into
    memory)."""
    if isinstance(out, (str, Path)):
        save_figure(fig, Path(out))
    else:
        fig.savefig(out, format="png", dpi=110, bbox_inches="tight")


def plot_selection_scores(
    out: Any, scores: np.ndarray, selected: np.ndarray, *, title: str
) -> None:
    """Histogram of a pool's selection scores with the selected subset's on top; ``out`` is a
    path (written atomically) or a binary file object (the report draws into memory)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    finite = np.isfinite(scores)
    values = scores[finite]
    bins = np.histogram_bin_edges(values, bins=30) if values.size else 10
    ax.hist(values, bins=bins, color="0.75", label=f"pool ({values.size})")
    ax.hist(scores[finite & selected], bins=bins, color="C0", label=f"selected ({selected.sum()})")
    ax.set_xlabel("score")
    ax.set_ylabel("examples")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    _save_to(fig, out)
    plt.close(fig)


def plot_selection_mix(out: Any, groups: list[str], selected: np.ndarray, *, title: str) -> None:
    """Share of each group (label or answer-length stratum) in the pool and in the subset, as
    paired bars (the ten largest groups of the pool); ``out`` a path or a binary file object."""
    plt = pyplot()
    names, counts = np.unique(np.asarray(groups, dtype=object).astype(str), return_counts=True)
    order = np.argsort(-counts)[:10]
    names = names[order]
    pool_share = counts[order] / len(groups)
    chosen = np.asarray(groups, dtype=object).astype(str)[selected]
    subset_share = np.array([(chosen == n).mean() if chosen.size else 0.0 for n in names])
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.bar(x - 0.2, pool_share, width=0.4, color="0.7", label=f"pool ({len(groups)})")
    ax.bar(x + 0.2, subset_share, width=0.4, color="C0", label=f"subset ({int(selected.sum())})")
    ax.set_xticks(x, [n if len(n) <= 14 else n[:13] + "…" for n in names], rotation=30, ha="right")
    ax.set_ylabel("share")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    _save_to(fig, out)
    plt.close(fig)


def plot_fit(law_dict: dict[str, Any], runs_path: str | Path, out: str | Path) -> None:
    """Performance against the form's feature, one colour per strategy, with the fitted law.

    The law's curves follow each strategy's length profile (the tokens form: one curve over the
    tokens seen); with several model sizes they are drawn at the median size.
    """
    from dataplan.workflows.scaling_files import _law, read_runs

    plt = pyplot()
    runs = read_runs(runs_path)
    law = _law(law_dict)
    feature, label = {
        "volume": ("volume", "dataset volume V = N · L̄ (tokens)"),
        "tokens": ("tokens_seen", "tokens seen in training T"),
        "examples": ("n_examples", "examples N"),
        "chinchilla": ("n_examples", "examples N"),
    }[law.form]
    strategies = runs.get("strategy") or ["all"] * len(runs["n_examples"])
    if feature == "volume":
        values = np.asarray(runs["n_examples"]) * np.asarray(runs["mean_tokens"])
    else:
        values = np.asarray(runs[feature])
    m = law_dict["model_params"]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    prof = law_dict["strategies"]
    for i, s in enumerate(sorted(set(strategies))):
        colour = colours[i % len(colours)]
        mask = np.array([t == s for t in strategies])
        ax.scatter(values[mask], runs["performance"][mask], label=s, s=18, color=colour)
        if law.form == "tokens" or s not in prof:
            continue
        p = prof[s]
        n = np.geomspace(min(p["n"]), max(p["n"]), 60)
        lb = np.interp(np.log(n), np.log(p["n"]), p["mean_tokens"])
        q = {
            "n_examples": n,
            "mean_tokens": lb,
            "model_params": np.full(n.size, m),
            "strategy": [s] * n.size,
        }
        ax.plot(n * lb if feature == "volume" else n, law.predict(q), lw=1, color=colour)
    if law.form == "tokens":
        t = np.geomspace(values.min(), values.max(), 60)
        q = {
            "n_examples": np.ones(t.size),
            "mean_tokens": np.ones(t.size),
            "model_params": np.full(t.size, m),
            "tokens_seen": t,
        }
        ax.plot(t, law.predict(q), lw=1, color="black", label="law")
    ax.set_xscale("log")
    ax.set_xlabel(label)
    ax.set_ylabel("performance")
    several = np.ptp(runs["model_params"]) > 0
    title = law.equation + (f" (curves at M = {m:.3g})" if several else "")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    save_figure(fig, out)
    plt.close(fig)


def plot_plan(
    law_dict: dict[str, Any],
    out: str | Path,
    *,
    max_examples: int | None = None,
    model_params: float | None = None,
) -> None:
    """Best predicted performance against compute (tokens), dashed where extrapolated, with its
    bootstrap interval and each strategy's best as a thin line. The y-axis follows the
    predictions (padded), so an interval that explodes far outside the fitted runs is cut at
    the frame rather than flattening the curves."""
    from dataplan.workflows.scaling import plan

    plt = pyplot()
    largest_v = max(
        max(np.array(p["n"]) * np.array(p["mean_tokens"])) for p in law_dict["strategies"].values()
    )
    budgets = np.geomspace(largest_v / 50, largest_v * 20, 25)
    pts = []
    per_strategy: dict[str, list[tuple[float, float]]] = {}
    for c in budgets:
        try:
            result = plan(law_dict, c, max_examples=max_examples, model_params=model_params)
        except ConfigError:
            continue
        r = result["best"]
        iv = r["interval"] or (math.nan, math.nan)
        pts.append((c, r["predicted_performance"], iv[0], iv[1], r["extrapolated"]))
        for cand in result["per_strategy"]:
            per_strategy.setdefault(cand["strategy"], []).append((c, cand["predicted_performance"]))
    fig, ax = plt.subplots(figsize=(7, 4.2))
    if pts:
        c, best, lo, hi, extra = (np.array(v) for v in zip(*pts, strict=True))
        inside = np.where(extra, np.nan, best)
        ax.fill_between(c, lo, hi, alpha=0.15, color="black", label="interval of the best")
        ax.plot(c, best, lw=1.5, ls="--", color="black", label="best predicted (extrapolated)")
        ax.plot(c, inside, lw=2.5, color="black", label="best predicted (within the fitted runs)")
        shown = [best]
        if len(per_strategy) > 1:
            for i, (name, points) in enumerate(sorted(per_strategy.items())):
                xs, ys = (np.array(v) for v in zip(*points, strict=True))
                ax.plot(xs, ys, lw=1, color=f"C{i}", label=name)
                shown.append(ys)
        values = np.concatenate(shown)
        values = values[np.isfinite(values)]
        if values.size:
            span = max(float(np.ptp(values)), 0.05 * max(abs(float(values.max())), 1e-6))
            ax.set_ylim(float(values.min()) - 0.3 * span, float(values.max()) + 0.3 * span)
    ax.set_xscale("log")
    ax.set_xlabel("compute budget (training tokens)")
    ax.set_ylabel("predicted performance")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save_figure(fig, out)
    plt.close(fig)


def plot_loss(path: Path, curve: list[tuple[int, float]], *, title: str) -> None:
    """The logged training loss against the optimiser step."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    if curve:
        steps, losses = zip(*curve, strict=True)
        ax.plot(steps, losses, marker="o", ms=3)
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("training loss")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    save_figure(fig, path)
    plt.close(fig)


def plot_probe_decay(result: Any, path: Path) -> None:
    """Û(c) measured across seeds, the fit L_int + K c^(−α), L_int, and c* (if computed)."""
    plt = pyplot()
    fit = result.fit
    c = np.asarray(fit.depths)
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    ax.loglog(c, fit.uncertainty, "o", color="C0", label="Û(c): across-seed variance")
    grid = np.geomspace(c.min() / 2, max(c.max() * 2, result.c_star or 0.0), 200)
    ax.loglog(
        grid,
        fit.predict(grid),
        "-",
        color="C1",
        label=f"L_int + K·c^(−α): α = {fit.alpha:.2f}, K = {fit.K:.3g}",
    )
    if fit.intrinsic > 0:
        ax.axhline(fit.intrinsic, color="0.4", ls=":", label=f"L_int = {fit.intrinsic:.3g}")
    if result.c_star:
        ax.axvline(result.c_star, color="C2", ls="--", label=f"c* = {result.c_star:.0f} steps")
    ax.set_xlabel("probe depth c (optimiser steps)")
    ax.set_ylabel("forecast variance")
    ax.set_title(f"probe uncertainty — {result.regime}", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    save_figure(fig, path)
    plt.close(fig)


def plot_probe_features(path: Path, rows: list[dict[str, Any]], *, title: str) -> None:
    """Each probe feature against depth: one line per seed (the spread is the point)."""
    from dataplan.training.probes import FEATURES

    names = [f for f in FEATURES if any(r.get(f) is not None for r in rows)]
    plt = pyplot()
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3.2), squeeze=False)
    seeds = sorted({r["seed"] for r in rows})
    for ax, name in zip(axes[0], names, strict=True):
        for i, seed in enumerate(seeds):
            mine = sorted((r for r in rows if r["seed"] == seed), key=lambda r: r["c"])
            ax.plot(
                [r["c"] for r in mine],
                [r[name] for r in mine],
                "o-",
                color=f"C{i % 10}",
                alpha=0.8,
                label=f"seed {seed}",
            )
        ax.set_xscale("log", base=2)
        ax.set_xlabel("probe depth (steps)")
        ax.set_title(name.replace("_", " "), fontsize=9)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def plot_phase_diagram(
    path: Path,
    tasks: list[dict[str, Any]],
    thresholds: Any,
    *,
    title: str,
    highlight: dict[str, Any] | None = None,
) -> None:
    """Tasks on the (√L_int, α) plane with the regime boundaries (docs/methods.md §8);
    ``highlight`` (task, intrinsic, alpha, label) is drawn as a star among them."""
    plt = pyplot()
    colours = {"Static-Sufficient": "C2", "Dynamic-Critical": "C1", "Noise-Dominant": "C3"}
    fig, ax = plt.subplots(figsize=(6.2, 4.4))
    shown = [t for t in tasks if t.get("alpha") is not None]
    for name, colour in colours.items():
        mine = [t for t in shown if t["regime"] == name]
        ax.scatter(
            [math.sqrt(t["intrinsic"]) for t in mine],
            [t["alpha"] for t in mine],
            color=colour,
            label=f"{name} ({len(mine)})",
            zorder=3,
        )
    for t in shown:
        ax.annotate(
            t["task"],
            (math.sqrt(t["intrinsic"]), t["alpha"]),
            fontsize=6,
            alpha=0.8,
            xytext=(3, 2),
            textcoords="offset points",
        )
    if highlight is not None:
        ax.scatter(
            [math.sqrt(max(float(highlight["intrinsic"]), 0.0))],
            [float(highlight["alpha"])],
            marker="*",
            s=260,
            color="gold",
            edgecolors="black",
            linewidths=1.2,
            label=str(highlight.get("label") or highlight.get("task")),
            zorder=4,
        )
    ax.axvline(thresholds.noise_sd, color="0.3", ls="--", lw=1)
    ax.axhline(thresholds.fast_alpha, color="0.3", ls=":", lw=1)
    ax.text(thresholds.noise_sd, ax.get_ylim()[1], " Noise-Dominant →", fontsize=7, va="top")
    ax.text(
        ax.get_xlim()[0], thresholds.fast_alpha, " Static-Sufficient ↑", fontsize=7, va="bottom"
    )
    ax.set_xlabel("√L_int: forecast error no probing removes (AUC')")
    ax.set_ylabel("α: decay rate of the seed variance")
    missing = len(tasks) - len(shown)
    note = f"; {missing} task(s) without a decay fit not drawn" if missing else ""
    ax.set_title(title + note, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    save_figure(fig, path)
    plt.close(fig)
