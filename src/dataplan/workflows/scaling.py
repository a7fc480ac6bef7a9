"""``dataplan scaling fit|plan``: fit dataset-volume scaling laws to runs and plan a budget.

A runs file (CSV or Parquet, one row per fine-tuning run) has at least ``n_examples``,
``mean_tokens``, ``model_params`` and ``performance``; ``strategy``, ``tokens_seen``, ``task``
``seed`` and ``pool_size`` are used when present. ``fit`` compares the forms by held-out error
and saves the chosen law with the runs' length profile per subsampling strategy and the ranges
it was fitted on, which ``plan`` uses to turn a compute budget into the best (N, L̄, strategy),
flagging every answer that leaves the fitted ranges.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from dataplan.errors import ConfigError, InputError
from dataplan.maths.scaling import COLUMNS, FORMS, ScalingInputError, ScalingLaw, compare_forms

LOSSES = ("soft_l1", "huber", "linear")

TEXT_COLUMNS = ("strategy", "task", "metric")
# Must hold numbers (a non-number is an input error); other columns may hold labels.
NUMERIC_COLUMNS = (
    *COLUMNS,
    "tokens_seen",
    "pool_size",
    "epochs",
    "seed",
    "exact_match",
    "token_f1",
    "loglik_accuracy",
)


def read_runs(path: str | Path) -> dict[str, np.ndarray | list]:
    """Columns of a runs file: the numeric ones (a non-number there is an input error) as float
    arrays, labels such as ``strategy``, ``task`` and ``metric`` as strings."""
    p = Path(path)
    if not p.exists():
        raise InputError("file not found", path=p)
    import pandas as pd

    try:
        frame = pd.read_parquet(p) if p.suffix.lower() in (".parquet", ".pq") else pd.read_csv(p)
    except Exception as err:  # pandas raises many parser error types
        raise InputError(f"cannot read runs ({str(err).splitlines()[0]})", path=p) from None
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise InputError(f"missing column(s) {', '.join(missing)}", path=p, field=missing[0])
    out: dict[str, Any] = {}
    for c in frame.columns:
        values = pd.to_numeric(frame[c], errors="coerce")
        bad = values.isna() & frame[c].notna()
        if c in TEXT_COLUMNS or (bad.any() and c not in NUMERIC_COLUMNS):
            out[c] = [str(v) for v in frame[c]]  # labels (strategy, task, metric name, …)
        else:
            if bad.any():
                row = int(np.flatnonzero(bad.to_numpy())[0])
                raise InputError(
                    f"not a number: {frame[c].iloc[row]!r}", path=p, line=row + 2, field=c
                )
            out[c] = values.to_numpy(dtype=np.float64)
    if len(frame) == 0:
        raise InputError("no runs", path=p)
    return out


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


def _law(law_dict: dict[str, Any]) -> ScalingLaw:
    try:
        law = ScalingLaw.from_dict(law_dict)
        float(law_dict["model_params"])
        profile = law_dict["strategies"]
        for prof in profile.values():
            if len(prof["n"]) != len(prof["mean_tokens"]) or not prof["n"]:
                raise ScalingInputError("a strategy's length profile is empty or uneven")
    except (KeyError, TypeError, AttributeError) as err:
        raise ConfigError(
            f"not a law file written by `dataplan scaling fit --out` ({err!r} missing or malformed)"
        ) from None
    except ScalingInputError as err:
        raise ConfigError(
            f"not a law file written by `dataplan scaling fit --out`: {err}"
        ) from None
    return law


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


def plot_fit(law_dict: dict[str, Any], runs_path: str | Path, out: str | Path) -> None:
    """Performance against the form's feature, one colour per strategy, with the fitted law.

    The law's curves follow each strategy's length profile (the tokens form: one curve over the
    tokens seen); with several model sizes they are drawn at the median size.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dataplan.io import save_figure

    runs = read_runs(runs_path)
    law = _law(law_dict)
    feature, label = {
        "volume": ("volume", "dataset volume V = N · L̄ (tokens)"),
        "tokens": ("tokens_seen", "tokens seen in training T"),
        "examples": ("n_examples", "examples N"),
        "chinchilla": ("n_examples", "examples N"),
    }[law.form]
    strategies = runs.get("strategy") or ["all"] * len(runs["n_examples"])
    values = runs["n_examples"] * runs["mean_tokens"] if feature == "volume" else runs[feature]
    m = law_dict["model_params"]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    prof = law_dict["strategies"]
    for i, s in enumerate(sorted(set(strategies))):
        colour = colours[i % len(colours)]
        mask = np.array([t == s for t in strategies])
        ax.scatter(values[mask], runs["performance"][mask], label=s, s=18, color=colour)
        if law.form == "tokens" or s not in prof:
            continue
        p = prof[s]
        n = np.geomspace(min(p["n"]), max(p["n"]), 60)
        lb = np.interp(np.log(n), np.log(p["n"]), p["mean_tokens"])
        q = {
            "n_examples": n,
            "mean_tokens": lb,
            "model_params": np.full(n.size, m),
            "strategy": [s] * n.size,
        }
        ax.plot(n * lb if feature == "volume" else n, law.predict(q), lw=1, color=colour)
    if law.form == "tokens":
        t = np.geomspace(values.min(), values.max(), 60)
        q = {
            "n_examples": np.ones(t.size),
            "mean_tokens": np.ones(t.size),
            "model_params": np.full(t.size, m),
            "tokens_seen": t,
        }
        ax.plot(t, law.predict(q), lw=1, color="black", label="law")
    ax.set_xscale("log")
    ax.set_xlabel(label)
    ax.set_ylabel("performance")
    several = np.ptp(runs["model_params"]) > 0
    title = law.equation + (f" (curves at M = {m:.3g})" if several else "")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    save_figure(fig, out)
    plt.close(fig)


