"""Risk decomposition and budget-optimal probing (arXiv 2606.17649; docs/methods.md §8).

A *probe* is a short fine-tune of c optimiser steps; S seeds give S predictions of the target
(the task's AUC') at each depth c. The uncertainty of the forecast at c splits into an intrinsic
limit that no probing removes and an optimisation variance that decays with c::

    Û(c) = L_int + V_opt(c),      V_opt(c) = K · c^(−α)          (L_int ≥ 0, K ≥ 0)

V̂(c), the across-seed variance of the prediction at c (ddof = 1, averaged over tasks when there
are several), measures what probing can remove. With L_int known from elsewhere (``intrinsic``:
e.g. a calibration's leave-one-task-out error net of seed noise), Û(c) = L_int + V̂(c) and K, α
come from the log-log regression of Û − L_int = V̂ on c (the paper's procedure); with L_int
unknown [our choice] Û = V̂ and L_int is its plateau — the seed variance no depth removes: the L in
[0, min Û) whose log-log fit of Û − L best fits log Û (a profile over a grid, refined by a
bounded scalar search), which needs ≥ 3
depths (with 2 it is set to 0 and reported as not identifiable).

The budget-optimal depth minimises risk + price · c (the paper's L(c) + γ·C(c) with
C(c) = C_s + λc, so price = γλ: the variance one probe step must remove to be worth it)::

    c* = (α K / price)^(1/(α+1))        (0 when α ≤ 0 or K = 0: probing does not pay)

Regimes on the (L_int, α) plane (the paper describes them qualitatively; the thresholds are
[our choice], parameters with defaults, on the target's scale):

- **Noise-Dominant**: √L_int ≥ ``noise_sd`` (default 0.1 of AUC'): probing cannot remove it;
- **Static-Sufficient**: α ≥ ``fast_alpha`` (default 1: the variance falls faster than 1/c), or
  V_opt(c₁) ≤ L_int at the shallowest probe c₁ (the static uncertainty dominates already);
- **Dynamic-Critical**: otherwise — little intrinsic noise, slow decay: deep probing pays.

A static forecast (mean μ_s, variance σ²_s) and a probe forecast (μ_p, σ²_p) are combined by
inverse variance, μ = (μ_s/σ²_s + μ_p/σ²_p) / (1/σ²_s + 1/σ²_p), σ² = 1 / (1/σ²_s + 1/σ²_p);
a probe with infinite variance leaves the static forecast unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

REGIMES = ("Static-Sufficient", "Dynamic-Critical", "Noise-Dominant")
NOISE_SD = 0.1
"""Default ``noise_sd``: an irreducible forecast standard deviation of AUC' this large or larger
makes a task Noise-Dominant."""
FAST_ALPHA = 1.0
"""Default ``fast_alpha``: a decay this fast or faster makes a task Static-Sufficient."""
_GRID = 200  # L_int values profiled when L_int is unknown


class ProbeFitError(ValueError):
    """The probe measurements cannot be fitted (too few seeds or depths, bad values)."""


def seed_variance(
    depth: ArrayLike,
    seed: Sequence[Any],
    prediction: ArrayLike,
    task: Sequence[Any] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Û at each depth: the across-seed variance (ddof = 1) of the prediction, averaged over
    tasks.

    Args:
        depth, seed, prediction: one row per (task, seed, depth) probe measurement, (R,) each.
        task: (R,) task labels (None: one task).

    Returns:
        ``(c, U)``: the distinct depths in increasing order and Û there, each (D,).

    Raises:
        ProbeFitError: a non-finite value, a non-positive depth, a (task, seed, depth) given
            twice, fewer than 2 seeds of a task at some depth, or fewer than 2 depths.
    """
    c = np.asarray(depth, dtype=np.float64)
    y = np.asarray(prediction, dtype=np.float64)
    if c.shape != y.shape or c.ndim != 1 or len(seed) != len(c):
        raise ProbeFitError("depth, seed and prediction must have one value per row")
    if not (np.isfinite(c).all() and np.isfinite(y).all()):
        raise ProbeFitError("depths and predictions must be finite numbers")
    if (c <= 0).any():
        raise ProbeFitError("depths (probe steps) must be positive")
    tasks = [""] * len(c) if task is None else [str(t) for t in task]
    cells: dict[tuple[str, float], dict[str, float]] = {}
    for t, s, ci, yi in zip(tasks, seed, c, y, strict=True):
        cell = cells.setdefault((t, float(ci)), {})
        if str(s) in cell:
            raise ProbeFitError(f"task {t!r} seed {s} depth {ci:g} appears twice")
        cell[str(s)] = float(yi)
    depths = sorted({key[1] for key in cells})
    if len(depths) < 2:
        raise ProbeFitError("probes at one depth only: at least 2 depths are needed")
    names = sorted({key[0] for key in cells})
    u = np.zeros(len(depths))
    for j, d in enumerate(depths):
        per_task = []
        for t in names:
            values = list(cells.get((t, d), {}).values())
            if len(values) < 2:
                label = f"task {t!r}" if t else "the probes"
                raise ProbeFitError(
                    f"{label} at depth {d:g}: {len(values)} seed(s); at least 2 are needed"
                )
            per_task.append(np.var(values, ddof=1))
        u[j] = float(np.mean(per_task))
    return np.asarray(depths), u


