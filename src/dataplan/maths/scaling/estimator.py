"""The robust estimator of a scaling law (arXiv 2505.06150, docs/methods.md §7).

Fitting [our choice]: robust nonlinear least squares (:func:`scipy.optimize.least_squares`
with a soft-L1 or Huber loss) from several starting points, on features divided by their
geometric mean (so A is on the scale of P; it is reported back in original units). Exponents
are bounded to [−5, 5] (chinchilla's to [0, 5]): beyond that a power law over the narrow ranges
of a fine-tuning study only means the data do not pin it down, and the bound is reported. The
robust loss's scale is the residuals' robust spread (1.345 · 1.4826 · MAD of a plain
least-squares fit, Huber's 95%-efficiency constant) unless given. A power in a feature needs
at least 3 distinct values spanning a factor 1.5 (else: not identifiable, an input error); with
a single model size γ is not identifiable and is fixed at 0. Bootstrap over runs gives a
percentile interval for every parameter and for predictions.

Starts: for fixed exponents every form is linear in its other internal parameters (see
:mod:`.forms`), so a grid of exponents with the linear least-squares fit of the rest gives the
starting points; each has shape (params + levels − 1,), as do the fitted internal parameters and
every row of ``bootstrap_params_`` (shape (resamples, params + levels − 1)).

Strategy effects [our choice]: with ``strategy_effects``, every form gets one intercept per
subsampling strategy, P = f(features) + E_s, reported as E (the mean of the E_s) and
``delta[s]`` = E_s − E. It tests the paper's premise that the volume alone predicts
performance: when subsets of equal volume chosen differently (shortest-first, longest-first,
…) differ systematically, the offsets win on held-out error. The offsets enter linearly, so
the exponent-grid starts stay exact.

Held-out error (``heldout_``, computed by ``fit``) refits without
each design point (all seeds of one (N, L̄, M) together, so repeated seeds do not leak), each
run, or each group of a column, from starts that never saw the held-out runs. :class:`ScalingLaw`
follows the scikit-learn estimator contract (``fit`` returns self, fitted attributes end in
``_``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal, cast, overload

import numpy as np

from dataplan.maths.scaling.fitting import _starts, fit_params
from dataplan.maths.scaling.forms import (
    FORMS,
    LEVEL,
    LawForm,
    ScalingInputError,
    _bounds,
    _evaluate,
    _identifiable,
    _normalise,
    identifiability_problem,
    runs_features,
)


class ScalingLaw:
    """A scaling law estimator (scikit-learn contract: ``fit`` returns self, ``predict``).

    Args:
        form: ``volume``, ``tokens``, ``examples`` or ``chinchilla``.
        loss: robust loss of :func:`scipy.optimize.least_squares` (``soft_l1``, ``huber``,
            ``linear``).
        f_scale: residual scale at which the robust loss turns linear (performance units);
            None: from the data (module docstring).
        n_starts: starting points of the nonlinear fit (every held-out refit takes the best
            min(n_starts, 3) of its own: the refits are many).
        n_bootstrap: bootstrap resamples for the intervals (0 to skip).
        level: coverage of the intervals.
        holdout: ``point`` (leave one design point out: every seed of one (N, L̄, M)), ``run``
            (leave one run out) or a column name (leave one group out, e.g. ``strategy``).
        seed: seed of the starts and the bootstrap.
        strategy_effects: one intercept per subsampling strategy (the runs' ``strategy``
            column; module docstring); ``predict`` then needs ``strategy`` too.

    Fitted attributes: ``params_`` (original units; with strategy effects also ``delta[s]``),
    ``intervals_``, ``fixed_``, ``notes_``, ``strategies_`` (the strategies, reference first),
    ``heldout_`` (``{"rmse", "mae", "n", "by", "errors"}``), ``refs_`` (normalisers),
    ``f_scale_``, ``ranges_`` (the fitted runs' range of each feature), ``converged_``,
    ``bootstrap_params_`` (normalised), ``n_runs_``.
    """

    def __init__(
        self,
        form: str = "volume",
        *,
        loss: str = "soft_l1",
        f_scale: float | None = None,
        n_starts: int = 8,
        n_bootstrap: int = 200,
        level: float = 0.95,
        holdout: str = "point",
        seed: int = 0,
        strategy_effects: bool = False,
    ) -> None:
        if form not in FORMS:
            raise ValueError(f"unknown form {form!r}; choose from {', '.join(FORMS)}")
        if loss not in ("soft_l1", "huber", "linear", "cauchy", "arctan"):
            raise ValueError(f"unknown loss {loss!r}; choose soft_l1, huber or linear")
        if not 0 < level < 1:
            raise ValueError("level must be in (0, 1)")
        if f_scale is not None and not f_scale > 0:
            raise ValueError("f_scale must be positive")
        self.form = form
        self.loss = loss
        self.f_scale = f_scale
        self.n_starts = n_starts
        self.n_bootstrap = n_bootstrap
        self.level = level
        self.holdout = holdout
        self.seed = seed
        self.strategy_effects = strategy_effects

    # -- fitting ---------------------------------------------------------------------------
    def fit(self, runs: Mapping[str, Sequence[Any] | np.ndarray]) -> ScalingLaw:
        spec = FORMS[self.form]
        x = runs_features(runs, need_tokens="tokens_seen" in spec.features)
        y = x["performance"]
        self.notes_: list[str] = []
        fixed = spec.power_of_model is not None and np.ptp(x["model_params"]) == 0
        if fixed:
            self.notes_.append("a single model size: γ is not identifiable and is fixed at 0")
        self.strategies_: list[str] = []
        levels = None
        if self.strategy_effects:
            if "strategy" not in runs:
                raise ScalingInputError("strategy effects need a strategy column")
            labels = [str(v) for v in runs["strategy"]]
            if len(labels) != y.size:
                raise ScalingInputError("columns must have equal length")
            self.strategies_ = sorted(set(labels))
            if len(self.strategies_) < 2:
                raise ScalingInputError(
                    "strategy effects need runs of at least 2 strategies "
                    f"(all are {self.strategies_[0]!r})"
                )
            levels = np.array([self.strategies_.index(t) for t in labels])
        self._levels = max(1, len(self.strategies_))
        k = len(spec.params) - int(fixed) + self._levels - 1
        if y.size <= k:
            raise ScalingInputError(
                f"{y.size} runs cannot fit the {k} free parameters of the {self.form} form"
            )
        for col in spec.features:
            problem = None if col == "model_params" else identifiability_problem(col, x[col])
            if problem:
                raise ScalingInputError(f"{problem}; the {self.form} law is not identifiable")
        self.refs_ = {c: float(np.exp(np.mean(np.log(x[c])))) for c in spec.features}
        self.ranges_ = {
            c: [float(x[c].min()), float(x[c].max())]
            for c in ("n_examples", "mean_tokens", "volume", "tokens_seen", "model_params")
            if c in x
        }
        if "tokens_seen" not in x and "tokens_seen" in runs:
            t = np.asarray(runs["tokens_seen"], dtype=np.float64)
            if np.all(np.isfinite(t)):
                self.ranges_["tokens_seen"] = [float(t.min()), float(t.max())]
        xn = _normalise(x, self.refs_)
        if levels is not None:
            xn[LEVEL] = levels
        rng = np.random.default_rng(self.seed)
        starts = _starts(spec, xn, y, self.n_starts, fixed_gamma=fixed, levels=self._levels)
        self.f_scale_ = self.f_scale or self._robust_scale(spec, xn, y, fixed, starts)
        best = fit_params(
            spec,
            xn,
            y,
            fixed_gamma=fixed,
            loss=self.loss,
            f_scale=self.f_scale_,
            starts=starts,
            levels=self._levels,
        )
        self.fixed_ = {spec.power_of_model: 0.0} if fixed else {}
        self._p = best.params
        self.params_ = self._to_original(best.params)
        self.converged_ = best.success
        if not best.success:
            self.notes_.append("the optimiser stopped before converging: treat the fit as rough")
        lo, hi = _bounds(spec)
        for i, name in enumerate(spec.params):
            value = best.params[i]
            if name in self.fixed_:
                continue
            if np.isclose(value, hi[i]) or (lo[i] != 0 and np.isclose(value, lo[i])):
                self.notes_.append(
                    f"{name} reached its bound ({value:g}): the runs do not pin the law down"
                )
            elif abs(value) < 1e-6 and name != spec.power_of_model:
                self.notes_.append(
                    f"{name} ≈ 0: the law is logarithmic in its feature (the published A, E are "
                    "unbounded; predictions use the finite reparametrisation)"
                )
        self._bootstrap(spec, xn, y, fixed, best.params, rng)
        self.heldout_ = self._heldout(runs, x, xn, y, spec, fixed)
        self.n_runs_ = int(y.size)
        return self

    def _robust_scale(
        self,
        spec: LawForm,
        xn: Mapping[str, np.ndarray],
        y: np.ndarray,
        fixed: bool,
        starts: list[np.ndarray],
    ) -> float:
        """Huber's scale: 1.345 · 1.4826 · MAD of the residuals of a plain least-squares fit."""
        r = fit_params(
            spec,
            xn,
            y,
            fixed_gamma=fixed,
            loss="linear",
            f_scale=1.0,
            starts=starts,
            levels=self._levels,
        ).residuals
        mad = float(np.median(np.abs(r - np.median(r))))
        floor = 1e-3 * max(float(np.ptp(y)), float(np.abs(y).max()), 1e-12)
        return max(1.345 * 1.4826 * mad, floor)

    def _bootstrap(
        self,
        spec: LawForm,
        xn: Mapping[str, np.ndarray],
        y: np.ndarray,
        fixed: bool,
        p0: np.ndarray,
        rng: np.random.Generator,
    ) -> None:
        boots = []
        for _ in range(self.n_bootstrap):
            idx = rng.integers(0, y.size, size=y.size)
            xs = {c: v[idx] for c, v in xn.items()}
            if not _identifiable(spec, xs) or not self._all_levels(xs):
                continue
            try:
                r = fit_params(
                    spec,
                    xs,
                    y[idx],
                    fixed_gamma=fixed,
                    loss=self.loss,
                    f_scale=self.f_scale_,
                    starts=[p0],
                    levels=self._levels,
                )
            except ScalingInputError:
                continue
            if np.all(np.isfinite(r.params)):
                boots.append(r.params)
        self.bootstrap_params_ = (
            np.array(boots) if boots else np.empty((0, len(spec.params) + self._levels - 1))
        )
        self.n_bootstrap_ok_ = len(boots)
        if self.n_bootstrap and len(boots) < 10:
            self.notes_.append(
                f"only {len(boots)} of {self.n_bootstrap} bootstrap refits were identifiable: "
                "no intervals"
            )
        alpha = (1 - self.level) / 2
        self.intervals_: dict[str, tuple[float, float] | None] = {}
        for name in self._to_original(p0):
            if name in self.fixed_ or len(boots) < 10:
                self.intervals_[name] = None
                continue
            orig = np.array([self._to_original(b)[name] for b in boots])
            lo, hi = np.quantile(orig, [alpha, 1 - alpha])
            self.intervals_[name] = (float(lo), float(hi))

    def _all_levels(self, xs: Mapping[str, np.ndarray]) -> bool:
        """Every strategy is among these runs (else its offset is not identified)."""
        return self._levels == 1 or np.unique(xs[LEVEL]).size == self._levels

    def _groups(
        self, runs: Mapping[str, Sequence[Any] | np.ndarray], x: Mapping[str, np.ndarray]
    ) -> np.ndarray:
        if self.holdout == "run":
            return np.arange(x["performance"].size)
        if self.holdout == "point":
            keys = np.stack([x["n_examples"], x["mean_tokens"], x["model_params"]], axis=1)
            return np.unique(keys, axis=0, return_inverse=True)[1].reshape(-1)
        if self.holdout not in runs:
            raise ScalingInputError(
                f"unknown hold-out column {self.holdout!r} (use point, run or a column of the runs)"
            )
        labels = [str(v) for v in runs[self.holdout]]
        return np.unique(labels, return_inverse=True)[1]

    def _heldout(
        self,
        runs: Mapping[str, Sequence[Any] | np.ndarray],
        x: Mapping[str, np.ndarray],
        xn: Mapping[str, np.ndarray],
        y: np.ndarray,
        spec: LawForm,
        fixed: bool,
    ) -> dict[str, Any]:
        groups = self._groups(runs, x)
        errors = np.full(y.size, np.nan)
        for g in np.unique(groups):
            test = groups == g
            train = ~test
            xs = {c: v[train] for c, v in xn.items()}
            free = len(spec.params) - int(fixed) + self._levels - 1
            if train.sum() <= free or not _identifiable(spec, xs):
                continue
            if self._levels > 1:  # runs of a strategy absent from the fold cannot be predicted
                test = test & np.isin(xn[LEVEL], xs[LEVEL])
                if not test.any():
                    continue
            # Starts from the training fold only: the full-data optimum has seen the held-out runs.
            try:
                r = fit_params(
                    spec,
                    xs,
                    y[train],
                    fixed_gamma=fixed,
                    loss=self.loss,
                    f_scale=self.f_scale_,
                    starts=_starts(
                        spec,
                        xs,
                        y[train],
                        min(self.n_starts, 3),
                        fixed_gamma=fixed,
                        levels=self._levels,
                    ),
                    levels=self._levels,
                )
            except ScalingInputError:
                continue
            with np.errstate(over="ignore", invalid="ignore"):
                held = {c: v[test] for c, v in xn.items()}
                errors[test] = _evaluate(spec, r.params, held, self._levels) - y[test]
        ok = np.isfinite(errors)
        return {
            "rmse": float(np.sqrt(np.mean(errors[ok] ** 2))) if ok.any() else None,
            "mae": float(np.mean(np.abs(errors[ok]))) if ok.any() else None,
            "n": int(ok.sum()),
            "by": self.holdout,
            "errors": [float(e) if np.isfinite(e) else None for e in errors],
        }

    # -- units -----------------------------------------------------------------------------
    def _to_original(self, q: np.ndarray) -> dict[str, float]:
        """Published parameters in original units (undo the reparametrisation, then the
        feature normalisation); an exponent of exactly 0 gives infinite A and E."""
        spec = FORMS[self.form]
        k = len(spec.params)
        d = dict(zip(spec.params, (float(v) for v in spec.natural(q[:k])), strict=True))
        if self.strategies_:  # E_s = E_ref + offset_s, reported as their mean and deviations
            intercepts = d["E"] + np.concatenate([[0.0], q[k:]])
            d["E"] = float(intercepts.mean())
            for name, e_s in zip(self.strategies_, intercepts, strict=True):
                d[f"delta[{name}]"] = float(e_s - d["E"])
        r = self.refs_
        with np.errstate(over="ignore", invalid="ignore"):
            if spec.name == "chinchilla":
                d["A"] = float(d["A"] * np.power(r["n_examples"], d["alpha"]))
                d["B"] = float(d["B"] * np.power(r["mean_tokens"], d["beta"]))
            else:
                base = spec.features[0]
                scale = np.power(r[base], -d["beta"]) * np.power(r["model_params"], -d["gamma"])
                d["A"] = float(d["A"] * scale)
        return d

    # -- prediction ------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "params_"):
            raise RuntimeError("call fit() first")

    @overload
    def predict(
        self, runs: Mapping[str, Sequence[Any] | np.ndarray], *, interval: Literal[False] = False
    ) -> np.ndarray: ...

    @overload
    def predict(
        self, runs: Mapping[str, Sequence[Any] | np.ndarray], *, interval: Literal[True]
    ) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray] | None]: ...

    @overload
    def predict(
        self, runs: Mapping[str, Sequence[Any] | np.ndarray], *, interval: bool
    ) -> np.ndarray | tuple[np.ndarray, tuple[np.ndarray, np.ndarray] | None]: ...

    def predict(
        self, runs: Mapping[str, Sequence[Any] | np.ndarray], *, interval: bool = False
    ) -> np.ndarray | tuple[np.ndarray, tuple[np.ndarray, np.ndarray] | None]:
        """Predicted performance (and, with ``interval``, the bootstrap percentile band).

        ``runs`` needs ``n_examples``, ``mean_tokens`` and ``model_params`` (and ``tokens_seen``
        for the tokens form, ``strategy`` for a law with strategy effects).

        Raises:
            ScalingInputError: a missing column, or a strategy the law was not fitted on.
        """
        self._check_fitted()
        cols = dict(runs)
        cols.setdefault("performance", np.zeros(len(np.atleast_1d(cols["n_examples"]))))
        spec = FORMS[self.form]
        x = runs_features(cols, need_tokens="tokens_seen" in spec.features)
        xn = _normalise(x, self.refs_)
        if self.strategies_:
            if "strategy" not in cols:
                raise ScalingInputError("a law with strategy effects needs the strategy column")
            labels = [str(v) for v in np.atleast_1d(cols["strategy"])]
            unknown = sorted(set(labels) - set(self.strategies_))
            if unknown:
                raise ScalingInputError(
                    f"strategy {unknown[0]!r} was not among the fitted runs "
                    f"({', '.join(self.strategies_)})"
                )
            xn[LEVEL] = np.array([self.strategies_.index(t) for t in labels])
        levels = max(1, len(self.strategies_))
        mean = _evaluate(spec, self._p, xn, levels)
        if not interval:
            return mean
        if len(self.bootstrap_params_) < 10:
            return mean, None
        draws = np.array([_evaluate(spec, b, xn, levels) for b in self.bootstrap_params_])
        alpha = (1 - self.level) / 2
        return mean, (np.quantile(draws, alpha, axis=0), np.quantile(draws, 1 - alpha, axis=0))

    @property
    def equation(self) -> str:
        """The form's equation, with the per-strategy intercept if fitted."""
        base = FORMS[self.form].equation
        return f"{base}, E per strategy (E_s)" if self.strategy_effects else base

    def to_dict(self) -> dict[str, Any]:
        self._check_fitted()
        return {
            "form": self.form,
            "equation": self.equation,
            "params": self.params_,
            "intervals": self.intervals_,
            "fixed": self.fixed_,
            "notes": self.notes_,
            "heldout": self.heldout_,
            "n_runs": self.n_runs_,
            "converged": self.converged_,
            "ranges": self.ranges_,
            "settings": {
                "loss": self.loss,
                "f_scale": self.f_scale,
                "n_starts": self.n_starts,
                "n_bootstrap": self.n_bootstrap,
                "level": self.level,
                "holdout": self.holdout,
                "seed": self.seed,
                "strategy_effects": self.strategy_effects,
            },
            "strategy_levels": self.strategies_,
            "f_scale": self.f_scale_,
            "refs": self.refs_,
            "internal_params": self._p.tolist(),
            "bootstrap_internal_params": self.bootstrap_params_.tolist(),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ScalingLaw:
        """The law saved by :meth:`to_dict`.

        Raises:
            ScalingInputError: if ``d`` is not such a law (missing or malformed fields).
        """
        try:
            law = cls(d["form"], **d["settings"])
            law.params_ = {k: float(v) for k, v in d["params"].items()}
            law.intervals_ = {
                k: (None if v is None else cast("tuple[float, float]", tuple(v)))
                for k, v in d["intervals"].items()
            }
            law.fixed_ = dict(d["fixed"])
            law.notes_ = list(d["notes"])
            law.heldout_ = dict(d["heldout"])
            law.n_runs_ = int(d["n_runs"])
            law.converged_ = bool(d["converged"])
            law.refs_ = {k: float(v) for k, v in d["refs"].items()}
            law.strategies_ = [str(v) for v in d.get("strategy_levels", [])]
            if law.strategy_effects != bool(law.strategies_):
                raise ValueError("strategy effects without their strategies")
            law.f_scale_ = float(d["f_scale"])
            law.ranges_ = {k: [float(a), float(b)] for k, (a, b) in d["ranges"].items()}
            law._p = np.asarray(d["internal_params"], dtype=np.float64)
            n_params = len(FORMS[d["form"]].params) + max(0, len(law.strategies_) - 1)
            law.bootstrap_params_ = np.asarray(
                d["bootstrap_internal_params"], dtype=np.float64
            ).reshape(-1, n_params)
            if law._p.shape != (n_params,) or set(law.refs_) != set(FORMS[d["form"]].features):
                raise ValueError("parameters do not match the form")
        except KeyError as err:
            raise ScalingInputError(f"not a saved scaling law (no field {err})") from None
        except (TypeError, ValueError, AttributeError) as err:
            raise ScalingInputError(f"not a saved scaling law ({err})") from None
        return law
