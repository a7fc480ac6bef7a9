"""From CoS-Low to a data budget (arXiv 2512.24991; docs/methods.md §3).

Calibration (per model family, least squares over calibration tasks)::

    AUC' = c · CoS-Low + I

Predicted normalised curve on the normalised log-budget ``x = log2(n) / log2(n_max)``::

    f(x) = x^p,   p = (1 − AUC') / AUC'        (so ∫₀¹ f = AUC')

Budget to reach a normalised target τ ∈ (0, 1)::

    x* = τ^(AUC' / (1 − AUC')),   n* = n_max^x*

A raw target accuracy ``a`` maps to ``τ = (a − acc₀) / (H − acc₀)`` with zero-shot accuracy acc₀
and ceiling H.

Intervals [our choice]: AUC' is treated as ``c·CoS + I + ε`` with ε drawn from the calibration's
error model — its leave-one-task-out residuals when it carries them, else a normal with the
calibration's residual standard deviation (for the published calibrations, derived from the
paper's 8.6% mean absolute error: σ = MAE·sqrt(π/2)). The interval of n* is the image of the
interval of AUC' under the monotone map AUC' ↦ n*.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

AUC_EPS = 1e-6
"""AUC' is clipped to [AUC_EPS, 1 − AUC_EPS] so that p and the exponent stay finite."""


@dataclass(frozen=True)
class Calibration:
    """A linear map from CoS-Low to predicted AUC' for one model family.

    Attributes:
        name: registry name (usually the model name).
        coef: slope c.
        intercept: intercept I.
        n_max: the largest budget of the curves the calibration was fitted on.
        residual_std: standard deviation of the leave-one-task-out AUC error.
        loo_residuals: leave-one-task-out residuals ``AUC − AUC'`` when known (empirical error model).
        n_tasks: number of calibration tasks.
        source: where the numbers come from.
        tokenization: how CoS-Low was computed for the fit (``split``: dataplan's; ``joint``:
            the CoS-Low authors', docs/methods.md §2.3): a CoS-Low computed otherwise is not
            comparable.
    """

    name: str
    coef: float
    intercept: float
    n_max: int = 5000
    residual_std: float | None = None
    loo_residuals: tuple[float, ...] = ()
    n_tasks: int | None = None
    source: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    tokenization: str = "split"

    def __post_init__(self) -> None:
        if self.tokenization not in ("split", "joint"):
            raise ValueError(f"tokenization must be split or joint, got {self.tokenization!r}")
        if not (math.isfinite(self.coef) and math.isfinite(self.intercept)):
            raise ValueError("coef and intercept must be finite")
        if self.n_max < 2:
            raise ValueError("n_max must be at least 2")
        if self.residual_std is not None and self.residual_std < 0:
            raise ValueError("residual_std must be non-negative")

    def reliability_warning(self) -> str | None:
        """A caution when the calibration itself says its forecasts carry little information:
        a non-positive slope, or a leave-one-task-out Spearman below 0.3 (``extra``)."""
        rho = self.extra.get("loo_spearman")
        if self.coef <= 0:
            return (
                f"calibration {self.name!r} has a non-positive slope ({self.coef:.3f}): a higher "
                "CoS-Low does not mean more data-efficient on this model (the paper's finding on "
                "8B models); treat n* as a guess"
            )
        if rho is not None and rho < 0.3:
            tasks = f" over {self.n_tasks} tasks" if self.n_tasks else ""
            return (
                f"calibration {self.name!r} ranks held-out tasks poorly (leave-one-task-out "
                f"Spearman {rho:.2f}{tasks}): the forecast carries little information"
            )
        return None

    @property
    def loo_mae(self) -> float | None:
        """Mean absolute leave-one-task-out error of AUC' (None without the residuals): how far
        the calibration's forecast missed a task it was not fitted on, on average."""
        if not self.loo_residuals:
            return None
        return float(np.mean(np.abs(self.loo_residuals)))

    def predict_auc(self, cos_low: float) -> float:
        """AUC' = c · CoS-Low + I, clipped to (0, 1)."""
        return clip_auc(self.coef * cos_low + self.intercept)

    def auc_interval(self, cos_low: float, level: float = 0.8) -> tuple[float, float] | None:
        """Central ``level`` interval of AUC' under the calibration's error model, or None."""
        from scipy import stats

        if not 0.0 < level < 1.0:
            raise ValueError("level must be in (0, 1)")
        centre = self.coef * cos_low + self.intercept
        alpha = (1.0 - level) / 2.0
        if len(self.loo_residuals) >= 5:
            lo, hi = np.quantile(np.asarray(self.loo_residuals), [alpha, 1.0 - alpha])
        elif self.residual_std is not None:
            z = stats.norm.ppf(1.0 - alpha)
            lo, hi = -z * self.residual_std, z * self.residual_std
        else:
            return None
        return clip_auc(centre + lo), clip_auc(centre + hi)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["loo_residuals"] = list(self.loo_residuals)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Calibration:
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown calibration fields: {sorted(unknown)}")
        d = dict(d)
        d["loo_residuals"] = tuple(float(r) for r in d.get("loo_residuals", ()))
        return cls(**d)