def _loglog(c: np.ndarray, excess: np.ndarray) -> tuple[float, float]:
    """(K, α) of the least-squares line log(excess) = log K − α log c."""
    slope, intercept = np.polyfit(np.log(c), np.log(excess), 1)
    return float(math.exp(intercept)), float(-slope)


@dataclass(frozen=True)
class DecayFit:
    """Û(c) = L_int + K · c^(−α) fitted to measured (c, Û) points.

    Attributes:
        intrinsic: L_int (variance, the target's units squared).
        K, alpha: the optimisation variance's scale and decay rate.
        intrinsic_given: L_int was given, not fitted.
        intrinsic_identifiable: False when L_int could not be fitted (2 depths) and was set to 0.
        depths, uncertainty: the measured points.
        log_rmse: root mean squared error of the fit in log Û.
    """

    intrinsic: float
    K: float
    alpha: float
    intrinsic_given: bool
    intrinsic_identifiable: bool
    depths: tuple[float, ...]
    uncertainty: tuple[float, ...]
    log_rmse: float

    def predict(self, c: float | np.ndarray) -> np.ndarray:
        """Û at depth(s) c."""
        return self.intrinsic + self.K * np.power(np.asarray(c, dtype=np.float64), -self.alpha)

    def optimisation_variance(self, c: float | np.ndarray) -> np.ndarray:
        """V_opt(c) = K · c^(−α)."""
        return self.K * np.power(np.asarray(c, dtype=np.float64), -self.alpha)


def fit_decay(
    depths: ArrayLike, uncertainty: ArrayLike, intrinsic: float | None = None
) -> DecayFit:
    """Fit Û(c) = L_int + K c^(−α) (module docstring).

    Args:
        depths: (D,) distinct positive probe depths, D ≥ 2.
        uncertainty: (D,) Û at each depth (≥ 0).
        intrinsic: L_int if known (≥ 0); None: fitted as Û's plateau (needs D ≥ 3).

    Raises:
        ProbeFitError: bad input, or Û ≤ L_int at fewer than 2 depths (nothing left to decay).
    """
    c = np.asarray(depths, dtype=np.float64)
    u = np.asarray(uncertainty, dtype=np.float64)
    if c.ndim != 1 or c.shape != u.shape or len(c) < 2:
        raise ProbeFitError("need Û at 2 or more depths")
    if not (np.isfinite(c).all() and np.isfinite(u).all()) or (c <= 0).any() or (u < 0).any():
        raise ProbeFitError("depths must be positive and Û finite and non-negative")
    if len(np.unique(c)) != len(c):
        raise ProbeFitError("depths must be distinct")
    order = np.argsort(c)
    c, u = c[order], u[order]
    if intrinsic is not None:
        if not (math.isfinite(intrinsic) and intrinsic >= 0):
            raise ProbeFitError(
                f"the intrinsic limit must be a non-negative number, got {intrinsic}"
            )
        return _fit_given(c, u, float(intrinsic), given=True, identifiable=True)
    if len(c) < 3:
        return _fit_given(c, u, 0.0, given=False, identifiable=False)
    floor = float(u.min())
    if floor <= 0:  # a depth with no seed-to-seed spread: no plateau below it
        return _fit_given(c, u, 0.0, given=False, identifiable=True)
    # Profile L over [0, min Û): the log-log line through Û − L, scored on log Û; then refine
    # between the best grid point's neighbours (scipy's bounded scalar minimiser).
    from scipy.optimize import minimize_scalar

    grid = np.concatenate([[0.0], floor * (1.0 - np.geomspace(1.0, 1e-4, _GRID))[1:]])

    def score(level: float) -> float:
        try:
            return _fit_given(c, u, level, given=False, identifiable=True).log_rmse
        except ProbeFitError:
            return math.inf

    scores = [score(float(level)) for level in grid]
    i = int(np.argmin(scores))
    low, high = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
    best = float(grid[i])
    if high > low:
        found = minimize_scalar(
            score, bounds=(low, high), method="bounded", options={"xatol": 1e-12 * floor}
        )
        if found.fun < scores[i]:
            best = float(found.x)
    return _fit_given(c, u, best, given=False, identifiable=True)


