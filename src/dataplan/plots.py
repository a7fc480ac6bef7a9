"""The figures every command draws (PNG, written atomically), in one place.

Each function takes results (plain numbers, dicts or dataclasses) and a path; matplotlib runs
headless (Agg).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

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


def plot_weights(path: Path, weights: np.ndarray, *, title: str) -> None:
    """Histogram of per-example training weights in [0, 1]."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.hist(np.asarray(weights, dtype=float), bins=20, range=(0.0, 1.0), color="C0")
    ax.set_xlabel("weight")
    ax.set_ylabel("examples")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    save_figure(fig, path)
    plt.close(fig)