def clip_auc(auc: float) -> float:
    return float(min(max(auc, AUC_EPS), 1.0 - AUC_EPS))


def curve_exponent(auc: float) -> float:
    """p = (1 − AUC') / AUC' of the predicted curve f(x) = x^p."""
    a = clip_auc(auc)
    return (1.0 - a) / a


def predicted_curve(auc: float, n: Sequence[int] | np.ndarray, n_max: int) -> np.ndarray:
    """Predicted normalised performance f(x(n)) = x^p at budgets ``n`` (n = 0 gives 0)."""
    n_arr = np.asarray(n, dtype=np.float64)
    x = np.clip(np.log2(np.maximum(n_arr, 1.0)) / math.log2(n_max), 0.0, 1.0)
    return x ** curve_exponent(auc)


def budget_for_target(auc: float, target: float, n_max: int = 5000) -> float:
    """n* = n_max^(τ^(AUC'/(1−AUC'))): examples needed to reach normalised target τ ∈ (0, 1).

    >>> round(budget_for_target(0.54 * 0.65 + 0.31, 0.9))  # the authors' worked example
    1028
    """
    if not 0.0 < target < 1.0:
        raise ValueError(f"normalised target must be in (0, 1), got {target}")
    a = clip_auc(auc)
    x_star = target ** (a / (1.0 - a))
    return float(n_max**x_star)


def budget_interval(
    auc_low: float, auc_high: float, target: float, n_max: int = 5000
) -> tuple[float, float]:
    """The n* interval of the AUC' interval [auc_low, auc_high]: n* falls as AUC' rises, so the
    ends swap — (n*(auc_high), n*(auc_low))."""
    return budget_for_target(auc_high, target, n_max), budget_for_target(auc_low, target, n_max)


def normalise_target(accuracy: float, zero_shot: float, ceiling: float) -> float:
    """τ = (a − acc₀) / (H − acc₀) for a raw target accuracy ``a``."""
    if ceiling <= zero_shot:
        raise ValueError(f"ceiling ({ceiling}) must exceed zero-shot accuracy ({zero_shot})")
    return (accuracy - zero_shot) / (ceiling - zero_shot)


@dataclass(frozen=True)
class Forecast:
    """A data-budget forecast. Budgets are numbers of labelled training examples."""

    cos_low: float
    auc: float
    auc_interval: tuple[float, float] | None
    target: float
    n_star: float
    n_star_interval: tuple[float, float] | None
    n_max: int
    curve_n: tuple[int, ...]
    curve: tuple[float, ...]
    calibration: str
    interval_level: float
    warning: str | None = None
    calibration_loo_mae: float | None = None
    calibration_tasks: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


DEFAULT_CURVE_BUDGETS = (0, 16, 32, 50, 100, 200, 500, 1000, 2500, 5000)