def _fit_given(
    c: np.ndarray, u: np.ndarray, level: float, *, given: bool, identifiable: bool
) -> DecayFit:
    excess = u - level
    keep = excess > 0
    if keep.sum() < 2:
        raise ProbeFitError(
            "Û exceeds the intrinsic limit at fewer than 2 depths: nothing left to decay"
        )
    K, alpha = _loglog(c[keep], excess[keep])
    fitted = level + K * np.power(c, -alpha)
    with np.errstate(divide="ignore"):
        resid = np.log(np.maximum(u, 1e-300)) - np.log(fitted)
    return DecayFit(
        intrinsic=level,
        K=K,
        alpha=alpha,
        intrinsic_given=given,
        intrinsic_identifiable=identifiable,
        depths=tuple(float(x) for x in c),
        uncertainty=tuple(float(x) for x in u),
        log_rmse=float(np.sqrt(np.mean(resid**2))),
    )


def optimal_depth(alpha: float, K: float, price: float) -> float:
    """c* = (α K / price)^(1/(α+1)), the depth minimising L_int + K c^(−α) + price·c; 0 when
    probing cannot pay (α ≤ 0 or K ≤ 0).

    Raises:
        ValueError: a non-positive or non-finite price.
    """
    if not (math.isfinite(price) and price > 0):
        raise ValueError(f"the price of a probe step must be a positive number, got {price}")
    if not (alpha > 0 and K > 0):
        return 0.0
    return float((alpha * K / price) ** (1.0 / (alpha + 1.0)))


@dataclass(frozen=True)
class RegimeThresholds:
    """Where the phase diagram's boundaries lie (module docstring).

    Attributes:
        noise_sd: √L_int at or above which a task is Noise-Dominant (the target's units).
        fast_alpha: α at or above which a task is Static-Sufficient.
    """

    noise_sd: float = NOISE_SD
    fast_alpha: float = FAST_ALPHA

    def __post_init__(self) -> None:
        if not (math.isfinite(self.noise_sd) and self.noise_sd > 0):
            raise ValueError(f"noise_sd must be positive, got {self.noise_sd}")
        if not math.isfinite(self.fast_alpha):
            raise ValueError(f"fast_alpha must be finite, got {self.fast_alpha}")


def regime(
    intrinsic: float,
    alpha: float,
    shallow_variance: float,
    thresholds: RegimeThresholds | None = None,
) -> str:
    """The task's regime from L_int, α and V_opt at the shallowest probe (module docstring)."""
    t = thresholds or RegimeThresholds()
    if math.sqrt(max(intrinsic, 0.0)) >= t.noise_sd:
        return "Noise-Dominant"
    if alpha >= t.fast_alpha or shallow_variance <= intrinsic:
        return "Static-Sufficient"
    return "Dynamic-Critical"


def combine(
    static_mean: float, static_variance: float, probe_mean: float, probe_variance: float
) -> tuple[float, float]:
    """Inverse-variance combination of two independent forecasts: ``(mean, variance)``.

    An infinite variance carries no information (the other forecast is returned); two zero
    variances are averaged.
    """
    if not (static_variance >= 0 and probe_variance >= 0):
        raise ValueError("variances must be non-negative")
    if math.isinf(probe_variance):
        return float(static_mean), float(static_variance)
    if math.isinf(static_variance):
        return float(probe_mean), float(probe_variance)
    if static_variance == 0 or probe_variance == 0:
        if static_variance == probe_variance:
            return (static_mean + probe_mean) / 2.0, 0.0
        return (float(static_mean), 0.0) if static_variance == 0 else (float(probe_mean), 0.0)
    w_s, w_p = 1.0 / static_variance, 1.0 / probe_variance
    return float((w_s * static_mean + w_p * probe_mean) / (w_s + w_p)), float(1.0 / (w_s + w_p))