def plot_plan(
    law_dict: dict[str, Any],
    out: str | Path,
    *,
    max_examples: int | None = None,
    model_params: float | None = None,
) -> None:
    """Best predicted performance against compute (tokens), dashed where extrapolated, with its
    bootstrap interval and each strategy's best as a thin line. The y-axis follows the
    predictions (padded), so an interval that explodes far outside the fitted runs is cut at
    the frame rather than flattening the curves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dataplan.io import save_figure

    largest_v = max(
        max(np.array(p["n"]) * np.array(p["mean_tokens"])) for p in law_dict["strategies"].values()
    )
    budgets = np.geomspace(largest_v / 50, largest_v * 20, 25)
    pts = []
    per_strategy: dict[str, list[tuple[float, float]]] = {}
    for c in budgets:
        try:
            result = plan(law_dict, c, max_examples=max_examples, model_params=model_params)
        except ConfigError:
            continue
        r = result["best"]
        iv = r["interval"] or (math.nan, math.nan)
        pts.append((c, r["predicted_performance"], iv[0], iv[1], r["extrapolated"]))
        for cand in result["per_strategy"]:
            per_strategy.setdefault(cand["strategy"], []).append((c, cand["predicted_performance"]))
    fig, ax = plt.subplots(figsize=(7, 4.2))
    if pts:
        c, best, lo, hi, extra = (np.array(v) for v in zip(*pts, strict=True))
        inside = np.where(extra, np.nan, best)
        ax.fill_between(c, lo, hi, alpha=0.15, color="black", label="interval of the best")
        ax.plot(c, best, lw=1.5, ls="--", color="black", label="best predicted (extrapolated)")
        ax.plot(c, inside, lw=2.5, color="black", label="best predicted (within the fitted runs)")
        shown = [best]
        if len(per_strategy) > 1:
            for i, (name, values) in enumerate(sorted(per_strategy.items())):
                xs, ys = (np.array(v) for v in zip(*values, strict=True))
                ax.plot(xs, ys, lw=1, color=f"C{i}", label=name)
                shown.append(ys)
        values = np.concatenate(shown)
        values = values[np.isfinite(values)]
        if values.size:
            span = max(float(np.ptp(values)), 0.05 * max(abs(float(values.max())), 1e-6))
            ax.set_ylim(float(values.min()) - 0.3 * span, float(values.max()) + 0.3 * span)
    ax.set_xscale("log")
    ax.set_xlabel("compute budget (training tokens)")
    ax.set_ylabel("predicted performance")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save_figure(fig, out)
    plt.close(fig)
