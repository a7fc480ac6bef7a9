"""Data efficiency of a task: the area under its normalised data-efficiency curve.

Definition (arXiv 2512.24991, checked against the authors' ``calculate_per_task_auc.py``):

1. Keep the zero-shot point (n = 0) and every measured budget with ``min(grid) <= n <= n_max``,
   where ``n_max = max(grid)``. Few-shot prompting points (0 < n < min(grid)) and budgets above
   ``n_max`` are ignored; off-grid budgets in range are kept.
2. A grid budget with no measurement enters with value 0, and the whole curve, sorted by n, is
   replaced by its running maximum (so a missing budget carries the previous value forward and
   the curve is non-decreasing).
3. ``x = log2(max(n, 1)) / log2(n_max)`` (zero-shot at 0, n_max at 1).
4. ``y = (a - a_min) / (H - a_min)`` where ``a_min`` is the smallest value of the cleaned curve
   (the zero-shot value when one is measured) and ``H = max(human, best raw value in range)``,
   or the best raw value when no human score is known.
5. AUC = trapezoidal area under (x, y), in [0, 1]. Higher means the task learns from less data.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

PAPER_GRID: tuple[int, ...] = (50, 100, 200, 500, 1000, 2500, 5000)
"""The budgets of the paper; n_max = 5000."""

GENERATION_METRIC = "f1"
ACCURACY_METRICS = ("accuracy", "exact_string_match_accuracy")


def metric_chain(keys: set[str], metric: str | None = None) -> tuple[str, ...]:
    """The metric keys to read, in order of preference, for a file holding ``keys``.

    With ``metric=None`` the paper's rule applies: ``f1`` when the file has it (generation
    tasks), else ``accuracy`` with budgets that lack it filled from
    ``exact_string_match_accuracy``.

    Raises:
        KeyError: if ``metric`` is given but absent, or no known metric is present.
    """
    if metric is not None:
        if metric not in keys:
            raise KeyError(f"metric {metric!r} not found; available: {sorted(keys)}")
        return (metric,)
    if GENERATION_METRIC in keys:
        return (GENERATION_METRIC,)
    present = tuple(m for m in ACCURACY_METRICS if m in keys)
    if not present:
        raise KeyError(f"no known metric among {sorted(keys)}; pass one explicitly")
    return present


def select_metric(
    results: Mapping[str, Mapping[str, float]], metric: str | None = None
) -> dict[int, float]:
    """``{n: value}`` of one metric (see :func:`metric_chain`) from a result file in the paper's
    format, which maps a budget (as a string) to ``{metric_name: value}``."""
    chain = metric_chain({k for v in results.values() for k in v}, metric)
    curve: dict[int, float] = {}
    for n_str, metrics in results.items():
        for name in chain:
            value = metrics.get(name)
            if value is not None:
                curve[int(n_str)] = float(value)
                break
    return curve


def clean_curve(
    curve: Mapping[int, float], grid: Sequence[int] = PAPER_GRID
) -> tuple[np.ndarray, np.ndarray]:
    """Steps 1–2 of the definition: filter budgets, fill the grid, take the running maximum.

    Returns ``(n, a)``: budgets sorted ascending and their non-decreasing values, shape (K,).
    """
    lo, hi = min(grid), max(grid)
    kept = {n: v for n, v in curve.items() if n == 0 or lo <= n <= hi}
    for n in grid:
        kept.setdefault(n, 0.0)
    ns = np.array(sorted(kept), dtype=np.int64)
    values = np.maximum.accumulate(np.array([kept[n] for n in ns], dtype=np.float64))
    return ns, values


def normalised_log_budget(n: np.ndarray | Sequence[int], n_max: int) -> np.ndarray:
    """``x = log2(max(n, 1)) / log2(n_max)``; zero-shot maps to 0 and ``n_max`` to 1."""
    n_arr = np.maximum(np.asarray(n, dtype=np.float64), 1.0)
    return np.log2(n_arr) / math.log2(n_max)


def data_efficiency_auc(
    curve: Mapping[int, float],
    *,
    human_score: float | None = None,
    grid: Sequence[int] = PAPER_GRID,
) -> float:
    """Area under the normalised data-efficiency curve (see the module docstring).

    Args:
        curve: ``{n: performance}``; n = 0 is the zero-shot value.
        human_score: the human-level ceiling H, if known.
        grid: the budget grid; ``max(grid)`` is n_max.

    Returns:
        The AUC in [0, 1]. A curve that never rises above its start has AUC 0.
    """
    if not grid or min(grid) < 1:
        raise ValueError("grid must hold positive budgets")
    lo, hi = min(grid), max(grid)
    raw_in_range = [v for n, v in curve.items() if n == 0 or lo <= n <= hi]
    if not raw_in_range:
        raise ValueError(f"no measured budget in {{0}} or [{lo}, {hi}]")
    best = max(raw_in_range)
    ceiling = best if human_score is None else max(float(human_score), best)
    ns, values = clean_curve(curve, grid)
    floor = float(values.min())
    if ceiling <= floor:
        return 0.0
    y = (values - floor) / (ceiling - floor)
    x = normalised_log_budget(ns, hi)
    return float(np.trapezoid(y, x))


def auc_from_results(
    results: Mapping[str, Mapping[str, float]],
    *,
    metric: str | None = None,
    human_score: float | None = None,
    grid: Sequence[int] = PAPER_GRID,
) -> float:
    """:func:`data_efficiency_auc` of a result file in the paper's format."""
    return data_efficiency_auc(select_metric(results, metric), human_score=human_score, grid=grid)
