"""Comparison of scaling-law forms on held-out error (arXiv 2505.06150, docs/methods.md §7).

Every form (and, with strategy effects, every ``<form>+strategy`` variant) is fitted by
:class:`~dataplan.maths.scaling.estimator.ScalingLaw`, whose ``heldout_["errors"]`` (shape
(runs,), prediction − truth, None where the run could not be predicted) come from refits
without each hold-out group. Forms are compared on the runs every form could predict, beside
two yardsticks a law must beat, fitted on the same training folds::

    constant           P = E      (mean of the training fold)
    constant+strategy  P = E_s    (mean of the training fold's runs of the strategy)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from dataplan.maths.scaling.estimator import ScalingLaw
from dataplan.maths.scaling.forms import FORMS, ScalingInputError, runs_features


def compare_forms(
    runs: Mapping[str, Sequence[Any] | np.ndarray],
    forms: Sequence[str] = tuple(FORMS),
    *,
    strategy_effects: bool | None = None,
    **kwargs: Any,
) -> list[dict[str, Any]]:
    """Fit every form; rows sorted by held-out RMSE, best first.

    With ``strategy_effects`` (default: when the runs hold at least 2 strategies) every form is
    also fitted with one intercept per strategy (rows ``<form>+strategy``), beside the
    yardstick ``constant+strategy`` (each strategy's training-fold mean): a law whose
    ``+strategy`` row wins says subsets of equal volume differ by how they were chosen.

    The RMSE and MAE that rank the forms are over the runs every fitted form could predict
    (``heldout_n``), so no form is favoured by skipping its hard folds; each form's own
    figures over all the runs it could predict are kept as ``own_rmse``/``own_n``. Forms that
    cannot be fitted say why (``error``) and rank last. A ``constant`` row (P = E, the training
    fold's mean: what the tokens form reduces to when every run sees the same budget) is the
    yardstick a law must beat.
    """
    labels = [str(v) for v in runs["strategy"]] if "strategy" in runs else []
    if strategy_effects is None:
        strategy_effects = len(set(labels)) >= 2
    variants = [(name, False) for name in forms]
    if strategy_effects:
        variants += [(name, True) for name in forms]
    laws: dict[str, ScalingLaw] = {}
    rows: dict[str, dict[str, Any]] = {}
    for name, effects in variants:
        label = f"{name}+strategy" if effects else name
        try:
            laws[label] = ScalingLaw(name, strategy_effects=effects, **kwargs).fit(runs)
        except ScalingInputError as err:
            rows[label] = {"form": label, "error": str(err), "heldout_rmse": math.inf}
    if laws:
        errs = {
            k: np.array([np.nan if e is None else e for e in law.heldout_["errors"]])
            for k, law in laws.items()
        }
        # A law that can predict no held-out run (strategy effects, holding out a whole
        # strategy) ranks last instead of emptying everyone's common set.
        predictable = [e for e in errs.values() if np.isfinite(e).any()]
        common = np.logical_and.reduce([np.isfinite(e) for e in predictable or errs.values()])
        first = next(iter(laws.values()))
        groups = first._groups(runs, runs_features(runs))
        y = np.asarray(runs["performance"], dtype=np.float64)
        yardsticks = {"constant": ("P = E (mean of the training fold)", _fold_means(y, groups))}
        if strategy_effects:
            yardsticks["constant+strategy"] = (
                "P = E_s (mean of the training fold's runs of the strategy)",
                _fold_means(y, groups, np.array(labels)),
            )
        for name, (equation, predicted) in yardsticks.items():
            e = (predicted - y)[common & np.isfinite(predicted)]
            rows[name] = {
                "form": name,
                "equation": equation,
                "heldout_rmse": float(np.sqrt(np.mean(e**2))) if e.size else math.inf,
                "heldout_mae": float(np.mean(np.abs(e))) if e.size else None,
                "heldout_n": int(e.size),
                "heldout_errors": e.tolist(),
                "baseline": True,
            }
        for name, law in laws.items():
            e = errs[name][common]
            if not np.isfinite(errs[name]).any():
                rows[name] = {
                    "form": name,
                    "error": "predicts none of the held-out runs (their strategy is not in the "
                    "training fold)",
                    "heldout_rmse": math.inf,
                }
                continue
            rows[name] = {
                "form": name,
                "equation": law.equation,
                "heldout_rmse": float(np.sqrt(np.mean(e**2))) if e.size else math.inf,
                "heldout_mae": float(np.mean(np.abs(e))) if e.size else None,
                "heldout_n": int(e.size),
                "heldout_errors": e.tolist(),  # prediction − truth on the common runs, in order
                "own_rmse": law.heldout_["rmse"],
                "own_n": law.heldout_["n"],
                "params": law.params_,
                "notes": law.notes_,
            }
    return sorted(rows.values(), key=lambda r: r["heldout_rmse"])


def _fold_means(y: np.ndarray, groups: np.ndarray, strata: np.ndarray | None = None) -> np.ndarray:
    """Each run predicted by the mean of the training fold (within its stratum, if given);
    NaN where the fold holds fewer than 2 such runs."""
    predicted = np.full(y.size, np.nan)
    same = np.ones(y.size, dtype=bool)
    for i in range(y.size):
        if strata is not None:
            same = strata == strata[i]
        pool = (groups != groups[i]) & same
        if pool.sum() >= 2:
            predicted[i] = y[pool].mean()
    return predicted
