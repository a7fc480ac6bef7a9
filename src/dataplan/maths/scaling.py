"""Dataset-volume scaling laws of fine-tuned performance (arXiv 2505.06150, METHODS.md §6).

Forms (performance P, higher is better; N examples, L̄ mean tokens per example, V = N·L̄ the
dataset volume, T tokens seen in training, M model parameters)::

    volume      P = A · V^β · M^γ + E
    tokens      P = A · T^β · M^γ + E
    examples    P = A · N^β · M^γ + E
    chinchilla  P = E − A · N^(−α) − B · L̄^(−β)        (additive, Chinchilla-style)

Fitting [our choice]: robust nonlinear least squares (:func:`scipy.optimize.least_squares`
with a soft-L1 or Huber loss) from several starting points, on features divided by their
geometric mean (so A is on the scale of P; it is reported back in original units). With a single
model size γ is not identifiable and is fixed at 0. Bootstrap over runs gives a percentile
interval for every parameter and for predictions; leave-one-run-out (or leave-one-group-out)
refits give the held-out error used to compare forms. :class:`ScalingLaw` follows the
scikit-learn estimator contract (``fit`` returns self, fitted attributes end in ``_``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import optimize

COLUMNS = ("n_examples", "mean_tokens", "model_params", "performance")


@dataclass(frozen=True)
class LawForm:
    """A functional form: parameter names and P(params, features) on normalised features."""

    name: str
    params: tuple[str, ...]
    features: tuple[str, ...]  # columns used, after normalisation
    equation: str
    func: Callable[[np.ndarray, dict[str, np.ndarray]], np.ndarray]
    power_of_model: str | None = "gamma"  # the exponent of M (fixed to 0 with one model size)


def _power(p, x, base: str):
    # p = [A, beta, gamma, E] on normalised features: A · x^β · m^γ + E
    return p[0] * np.power(x[base], p[1]) * np.power(x["model_params"], p[2]) + p[3]


FORMS: dict[str, LawForm] = {
    "volume": LawForm(
        "volume",
        ("A", "beta", "gamma", "E"),
        ("volume", "model_params"),
        "P = A·V^β·M^γ + E",
        lambda p, x: _power(p, x, "volume"),
    ),
    "tokens": LawForm(
        "tokens",
        ("A", "beta", "gamma", "E"),
        ("tokens_seen", "model_params"),
        "P = A·T^β·M^γ + E",
        lambda p, x: _power(p, x, "tokens_seen"),
    ),
    "examples": LawForm(
        "examples",
        ("A", "beta", "gamma", "E"),
        ("n_examples", "model_params"),
        "P = A·N^β·M^γ + E",
        lambda p, x: _power(p, x, "n_examples"),
    ),
    "chinchilla": LawForm(
        "chinchilla",
        ("E", "A", "alpha", "B", "beta"),
        ("n_examples", "mean_tokens"),
        "P = E − A·N^(−α) − B·L̄^(−β)",
        lambda p, x: (
            p[0]
            - p[1] * np.power(x["n_examples"], -p[2])
            - p[3] * np.power(x["mean_tokens"], -p[4])
        ),
        power_of_model=None,
    ),
}


class ScalingInputError(ValueError):
    """Runs that cannot identify the law (the CLI reports it as bad input)."""


def runs_features(runs: Mapping[str, Sequence[float]]) -> dict[str, np.ndarray]:
    """Validated feature arrays: the four columns, volume V = N·L̄, and tokens_seen.

    Raises:
        ScalingInputError: missing columns, NaNs, or non-positive sizes.
    """
    missing = [c for c in COLUMNS if c not in runs]
    if missing:
        raise ScalingInputError(f"missing column(s): {', '.join(missing)}")
    x = {c: np.asarray(runs[c], dtype=np.float64) for c in COLUMNS}
    n = x["n_examples"].size
    if any(v.shape != (n,) for v in x.values()):
        raise ScalingInputError("columns must have equal length")
    for c, v in x.items():
        if np.isnan(v).any():
            raise ScalingInputError(
                f"column {c} has NaN at run {int(np.flatnonzero(np.isnan(v))[0])}"
            )
    x["volume"] = x["n_examples"] * x["mean_tokens"]
    x["tokens_seen"] = (
        np.asarray(runs["tokens_seen"], dtype=np.float64)
        if "tokens_seen" in runs
        else x["volume"].copy()
    )
    for c in ("n_examples", "mean_tokens", "model_params", "volume", "tokens_seen"):
        bad = np.flatnonzero(~(x[c] > 0))
        if bad.size:
            raise ScalingInputError(f"{c} must be positive (run {int(bad[0])} has {x[c][bad[0]]})")
    return x


def _normalise(x: dict[str, np.ndarray], refs: dict[str, float]) -> dict[str, np.ndarray]:
    return {k: x[k] / refs[k] for k in refs}


def _starts(
    form: LawForm, y: np.ndarray, n_starts: int, rng: np.random.Generator
) -> list[np.ndarray]:
    span = max(float(np.ptp(y)), 1e-3)
    starts = []
    for k in range(n_starts):
        if form.name == "chinchilla":
            expo = 0.5 if k == 0 else rng.uniform(0.05, 2.0)
            starts.append(
                np.array(
                    [y.max() + 0.1 * span, span / 2, expo, span / 2, expo * rng.uniform(0.5, 1.5)]
                )
            )
        else:
            beta = [0.3, -0.3, 0.1, 1.0][k] if k < 4 else rng.uniform(-1.5, 1.5)
            starts.append(np.array([span / 2 * np.sign(beta or 1), beta, 0.0, float(np.median(y))]))
    return starts


@dataclass
class FitResult:
    params: np.ndarray
    cost: float
    success: bool


def fit_params(
    form: LawForm,
    xn: dict[str, np.ndarray],
    y: np.ndarray,
    *,
    fixed_gamma: bool,
    loss: str,
    f_scale: float,
    starts: list[np.ndarray],
) -> FitResult:
    """Best of several robust least-squares fits (normalised features)."""
    free = [
        i for i, name in enumerate(form.params) if not (fixed_gamma and name == form.power_of_model)
    ]

    def full(q):
        p = np.zeros(len(form.params))
        p[free] = q
        return p

    def residual(q):
        with np.errstate(over="ignore", invalid="ignore"):
            r = form.func(full(q), xn) - y
        return np.where(np.isfinite(r), r, 1e6)

    best: FitResult | None = None
    for s in starts:
        try:
            sol = optimize.least_squares(
                residual, s[free], loss=loss, f_scale=f_scale, max_nfev=2000
            )
        except (ValueError, np.linalg.LinAlgError):
            continue
        if best is None or sol.cost < best.cost:
            best = FitResult(full(sol.x), float(sol.cost), bool(sol.success))
    if best is None:
        raise ScalingInputError("the fit failed from every starting point")
    return best


class ScalingLaw:
    """A scaling law estimator (scikit-learn contract: ``fit`` returns self, ``predict``).

    Args:
        form: ``volume``, ``tokens``, ``examples`` or ``chinchilla``.
        loss: robust loss of :func:`scipy.optimize.least_squares` (``soft_l1``, ``huber``, ``linear``).
        f_scale: residual scale at which the robust loss turns linear (performance units).
        n_starts: starting points of the nonlinear fit.
        n_bootstrap: bootstrap resamples for the intervals (0 to skip).
        level: coverage of the intervals.
        holdout: ``run`` (leave one run out) or a column name to leave one group out.
        seed: seed of the starts and the bootstrap.

    Fitted attributes: ``params_`` (original units), ``intervals_``, ``fixed_``, ``notes_``,
    ``heldout_`` (``{"rmse", "mae", "n"}``), ``refs_`` (normalisers), ``bootstrap_params_``.
    """

    def __init__(
        self,
        form: str = "volume",
        *,
        loss: str = "soft_l1",
        f_scale: float = 0.05,
        n_starts: int = 8,
        n_bootstrap: int = 200,
        level: float = 0.95,
        holdout: str = "run",
        seed: int = 0,
    ):
        if form not in FORMS:
            raise ValueError(f"unknown form {form!r}; choose from {', '.join(FORMS)}")
        if not 0 < level < 1:
            raise ValueError("level must be in (0, 1)")
        self.form = form
        self.loss = loss
        self.f_scale = f_scale
        self.n_starts = n_starts
        self.n_bootstrap = n_bootstrap
        self.level = level
        self.holdout = holdout
        self.seed = seed

    # -- fitting ---------------------------------------------------------------------------
    def fit(self, runs: Mapping[str, Sequence[float]]) -> ScalingLaw:
        spec = FORMS[self.form]
        x = runs_features(runs)
        y = x["performance"]
        self.notes_: list[str] = []
        fixed = spec.power_of_model is not None and np.ptp(x["model_params"]) == 0
        if fixed:
            self.notes_.append("a single model size: γ is not identifiable and is fixed at 0")
        k = len(spec.params) - int(fixed)
        if y.size <= k:
            raise ScalingInputError(
                f"{y.size} runs cannot fit the {k} free parameters of the {self.form} form"
            )
        for col in spec.features:
            if col != "model_params" and np.ptp(x[col]) == 0:
                raise ScalingInputError(
                    f"all runs have the same {col}: the {self.form} law is not identifiable"
                )
        self.refs_ = {c: float(np.exp(np.mean(np.log(x[c])))) for c in spec.features}
        xn = _normalise(x, self.refs_)
        rng = np.random.default_rng(self.seed)
        starts = _starts(spec, y, self.n_starts, rng)
        best = fit_params(
            spec, xn, y, fixed_gamma=fixed, loss=self.loss, f_scale=self.f_scale, starts=starts
        )
        self.fixed_ = {spec.power_of_model: 0.0} if fixed else {}
        self._p = best.params
        self.params_ = self._to_original(best.params)
        self.converged_ = best.success
        # Bootstrap: refit on resampled runs from the best fit.
        boots = []
        for _ in range(self.n_bootstrap):
            idx = rng.integers(0, y.size, size=y.size)
            xs = {c: v[idx] for c, v in xn.items()}
            if any(np.ptp(xs[c]) == 0 for c in spec.features if c != "model_params"):
                continue
            try:
                r = fit_params(
                    spec,
                    xs,
                    y[idx],
                    fixed_gamma=fixed,
                    loss=self.loss,
                    f_scale=self.f_scale,
                    starts=[best.params],
                )
            except ScalingInputError:
                continue
            boots.append(r.params)
        self.bootstrap_params_ = np.array(boots) if boots else np.empty((0, len(spec.params)))
        alpha = (1 - self.level) / 2
        self.intervals_ = {}
        for name in spec.params:
            if name in self.fixed_ or len(boots) < 10:
                self.intervals_[name] = None
                continue
            orig = np.array([self._to_original(b)[name] for b in boots])
            lo, hi = np.quantile(orig, [alpha, 1 - alpha])
            self.intervals_[name] = (float(lo), float(hi))
        self.heldout_ = self._heldout(x, xn, y, spec, fixed, best.params)
        self.n_runs_ = int(y.size)
        return self

    def _heldout(self, x, xn, y, spec, fixed, p0) -> dict[str, Any]:
        groups = np.arange(y.size) if self.holdout == "run" else x.get(self.holdout)
        if groups is None:
            raise ScalingInputError(f"unknown hold-out column {self.holdout!r}")
        errors = np.full(y.size, np.nan)
        for g in np.unique(groups):
            test = groups == g
            train = ~test
            xs = {c: v[train] for c, v in xn.items()}
            if train.sum() <= len(spec.params) - int(fixed) or any(
                np.ptp(xs[c]) == 0 for c in spec.features if c != "model_params"
            ):
                continue
            try:
                r = fit_params(
                    spec,
                    xs,
                    y[train],
                    fixed_gamma=fixed,
                    loss=self.loss,
                    f_scale=self.f_scale,
                    starts=[p0],
                )
            except ScalingInputError:
                continue
            with np.errstate(over="ignore", invalid="ignore"):
                errors[test] = spec.func(r.params, {c: v[test] for c, v in xn.items()}) - y[test]
        ok = np.isfinite(errors)
        return {
            "rmse": float(np.sqrt(np.mean(errors[ok] ** 2))) if ok.any() else None,
            "mae": float(np.mean(np.abs(errors[ok]))) if ok.any() else None,
            "n": int(ok.sum()),
            "by": self.holdout,
        }

    # -- units -----------------------------------------------------------------------------
    def _to_original(self, p: np.ndarray) -> dict[str, float]:
        """Parameters in original units (undo the feature normalisation)."""
        spec = FORMS[self.form]
        d = dict(zip(spec.params, (float(v) for v in p), strict=True))
        r = self.refs_
        if spec.name == "chinchilla":
            d["A"] = d["A"] * r["n_examples"] ** d["alpha"]
            d["B"] = d["B"] * r["mean_tokens"] ** d["beta"]
        else:
            base = spec.features[0]
            d["A"] = d["A"] * r[base] ** (-d["beta"]) * r["model_params"] ** (-d["gamma"])
        return d

    # -- prediction ------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "params_"):
            raise RuntimeError("call fit() first")

    def predict(self, runs: Mapping[str, Sequence[float]], *, interval: bool = False):
        """Predicted performance (and, with ``interval``, the bootstrap percentile band)."""
        self._check_fitted()
        cols = dict(runs)
        cols.setdefault("performance", np.zeros(len(np.atleast_1d(cols["n_examples"]))))
        x = runs_features(cols)
        spec = FORMS[self.form]
        xn = _normalise(x, self.refs_)
        mean = spec.func(self._p, xn)
        if not interval:
            return mean
        if len(self.bootstrap_params_) < 10:
            return mean, None
        draws = np.array([spec.func(b, xn) for b in self.bootstrap_params_])
        alpha = (1 - self.level) / 2
        return mean, (np.quantile(draws, alpha, axis=0), np.quantile(draws, 1 - alpha, axis=0))

    def to_dict(self) -> dict[str, Any]:
        self._check_fitted()
        return {
            "form": self.form,
            "equation": FORMS[self.form].equation,
            "params": self.params_,
            "intervals": self.intervals_,
            "fixed": self.fixed_,
            "notes": self.notes_,
            "heldout": self.heldout_,
            "n_runs": self.n_runs_,
            "converged": self.converged_,
            "settings": {
                "loss": self.loss,
                "f_scale": self.f_scale,
                "n_starts": self.n_starts,
                "n_bootstrap": self.n_bootstrap,
                "level": self.level,
                "holdout": self.holdout,
                "seed": self.seed,
            },
            "refs": self.refs_,
            "normalised_params": self._p.tolist(),
            "bootstrap_normalised_params": self.bootstrap_params_.tolist(),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ScalingLaw:
        law = cls(d["form"], **d["settings"])
        law.params_ = dict(d["params"])
        law.intervals_ = {k: (None if v is None else tuple(v)) for k, v in d["intervals"].items()}
        law.fixed_ = dict(d["fixed"])
        law.notes_ = list(d["notes"])
        law.heldout_ = dict(d["heldout"])
        law.n_runs_ = int(d["n_runs"])
        law.converged_ = bool(d["converged"])
        law.refs_ = dict(d["refs"])
        law._p = np.asarray(d["normalised_params"], dtype=np.float64)
        law.bootstrap_params_ = np.asarray(
            d["bootstrap_normalised_params"], dtype=np.float64
        ).reshape(-1, len(FORMS[d["form"]].params))
        return law


def compare_forms(
    runs: Mapping[str, Sequence[float]], forms: Sequence[str] = tuple(FORMS), **kwargs: Any
) -> list[dict[str, Any]]:
    """Fit every form; rows sorted by held-out RMSE (best first). Forms that cannot fit say why."""
    rows = []
    for name in forms:
        try:
            law = ScalingLaw(name, **kwargs).fit(runs)
        except ScalingInputError as err:
            rows.append({"form": name, "error": str(err), "heldout_rmse": math.inf})
            continue
        rows.append(
            {
                "form": name,
                "equation": FORMS[name].equation,
                "heldout_rmse": law.heldout_["rmse"]
                if law.heldout_["rmse"] is not None
                else math.inf,
                "heldout_mae": law.heldout_["mae"],
                "params": law.params_,
                "notes": law.notes_,
            }
        )
    return sorted(rows, key=lambda r: r["heldout_rmse"])
