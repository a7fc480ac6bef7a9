"""Fitting one scaling-law form: exponent-grid starts and robust least squares (docs/methods.md §7).

For fixed exponents every form is linear in its other internal parameters (see :mod:`.forms`),
so a grid of exponents with the linear least-squares fit of the rest gives the starting points
(:func:`_starts`, each of shape (params + levels − 1,)); :func:`fit_params` runs
:func:`scipy.optimize.least_squares` with a robust loss from the best of them and keeps the best
converged fit (:class:`FitResult`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from scipy import optimize

from dataplan.maths.scaling.forms import (
    LEVEL,
    LawForm,
    ScalingInputError,
    _bounds,
    _box_cox,
    _evaluate,
    _power_internal,
)

MAX_EVALUATIONS = 1000  # per start; well-started fits need a few dozen


def _starts(
    form: LawForm,
    xn: Mapping[str, np.ndarray],
    y: np.ndarray,
    n_starts: int,
    *,
    fixed_gamma: bool,
    levels: int = 1,
) -> list[np.ndarray]:
    """Starting points by variable projection: for fixed exponents every form is linear in its
    other (internal) parameters, so a grid of exponents with the linear least-squares fit of
    the rest gives the ``n_starts`` best exponent combinations (deterministic, no seed needed).

    Power forms: β ∈ [−2, 2] (41 values), γ ∈ [−1, 1] (11) unless fixed; chinchilla:
    α, β ∈ [0, 3] (16 values each). Strategy offsets are linear too (one indicator column
    per non-reference strategy). Each start has shape (params + levels − 1,).
    """
    indicators = (
        [np.asarray(xn[LEVEL] == j, dtype=np.float64) for j in range(1, levels)]
        if levels > 1
        else []
    )
    columns: list[tuple[np.ndarray, ...]]  # the linear terms' columns of each combination
    if form.name == "chinchilla":
        grid = np.linspace(0.0, 3.0, 16)
        log_n, log_l = np.log(xn["n_examples"]), np.log(xn["mean_tokens"])
        combos = [(al, be) for al in grid for be in grid]
        columns = [
            (np.ones_like(y), _box_cox(log_n, -al), _box_cox(log_l, -be)) for al, be in combos
        ]
    else:
        base = form.features[0]
        gammas = np.zeros(1) if fixed_gamma else np.linspace(-1.0, 1.0, 11)
        combos = [(be, ga) for be in np.linspace(-2.0, 2.0, 41) for ga in gammas]
        columns = [
            (
                _power_internal(np.array([1.0, be, ga, 0.0]), xn, base),
                np.ones_like(y),
            )
            for be, ga in combos
        ]
    scored = []
    for (e1, e2), cols in zip(combos, columns, strict=True):
        design = np.stack([*cols, *indicators], axis=1)
        coef, *_ = np.linalg.lstsq(design, y, rcond=None)
        sse = float(np.sum((design @ coef - y) ** 2))
        if form.name == "chinchilla":
            start = np.array([coef[0], coef[1], e1, coef[2], e2, *coef[3:]])
        else:
            start = np.array([coef[0], e1, e2, coef[1], *coef[2:]])
        if np.all(np.isfinite(start)) and np.isfinite(sse):
            scored.append((sse, start))
    scored.sort(key=lambda t: t[0])
    return [start for _, start in scored[: max(1, n_starts)]]


@dataclass
class FitResult:
    params: np.ndarray
    cost: float
    success: bool
    residuals: np.ndarray


def fit_params(
    form: LawForm,
    xn: Mapping[str, np.ndarray],
    y: np.ndarray,
    *,
    fixed_gamma: bool,
    loss: str,
    f_scale: float,
    starts: list[np.ndarray],
    levels: int = 1,
) -> FitResult:
    """Best of several robust, exponent-bounded least-squares fits (normalised features)."""
    k = len(form.params)
    free = [
        i for i, name in enumerate(form.params) if not (fixed_gamma and name == form.power_of_model)
    ] + list(range(k, k + levels - 1))
    lo, hi = _bounds(form, levels)

    def full(q: np.ndarray) -> np.ndarray:
        p = np.zeros(k + levels - 1)
        p[free] = q
        return p

    def residual(q: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore", invalid="ignore"):
            r = _evaluate(form, full(q), xn, levels) - y
        return np.where(np.isfinite(r), r, 1e6)

    best: FitResult | None = None
    for s in starts:
        x0 = np.clip(s[free], lo[free], hi[free])
        try:
            sol = optimize.least_squares(
                residual,
                x0,
                bounds=(lo[free], hi[free]),
                loss=loss,
                f_scale=f_scale,
                max_nfev=MAX_EVALUATIONS,
            )
        except (ValueError, np.linalg.LinAlgError):
            continue
        if not np.all(np.isfinite(sol.x)):
            continue
        if best is None or sol.cost < best.cost:
            best = FitResult(full(sol.x), float(sol.cost), bool(sol.success), sol.fun)
    if best is None:
        raise ScalingInputError("the fit failed from every starting point")
    return best