@dataclass(frozen=True)
class ProbeAnalysis:
    """What ``probe fit`` reports: the decay fit, c*, the regime, and their bootstrap intervals.

    Attributes:
        fit: the fit to all seeds.
        c_star: the budget-optimal depth (None without a price).
        regime: one of :data:`REGIMES`.
        intervals: ``{name: (low, high)}`` for ``L_int``, ``K``, ``alpha`` (and ``c_star``),
            percentiles of the seed bootstrap at ``level``.
        level: the intervals' coverage.
        n_bootstrap: resamples that could be fitted, of ``n_resamples`` drawn.
        regime_shares: share of the fitted resamples in each regime.
    """

    fit: DecayFit
    c_star: float | None
    regime: str
    intervals: dict[str, tuple[float, float]]
    level: float
    n_bootstrap: int
    n_resamples: int
    regime_shares: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        f = self.fit
        return {
            "alpha": f.alpha,
            "K": f.K,
            "L_int": f.intrinsic,
            "L_int_given": f.intrinsic_given,
            "L_int_identifiable": f.intrinsic_identifiable,
            "c_star": self.c_star,
            "regime": self.regime,
            "intervals": {k: list(v) for k, v in self.intervals.items()},
            "level": self.level,
            "regime_shares": self.regime_shares,
            "bootstrap": {"fitted": self.n_bootstrap, "drawn": self.n_resamples},
            "depths": list(f.depths),
            "uncertainty": list(f.uncertainty),
            "log_rmse": f.log_rmse,
        }


def analyse(
    depth: ArrayLike,
    seed: Sequence[Any],
    prediction: ArrayLike,
    task: Sequence[Any] | None = None,
    *,
    price: float | None = None,
    intrinsic: float | None = None,
    thresholds: RegimeThresholds | None = None,
    n_resamples: int = 1000,
    level: float = 0.8,
    rng_seed: int = 0,
) -> ProbeAnalysis:
    """Fit, c* and regime of probe measurements, with intervals from a bootstrap over seeds.

    A seed's measurements at every depth come from one run, so the bootstrap resamples whole
    seeds (within each task) with replacement and refits; resamples in which a depth's Û is 0
    (one distinct seed drawn) or that cannot be fitted are skipped and counted.
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    c, u = seed_variance(depth, seed, prediction, task)
    extra = 0.0 if intrinsic is None else intrinsic  # a known L_int adds to the seed variance
    fit = fit_decay(c, u + extra, intrinsic)
    t = thresholds or RegimeThresholds()
    shallow = float(fit.optimisation_variance(c[0]))
    label = regime(fit.intrinsic, fit.alpha, shallow, t)
    c_star = None if price is None else optimal_depth(fit.alpha, fit.K, price)

    depth_a = np.asarray(depth, dtype=np.float64)
    pred_a = np.asarray(prediction, dtype=np.float64)
    rows = np.arange(len(depth_a))
    tasks = np.array([""] * len(depth_a) if task is None else [str(x) for x in task])
    seeds = np.array([str(s) for s in seed])
    groups = {name: sorted(set(seeds[tasks == name])) for name in sorted(set(tasks))}
    rng = np.random.default_rng([rng_seed, 23])
    draws: dict[str, list[float]] = {"L_int": [], "K": [], "alpha": [], "c_star": []}
    regimes: list[str] = []
    for _ in range(n_resamples):
        pick_d, pick_s, pick_y, pick_t = [], [], [], []
        for name, names in groups.items():
            chosen = rng.choice(len(names), size=len(names), replace=True)
            for copy, k in enumerate(chosen):
                sel = rows[(tasks == name) & (seeds == names[k])]
                pick_d.extend(depth_a[sel])
                pick_y.extend(pred_a[sel])
                pick_s.extend([f"{copy}"] * len(sel))
                pick_t.extend([name] * len(sel))
        try:
            bc, bu = seed_variance(pick_d, pick_s, pick_y, pick_t)
            if (bu <= 0).any():
                continue
            b = fit_decay(bc, bu + extra, intrinsic)
        except ProbeFitError:
            continue
        draws["L_int"].append(b.intrinsic)
        draws["K"].append(b.K)
        draws["alpha"].append(b.alpha)
        if price is not None:
            draws["c_star"].append(optimal_depth(b.alpha, b.K, price))
        regimes.append(regime(b.intrinsic, b.alpha, float(b.optimisation_variance(bc[0])), t))
    lo, hi = 100 * (1 - level) / 2, 100 * (1 + level) / 2
    intervals = {
        k: (float(np.percentile(v, lo)), float(np.percentile(v, hi))) for k, v in draws.items() if v
    }
    shares = {r: regimes.count(r) / len(regimes) for r in REGIMES} if regimes else {}
    return ProbeAnalysis(
        fit=fit,
        c_star=c_star,
        regime=label,
        intervals=intervals,
        level=level,
        n_bootstrap=len(regimes),
        n_resamples=n_resamples,
        regime_shares=shares,
    )
