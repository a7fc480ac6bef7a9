"""A probe calibration: from probe features at depth c to a task's AUC', fitted across tasks
(docs/methods.md §8).

For T calibration tasks with measured AUC y_t, probe features X[t, s, d] (task t, seed s, depth
c_d) and optionally a static predictor z_t (CoS-Low), at each depth d [our choices]:

- the task's feature is its seed mean x̄_td = mean_s X[t, s, d]; the model is linear::

      AUC'_t(c_d) = β_0 + β_1 · x̄_td (+ β_2 · z_t)              least squares over the T tasks

- leave-one-task-out (LOO) residuals r_td = y_t − AUC'_{−t}(c_d) (the model refitted without t)
  give the MAE and the forecast variance σ²_d = mean_t r_td²; an 80% interval of task t is
  AUC'_{−t} ± z_0.9 · σ_{−t,d}, σ_{−t,d} from the other tasks' residuals, and its *coverage* is the
  share of tasks inside their interval;
- the seed variance V_opt(c_d) = mean_t Var_s(β · [1, X[t, s, d], z_t]) (ddof = 1): how much one
  probe run's forecast moves with its seed;
- the intrinsic limit L_int = max(0, σ²_D − V_opt(c_D)/S) at the deepest depth D (what remains
  of the LOO error once the seed noise of an S-seed mean is taken out), and the decay
  V_opt(c) = K · c^(−α) fitted with L_int known (:func:`dataplan.maths.probe.fit_decay`);
- a task probed with S' seeds (not the calibration's S) has the forecast variance
  σ²_d(S') = max(0, σ²_d − V_opt(c_d)/S) + V_opt(c_d)/S' [our choice]: the seed noise of an
  S-seed mean taken out, that of an S'-seed mean put in (:meth:`ProbeCalibration.variance`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy.stats import norm

from dataplan.maths.probe import DecayFit, ProbeFitError, fit_decay

if TYPE_CHECKING:
    from numpy.typing import ArrayLike


class ProbeCalibrationError(ValueError):
    """The calibration data cannot be fitted (too few tasks, shapes, non-finite values)."""


@dataclass(frozen=True)
class DepthFit:
    """The calibration at one depth.

    Attributes:
        depth: c (optimiser steps).
        coef: (β_0, β_1[, β_2]).
        loo_residuals: (T,) y_t − AUC'_{−t}.
        loo_mae: mean |residual|.
        residual_variance: σ² = mean residual².
        coverage: share of tasks inside their LOO interval at ``level``.
        seed_variance: V_opt(c), the mean across-seed variance of one run's forecast.
    """

    depth: float
    coef: tuple[float, ...]
    loo_residuals: tuple[float, ...]
    loo_mae: float
    residual_variance: float
    coverage: float
    seed_variance: float


@dataclass(frozen=True)
class ProbeCalibration:
    """Per-depth linear maps from a probe feature (and CoS-Low) to AUC', with their errors."""

    feature: str
    with_static: bool
    level: float
    n_tasks: int
    n_seeds: int
    depths: tuple[DepthFit, ...]
    intrinsic: float
    decay: DecayFit | None
    tasks: tuple[dict[str, Any], ...] = ()  # the calibration tasks' phase-diagram points
    # How the CoS-Low it takes was tokenised (split or joint); None without CoS-Low.
    tokenization: str | None = None
    # How its probes were made (``validation`` examples held out, ``train``: the settings that
    # differ from TrainSettings' defaults): a task's probes must be made alike to use it.
    probe: dict[str, Any] = field(default_factory=dict)

    def at(self, depth: float) -> DepthFit:
        for d in self.depths:
            if d.depth == depth:
                return d
        raise KeyError(
            f"no calibration at depth {depth:g}; calibrated depths: "
            + ", ".join(f"{d.depth:g}" for d in self.depths)
        )

    def variance(self, depth: float, seeds: int | None = None) -> float:
        """σ²_d(S'): the forecast variance at ``depth`` of a task whose feature is the mean of
        ``seeds`` probe runs (module docstring; None: the calibration's own S). At S' = S it is
        max(σ²_d, V_opt/S): never less than the seed noise of the mean it forecasts from."""
        d = self.at(depth)
        n = self.n_seeds if seeds is None else seeds
        if n < 1:
            raise ValueError(f"seeds must be positive, got {seeds}")
        beyond_seeds = max(0.0, d.residual_variance - d.seed_variance / self.n_seeds)
        return beyond_seeds + d.seed_variance / n

    def predict(
        self, depth: float, feature: float, static: float | None = None
    ) -> tuple[float, float]:
        """(AUC', its forecast variance σ²) of a task whose seed-mean feature at ``depth`` is
        ``feature`` (and whose static predictor is ``static`` when the calibration uses one)."""
        d = self.at(depth)
        row = [1.0, feature]
        if self.with_static:
            if static is None:
                raise ValueError("this probe calibration also needs the task's CoS-Low")
            row.append(static)
        return float(np.dot(d.coef, row)), self.variance(depth)

    def as_dict(self) -> dict[str, Any]:
        return {
            "feature": self.feature,
            "with_static": self.with_static,
            "level": self.level,
            "n_tasks": self.n_tasks,
            "n_seeds": self.n_seeds,
            "intrinsic": self.intrinsic,
            "decay": None
            if self.decay is None
            else {"K": self.decay.K, "alpha": self.decay.alpha, "log_rmse": self.decay.log_rmse},
            "depths": [
                {
                    "depth": d.depth,
                    "coef": list(d.coef),
                    "loo_residuals": list(d.loo_residuals),
                    "loo_mae": d.loo_mae,
                    "residual_variance": d.residual_variance,
                    "coverage": d.coverage,
                    "seed_variance": d.seed_variance,
                }
                for d in self.depths
            ],
            "tasks": [dict(t) for t in self.tasks],
            "tokenization": self.tokenization,
            "probe": dict(self.probe),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ProbeCalibration:
        """The calibration of :meth:`as_dict`'s output; KeyError, TypeError or ValueError for
        a file that is not one (a depth that is no positive integer, a task point without its
        numbers)."""
        for x in d["depths"]:
            c = float(x["depth"])
            if not (c >= 1 and c.is_integer()):
                raise ValueError(f"depth {x['depth']!r} is not a positive whole number of steps")
        for t in d.get("tasks") or ():
            if t.get("alpha") is not None:  # a point on the phase diagram: what draws it
                str(t["task"]), float(t["alpha"]), float(t["intrinsic"])
        depths = tuple(
            DepthFit(
                depth=float(x["depth"]),
                coef=tuple(float(v) for v in x["coef"]),
                loo_residuals=tuple(float(v) for v in x["loo_residuals"]),
                loo_mae=float(x["loo_mae"]),
                residual_variance=float(x["residual_variance"]),
                coverage=float(x["coverage"]),
                seed_variance=float(x["seed_variance"]),
            )
            for x in d["depths"]
        )
        decay = None
        if d.get("decay") is not None:
            decay = fit_decay(
                [x.depth for x in depths],
                [float(d["intrinsic"]) + x.seed_variance for x in depths],
                intrinsic=float(d["intrinsic"]),
            )
        return cls(
            feature=str(d["feature"]),
            with_static=bool(d["with_static"]),
            level=float(d["level"]),
            n_tasks=int(d["n_tasks"]),
            n_seeds=int(d["n_seeds"]),
            depths=depths,
            intrinsic=float(d["intrinsic"]),
            decay=decay,
            tasks=tuple(dict(t) for t in d.get("tasks") or ()),  # older files carry none
            tokenization=d.get("tokenization") or ("split" if d["with_static"] else None),
            probe=dict(d.get("probe") or {}),  # older files: made with the defaults
        )


def others_variance(residuals: ArrayLike) -> np.ndarray:
    """σ²_{−t} = mean_{u≠t} r_u²: each task's forecast variance from the other tasks' residuals
    (shape (T,) → (T,); T ≥ 2)."""
    sq = np.asarray(residuals, dtype=np.float64) ** 2
    return (sq.sum() - sq) / (len(sq) - 1)


def interval_coverage(residuals: ArrayLike, variances: ArrayLike, level: float) -> float:
    """Share of tasks whose residual lies inside their normal interval at ``level``:
    |r_t| ≤ z_{(1+level)/2} · σ_t."""
    quantile = float(norm.ppf(0.5 + level / 2))
    r = np.abs(np.asarray(residuals, dtype=np.float64))
    return float(np.mean(r <= quantile * np.sqrt(np.asarray(variances, dtype=np.float64))))


def _lstsq(a: np.ndarray, y: np.ndarray) -> np.ndarray:
    coef, *_ = np.linalg.lstsq(a, y, rcond=None)
    return coef


def fit_probe_calibration(
    features: ArrayLike,
    auc: ArrayLike,
    depths: ArrayLike,
    *,
    static: ArrayLike | None = None,
    feature: str = "val_loss_drop",
    level: float = 0.8,
) -> ProbeCalibration:
    """Fit the per-depth calibrations (module docstring).

    Args:
        features: (T, S, D) the probe feature of task t, seed s at depth d.
        auc: (T,) the measured AUC of each task.
        depths: (D,) increasing probe depths.
        static: (T,) a static predictor (CoS-Low) to fit beside the feature, or None.
        feature: the feature's name (recorded).
        level: coverage of the LOO intervals.

    Raises:
        ProbeCalibrationError: shapes, non-finite values, fewer than p + 2 tasks (p coefficients),
            fewer than 2 seeds.
    """
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(auc, dtype=np.float64)
    c = np.asarray(depths, dtype=np.float64)
    if x.ndim != 3 or x.shape[0] != y.shape[0] or x.shape[2] != c.shape[0]:
        raise ProbeCalibrationError(
            f"features must be (tasks, seeds, depths) = ({len(y)}, S, {len(c)}), got {x.shape}"
        )
    z = None if static is None else np.asarray(static, dtype=np.float64)
    if z is not None and z.shape != y.shape:
        raise ProbeCalibrationError("static must have one value per task")
    for name, arr in (("features", x), ("auc", y), ("static", z)):
        if arr is not None and not np.isfinite(arr).all():
            raise ProbeCalibrationError(f"{name} must be finite")
    if not 0 < level < 1:
        raise ProbeCalibrationError(f"level must be in (0, 1), got {level}")
    t_count, s_count, _ = x.shape
    p = 2 if z is None else 3
    if t_count < p + 2:
        raise ProbeCalibrationError(
            f"{t_count} tasks: a leave-one-task-out fit of {p} coefficients needs at least {p + 2}"
        )
    if s_count < 2:
        raise ProbeCalibrationError("at least 2 probe seeds per task are needed")
    fits = []
    for j, depth in enumerate(c):
        mean = x[:, :, j].mean(axis=1)
        design = np.column_stack([np.ones(t_count), mean] + ([] if z is None else [z]))
        coef = _lstsq(design, y)
        resid = np.empty(t_count)
        for t in range(t_count):
            keep = np.arange(t_count) != t
            resid[t] = y[t] - design[t] @ _lstsq(design[keep], y[keep])
        per_seed = coef[0] + coef[1] * x[:, :, j]
        if z is not None:
            per_seed = per_seed + coef[2] * z[:, None]
        fits.append(
            DepthFit(
                depth=float(depth),
                coef=tuple(float(v) for v in coef),
                loo_residuals=tuple(float(v) for v in resid),
                loo_mae=float(np.mean(np.abs(resid))),
                residual_variance=float(np.mean(resid**2)),
                coverage=interval_coverage(resid, others_variance(resid), level),
                seed_variance=float(np.mean(np.var(per_seed, axis=1, ddof=1))),
            )
        )
    deepest = fits[-1]
    intrinsic = max(0.0, deepest.residual_variance - deepest.seed_variance / s_count)
    decay = None
    if len(c) >= 2:
        try:
            decay = fit_decay(c, [intrinsic + f.seed_variance for f in fits], intrinsic=intrinsic)
        except ProbeFitError:
            decay = None  # no seed variance to decay: reported as None
    return ProbeCalibration(
        feature=feature,
        with_static=z is not None,
        level=level,
        n_tasks=t_count,
        n_seeds=s_count,
        depths=tuple(fits),
        intrinsic=intrinsic,
        decay=decay,
    )


def task_decompositions(
    calibration: ProbeCalibration,
    features: ArrayLike,
    thresholds: Any = None,
) -> list[dict[str, Any]]:
    """Each calibration task's own point on the phase diagram [our choice]:

    - V_t(c) = Var_s(AUC'_ts(c)), the seed variance of the task's one-run forecasts;
    - L_int,t = max(0, r_tD² − V_t(c_D)/S): its squared leave-one-task-out error at the deepest
      depth, net of the seed noise of an S-seed mean;
    - K_t, α_t from the log-log fit of V_t(c) (:func:`dataplan.maths.probe.fit_decay` with
      L_int,t known), None where V_t is 0 at all but one depth;
    - its regime (:func:`dataplan.maths.probe.regime`).

    Args:
        features: (T, S, D) as given to :func:`fit_probe_calibration`, same task order.
        thresholds: :class:`dataplan.maths.probe.RegimeThresholds` (default: the defaults).
    """
    from dataplan.maths.probe import regime

    x = np.asarray(features, dtype=np.float64)
    if x.shape[0] != calibration.n_tasks or x.shape[2] != len(calibration.depths):
        raise ProbeCalibrationError("features do not match the calibration's tasks and depths")
    if calibration.with_static:
        raise ProbeCalibrationError("task decompositions use the probe-alone calibration")
    s_count = x.shape[1]
    depths = [d.depth for d in calibration.depths]
    out = []
    for t in range(x.shape[0]):
        v = np.array(
            [
                float(np.var(d.coef[0] + d.coef[1] * x[t, :, j], ddof=1))
                for j, d in enumerate(calibration.depths)
            ]
        )
        resid = calibration.depths[-1].loo_residuals[t]
        intrinsic = max(0.0, resid**2 - v[-1] / s_count)
        point: dict[str, Any] = {
            "intrinsic": intrinsic,
            "seed_variance": v.tolist(),
            "K": None,
            "alpha": None,
            "regime": None,
        }
        try:
            fit = fit_decay(depths, intrinsic + v, intrinsic=intrinsic)
        except ProbeFitError:
            out.append(point)
            continue
        point.update(
            K=fit.K,
            alpha=fit.alpha,
            regime=regime(intrinsic, fit.alpha, float(v[0]), thresholds),
        )
        out.append(point)
    return out
