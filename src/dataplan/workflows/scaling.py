"""``dataplan scaling fit|plan``: fit dataset-volume scaling laws to runs and plan a budget.

A runs file (CSV or Parquet, one row per fine-tuning run) has at least ``n_examples``,
``mean_tokens``, ``model_params`` and ``performance``; ``strategy``, ``tokens_seen``, ``task``
``seed`` and ``pool_size`` are used when present. ``fit`` compares the forms by held-out error
and saves the chosen law with the runs' length profile per subsampling strategy and the ranges
it was fitted on, which ``plan`` uses to turn a compute budget into the best (N, L̄, strategy),
flagging every answer that leaves the fitted ranges.

The runs and law files are read and checked in :mod:`dataplan.workflows.scaling_files`, the
figures drawn in :mod:`dataplan.plots`; both are re-exported here.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from dataplan.errors import ConfigError, InputError
from dataplan.maths.scaling import FORMS, ScalingInputError, ScalingLaw, compare_forms
from dataplan.plots import plot_fit, plot_plan
from dataplan.workflows.scaling_files import (
    MOST_EXAMPLES,
    NOT_A_LAW,
    NUMERIC_COLUMNS,
    TEXT_COLUMNS,
    _law,
    read_law,
    read_runs,
)

LOSSES = ("soft_l1", "huber", "linear")


def length_profile(runs: dict[str, Any]) -> dict[str, dict[str, list[float]]]:
    """Mean tokens per example as a function of N, per subsampling strategy (for planning)."""
    strategies = runs.get("strategy") or ["all"] * len(runs["n_examples"])
    profile: dict[str, dict[str, list[float]]] = {}
    for s in sorted(set(strategies)):
        mask = np.array([t == s for t in strategies])
        ns = runs["n_examples"][mask]
        lengths = runs["mean_tokens"][mask]
        uniq = np.unique(ns)
        profile[s] = {
            "n": uniq.tolist(),
            "mean_tokens": [float(lengths[ns == u].mean()) for u in uniq],
        }
    return profile


def fit_runs(
    path: str | Path,
    *,
    form: str = "volume",
    holdout: str = "point",
    loss: str = "soft_l1",
    n_bootstrap: int = 200,
    seed: int = 0,
    strategy_effects: bool = False,
) -> dict[str, Any]:
    """Fit ``form`` (with one intercept per strategy if ``strategy_effects``) and compare every
    form, with and without strategy effects when the runs hold several strategies."""
    if form not in FORMS:
        raise ConfigError(f"unknown form {form!r}; choose from {', '.join(FORMS)}")
    if loss not in LOSSES:
        raise ConfigError(f"unknown loss {loss!r}; choose from {', '.join(LOSSES)}")
    runs = read_runs(path)
    try:
        law = ScalingLaw(
            form,
            loss=loss,
            holdout=holdout,
            n_bootstrap=n_bootstrap,
            seed=seed,
            strategy_effects=strategy_effects,
        ).fit(runs)
        comparison = compare_forms(runs, loss=loss, holdout=holdout, n_bootstrap=0, seed=seed)
    except ScalingInputError as err:
        raise InputError(str(err), path=path) from None
    except ArithmeticError as err:  # defensive: the fits bound their exponents
        raise InputError(f"the fit overflowed ({err})", path=path) from None
    except np.linalg.LinAlgError as err:  # runs of absurd scales (1e300 examples…)
        raise InputError(
            f"the fit failed numerically ({err}); check the scales of the runs' values", path=path
        ) from None
    d = law.to_dict()
    d["strategies"] = length_profile(runs)
    d["model_params"] = float(np.median(runs["model_params"]))
    if "pool_size" in runs and np.all(np.isfinite(runs["pool_size"])):
        d["pool_size"] = int(np.max(runs["pool_size"]))
    d["comparison"] = comparison
    d["runs_file"] = str(path)
    hint = _strategy_hint(d)
    if hint:
        d["notes"].append(hint)
    if "epochs" in runs:
        short = int(np.sum(np.asarray(runs["epochs"]) < 1))
        if short:
            d["notes"].append(
                f"{short} of {len(runs['epochs'])} runs trained on less than one epoch: part of "
                "their subset was never seen, so their volume overstates the data used"
            )
    return d


def _strategy_hint(law_dict: dict[str, Any]) -> str | None:
    """A note when the same form with strategy intercepts predicted held-out runs clearly better
    (≥ 10% lower RMSE): the plan would otherwise rank strategies by L̄ alone."""
    if law_dict.get("strategy_levels"):
        return None
    rmse = {r["form"]: r.get("heldout_rmse") for r in law_dict.get("comparison", [])}
    plain, effects = rmse.get(law_dict["form"]), rmse.get(f"{law_dict['form']}+strategy")
    if plain and effects and math.isfinite(plain) and effects < 0.9 * plain:
        return (
            f"with one intercept per strategy the {law_dict['form']} law predicts held-out runs "
            f"better (RMSE {effects:.3g} vs {plain:.3g}): subsets of equal volume differ by how "
            "they were chosen; refit with --strategy-effects before planning"
        )
    return None


def _outside(value: float, lo_hi: list[float] | None, slack: float = 1.0) -> bool:
    return lo_hi is not None and not (lo_hi[0] / slack <= value <= lo_hi[1] * slack)


def plan(
    law_dict: dict[str, Any],
    compute_tokens: float,
    *,
    max_examples: int | None = None,
    model_params: float | None = None,
) -> dict[str, Any]:
    """Best predicted (N, L̄, strategy) whose volume N·L̄ fits the budget (at least one epoch).

    Candidates: for each strategy, N on a geometric grid from 1 to ``max_examples`` (default:
    the pool size the runs recorded, else the largest N they measured); L̄(N) interpolated in
    log N from the runs of that strategy (held constant beyond their range). Performance and
    interval come from the law and its bootstrap. A candidate is ``extrapolated`` when its N or
    volume leaves the range the law was fitted on; the notes also say when the budget is far
    from the tokens the runs were trained on (the law does not model compute).

    Raises:
        ConfigError: a malformed law, a non-positive budget or limit, the tokens form (it
            predicts the same performance for every split of a fixed budget), or no candidate
            within the budget.
    """
    if not compute_tokens > 0:
        raise ConfigError("--compute-tokens must be positive")
    law = _law(law_dict)
    if law.form == "tokens":
        raise ConfigError(
            "the tokens form predicts the same performance for every split of a fixed budget, "
            "so it cannot choose (N, L̄): plan with a volume, examples or chinchilla law"
        )
    profile = law_dict["strategies"]
    largest = max(max(p["n"]) for p in profile.values())
    default_top = int(law_dict.get("pool_size") or largest)
    top = default_top if max_examples is None else int(max_examples)
    if top < 1:
        raise ConfigError("--max-examples must be positive")
    m = float(law_dict["model_params"] if model_params is None else model_params)
    if not m > 0:
        raise ConfigError("--model-params must be positive")
    ranges = law_dict.get("ranges", {})
    grid = np.unique(np.round(np.geomspace(1, top, 200)).astype(int))
    best: dict[str, Any] | None = None
    candidates = []
    for strategy, prof in profile.items():
        if law.strategies_ and strategy not in law.strategies_:
            continue  # a profile without an intercept (a law file edited by hand)
        lengths = np.interp(np.log(grid), np.log(prof["n"]), prof["mean_tokens"])
        volume = grid * lengths
        ok = volume <= compute_tokens
        if not ok.any():
            continue
        n, lbar = grid[ok], lengths[ok]
        query = {
            "n_examples": n,
            "mean_tokens": lbar,
            "model_params": np.full(n.size, m),
            "tokens_seen": np.full(n.size, float(compute_tokens)),
            "strategy": [strategy] * n.size,
        }
        mean, band = law.predict(query, interval=True)
        k = int(np.argmax(mean))
        row = {
            "strategy": strategy,
            "n_examples": int(n[k]),
            "mean_tokens": float(lbar[k]),
            "volume": float(n[k] * lbar[k]),
            "epochs": float(compute_tokens / (n[k] * lbar[k])),
            "predicted_performance": float(mean[k]),
            "interval": None if band is None else (float(band[0][k]), float(band[1][k])),
            "extrapolated": bool(
                _outside(n[k], ranges.get("n_examples"))
                or _outside(n[k] * lbar[k], ranges.get("volume"))
                or _outside(m, ranges.get("model_params"))
            ),
        }
        candidates.append(row)
        if best is None or row["predicted_performance"] > best["predicted_performance"]:
            best = row
    if best is None:
        raise ConfigError(
            f"no candidate fits {compute_tokens:g} tokens (one epoch of the smallest set is larger)"
        )
    notes = list(law.notes_)
    hint = _strategy_hint(law_dict)
    if hint and hint not in notes:
        notes.append(hint)
    if best["extrapolated"]:
        notes.append(
            "the best candidate lies outside the runs the law was fitted on "
            f"(N {_span(ranges.get('n_examples'))}, volume {_span(ranges.get('volume'))}): "
            "its prediction is an extrapolation"
        )
    if best["n_examples"] >= top:
        notes.append(
            f"the best candidate uses every example allowed ({top}): more data may help further"
        )
    tokens = ranges.get("tokens_seen")
    if _outside(compute_tokens, tokens, slack=1.5):
        notes.append(
            f"the runs were trained on {_span(tokens)} tokens; the law does not model compute, "
            f"so at {compute_tokens:g} tokens it assumes performance still depends on the data "
            "alone"
        )
    return {
        "compute_tokens": float(compute_tokens),
        "form": law.form,
        "model_params": m,
        "max_examples": top,
        "best": best,
        "per_strategy": candidates,
        "notes": notes,
    }


def _span(lo_hi: list[float] | None) -> str:
    return "?" if lo_hi is None else f"{lo_hi[0]:.4g}–{lo_hi[1]:.4g}"


__all__ = [
    "LOSSES",
    "MOST_EXAMPLES",
    "NOT_A_LAW",
    "NUMERIC_COLUMNS",
    "TEXT_COLUMNS",
    "fit_runs",
    "length_profile",
    "plan",
    "plot_fit",
    "plot_plan",
    "read_law",
    "read_runs",
]