def forecast(
    cos_low: float,
    calibration: Calibration,
    target: float,
    *,
    n_max: int | None = None,
    level: float = 0.8,
    curve_budgets: Sequence[int] | None = None,
) -> Forecast:
    """Predicted AUC', curve and budget n* (with an interval) for a task's CoS-Low.

    Args:
        cos_low: the task's CoS-Low.
        calibration: the model family's calibration.
        target: normalised target τ ∈ (0, 1).
        n_max: override of the calibration's n_max (the budget at which f reaches 1).
        level: coverage of the intervals.
        curve_budgets: budgets at which to report the predicted curve.
    """
    n_max = int(n_max or calibration.n_max)
    auc = calibration.predict_auc(cos_low)
    auc_iv = calibration.auc_interval(cos_low, level)
    n_star = budget_for_target(auc, target, n_max)
    n_iv = None
    if auc_iv is not None:
        n_iv = budget_interval(auc_iv[0], auc_iv[1], target, n_max)
    budgets = sorted({b for b in (curve_budgets or DEFAULT_CURVE_BUDGETS) if b <= n_max} | {n_max})
    values = predicted_curve(auc, budgets, n_max)
    return Forecast(
        cos_low=float(cos_low),
        auc=auc,
        auc_interval=auc_iv,
        target=float(target),
        n_star=n_star,
        n_star_interval=n_iv,
        n_max=n_max,
        curve_n=tuple(int(b) for b in budgets),
        curve=tuple(float(v) for v in values),
        calibration=calibration.name,
        interval_level=level,
        warning=calibration.reliability_warning(),
        calibration_loo_mae=calibration.loo_mae,
        calibration_tasks=calibration.n_tasks,
    )


def fit_calibration(
    cos_low: ArrayLike,
    auc: ArrayLike,
    *,
    name: str,
    n_max: int,
    source: str = "",
) -> Calibration:
    """Least-squares fit AUC = c·CoS-Low + I, with leave-one-task-out residuals.

    Uses :func:`scipy.stats.linregress` for the fit; the leave-one-out residual of task k is
    ``auc_k − (c₋ₖ·cos_k + I₋ₖ)`` with the line refitted without task k.
    """
    from scipy import stats

    x = np.asarray(cos_low, dtype=np.float64)
    y = np.asarray(auc, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError("cos_low and auc must be 1-D and of equal length")
    if x.size < 3:
        raise ValueError("a calibration needs at least 3 tasks")
    if np.ptp(x) == 0:
        raise ValueError("all CoS-Low values are equal: the slope is not identifiable")
    fit = stats.linregress(x, y)
    residuals = []
    for k in range(x.size):
        keep = np.arange(x.size) != k
        f = stats.linregress(x[keep], y[keep])
        residuals.append(float(y[k] - (f.slope * x[k] + f.intercept)))
    return Calibration(
        name=name,
        coef=float(fit.slope),
        intercept=float(fit.intercept),
        n_max=int(n_max),
        residual_std=float(np.sqrt(np.mean(np.square(residuals)))),
        loo_residuals=tuple(residuals),
        n_tasks=int(x.size),
        source=source,
    )


def leave_one_out_scores(x: ArrayLike, y: ArrayLike) -> dict[str, Any]:
    """How well a 1-D linear predictor of y from x generalises across tasks.

    For each task k the line y = a·x + b is fitted on the other tasks and predicts y_k; the
    held-out predictions are compared with y by Spearman and Pearson correlation and mean
    absolute error. Beside them, the in-sample Spearman ρ(x, y) and its two-sided p-value:
    when x carries no signal, each held-out y is predicted from the others' mean, which moves
    opposite to it, so leave-one-out correlations come out negative on few tasks.
    Returns ``{"spearman", "pearson", "mae", "predictions", "in_sample_spearman",
    "in_sample_p"}``.
    """
    from scipy import stats

    xa = np.asarray(x, dtype=np.float64)
    ya = np.asarray(y, dtype=np.float64)
    if xa.shape != ya.shape or xa.size < 3:
        raise ValueError("need at least 3 (x, y) pairs of equal length")
    preds = np.empty_like(ya)
    for k in range(xa.size):
        keep = np.arange(xa.size) != k
        if np.ptp(xa[keep]) == 0:
            preds[k] = ya[keep].mean()
            continue
        fit = stats.linregress(xa[keep], ya[keep])
        preds[k] = fit.slope * xa[k] + fit.intercept
    constant = np.ptp(preds) == 0 or np.ptp(ya) == 0
    rho = None if np.ptp(xa) == 0 or np.ptp(ya) == 0 else stats.spearmanr(xa, ya)
    return {
        "in_sample_spearman": None if rho is None else float(rho.statistic),
        "in_sample_p": None if rho is None else float(rho.pvalue),
        "spearman": None if constant else float(stats.spearmanr(preds, ya).statistic),
        "pearson": None if constant else float(stats.pearsonr(preds, ya).statistic),
        "mae": float(np.mean(np.abs(preds - ya))),
        "predictions": preds.tolist(),
    }
