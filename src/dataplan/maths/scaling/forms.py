"""The forms of the dataset-volume scaling laws (arXiv 2505.06150, docs/methods.md §7).

Forms (performance P, higher is better; N examples, L̄ mean tokens per example, V = N·L̄ the
dataset volume, T tokens seen in training, M model parameters)::

    volume      P = A · V^β · M^γ + E
    tokens      P = A · T^β · M^γ + E
    examples    P = A · N^β · M^γ + E
    chinchilla  P = E − A · N^(−α) − B · L̄^(−β)        (additive, Chinchilla-style)

Reparametrisation [our choice]: each form is fitted in internal parameters q that stay finite
where the published ones do not (an exponent → 0, the logarithmic limit)::

    power forms  P = a · (x^β · M^γ − 1)/β + e,              q = [a, β, γ, e]
                 A = a/β,  E = e − a/β
    chinchilla   P = e + a · (1 − N^−α)/α + b · (1 − L̄^−β)/β,  q = [e, a, α, b, β]
                 A = a/α,  B = b/β,  E = e + A + B

With strategy effects q also holds one offset per non-reference strategy, shape
(params + levels − 1,), and the features hold each run's strategy index under ``LEVEL``.

Features are arrays of shape (runs,) (:func:`runs_features`), divided by their geometric mean
before fitting. Exponents are bounded to [−5, 5] (chinchilla's to [0, 5]). A power in a feature
needs at least 3 distinct values spanning a factor 1.5 (else: not identifiable, an input error).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

COLUMNS = ("n_examples", "mean_tokens", "model_params", "performance")


@dataclass(frozen=True)
class LawForm:
    """A functional form, fitted in a reparametrisation that stays finite where the published
    one does not (see :data:`FORMS`).

    ``params`` names the published parameters; ``func(q, x)`` is P for internal parameters q
    (same order, exponents identical) on normalised features; ``natural(q)`` maps q to the
    published parameters (still on normalised features).
    """

    name: str
    params: tuple[str, ...]
    features: tuple[str, ...]  # columns used, after normalisation
    equation: str
    func: Callable[[np.ndarray, Mapping[str, np.ndarray]], np.ndarray]
    natural: Callable[[np.ndarray], np.ndarray]
    power_of_model: str | None = "gamma"  # the exponent of M (fixed to 0 with one model size)


EXPONENT_BOUND = 5.0
MIN_DISTINCT = 3  # distinct values of a feature a power law needs
MIN_LOG_SPREAD = math.log(1.5)  # and the factor they must span
LEVEL = "strategy_level"  # key of each run's strategy index among the features (0 = reference)


def _evaluate(
    form: LawForm, q: np.ndarray, xn: Mapping[str, np.ndarray], levels: int
) -> np.ndarray:
    """P for internal parameters q = [form's parameters, offsets of strategies 1..levels−1]
    (strategy 0 is the reference, offset 0)."""
    k = len(form.params)
    p = form.func(q[:k], xn)
    if levels > 1:
        p = p + np.concatenate([[0.0], q[k:]])[xn[LEVEL]]
    return p


def _box_cox(log_x: np.ndarray, power: float | np.ndarray) -> np.ndarray:
    """(x^p − 1)/p, with its limit ln x at p = 0 (stable for small p via expm1)."""
    p = np.asarray(power, dtype=np.float64)
    safe = np.where(p == 0, 1.0, p)
    return np.where(p == 0, log_x, np.expm1(p * log_x) / safe)


def _power_internal(q: np.ndarray, x: Mapping[str, np.ndarray], base: str) -> np.ndarray:
    """P = a·(x^β·m^γ − 1)/β + e, q = [a, β, γ, e]: the power law A·x^β·m^γ + E with
    A = a/β and E = e − a/β. Unlike (A, E), (a, e) stay finite as β → 0 (the law's logarithmic
    limit a·ln x + e), which is where plain fits of a flat curve slide off to A → ∓∞, E → ±∞."""
    u = q[1] * np.log(x[base]) + q[2] * np.log(x["model_params"])
    beta = q[1] if q[1] != 0 else 1.0
    h = np.log(x[base]) if q[1] == 0 else np.expm1(u) / beta
    return q[0] * h + q[3]


def _ratio(a: float, b: float) -> float:
    """a / b, ±inf for b = 0 (a logarithmic limit), 0 for a = b = 0."""
    if b != 0:
        return a / b
    return math.copysign(math.inf, a) if a else 0.0


def _power_natural(q: np.ndarray) -> np.ndarray:
    a, beta, gamma, e = (float(v) for v in q)
    big_a = _ratio(a, beta)
    return np.array([big_a, beta, gamma, e - big_a])


def _chinchilla_internal(q: np.ndarray, x: Mapping[str, np.ndarray]) -> np.ndarray:
    """P = e + a·(1 − N^−α)/α + b·(1 − L̄^−β)/β, q = [e, a, α, b, β]: Chinchilla's
    E − A·N^−α − B·L̄^−β with A = a/α, B = b/β, E = e + A + B (finite as α, β → 0)."""
    return (
        q[0]
        + q[1] * _box_cox(np.log(x["n_examples"]), -q[2])
        + q[3] * _box_cox(np.log(x["mean_tokens"]), -q[4])
    )


def _chinchilla_natural(q: np.ndarray) -> np.ndarray:
    e, a, alpha, b, beta = (float(v) for v in q)
    big_a, big_b = _ratio(a, alpha), _ratio(b, beta)
    return np.array([e + big_a + big_b, big_a, alpha, big_b, beta])


def _power_form(name: str, base: str, symbol: str) -> LawForm:
    return LawForm(
        name,
        ("A", "beta", "gamma", "E"),
        (base, "model_params"),
        f"P = A·{symbol}^β·M^γ + E",
        lambda q, x: _power_internal(q, x, base),
        _power_natural,
    )


FORMS: dict[str, LawForm] = {
    "volume": _power_form("volume", "volume", "V"),
    "tokens": _power_form("tokens", "tokens_seen", "T"),
    "examples": _power_form("examples", "n_examples", "N"),
    "chinchilla": LawForm(
        "chinchilla",
        ("E", "A", "alpha", "B", "beta"),
        ("n_examples", "mean_tokens"),
        "P = E − A·N^(−α) − B·L̄^(−β)",
        _chinchilla_internal,
        _chinchilla_natural,
        power_of_model=None,
    ),
}


class ScalingInputError(ValueError):
    """Runs that cannot identify the law (the CLI reports it as bad input)."""


def _bad_values(name: str, v: np.ndarray, *, positive: bool) -> None:
    bad = np.flatnonzero(~np.isfinite(v))
    if bad.size:
        raise ScalingInputError(f"column {name} has {v[bad[0]]} at run {int(bad[0])}")
    if positive:
        bad = np.flatnonzero(~(v > 0))
        if bad.size:
            raise ScalingInputError(f"{name} must be positive (run {int(bad[0])} has {v[bad[0]]})")


def runs_features(
    runs: Mapping[str, Sequence[Any] | np.ndarray], *, need_tokens: bool = False
) -> dict[str, np.ndarray]:
    """Validated feature arrays: the four columns, volume V = N·L̄, and tokens_seen if present.

    Args:
        need_tokens: the ``tokens_seen`` column is required (the tokens form) and validated.

    Raises:
        ScalingInputError: missing columns, NaN or infinite values, or non-positive sizes.
    """
    missing = [c for c in COLUMNS if c not in runs]
    if need_tokens and "tokens_seen" not in runs:
        missing.append("tokens_seen")
    if missing:
        raise ScalingInputError(f"missing column(s): {', '.join(missing)}")
    x = {c: np.asarray(runs[c], dtype=np.float64).reshape(-1) for c in COLUMNS}
    n = x["n_examples"].size
    if any(v.shape != (n,) for v in x.values()):
        raise ScalingInputError("columns must have equal length")
    for c, v in x.items():
        _bad_values(c, v, positive=c != "performance")
    x["volume"] = x["n_examples"] * x["mean_tokens"]
    if need_tokens:
        t = np.asarray(runs["tokens_seen"], dtype=np.float64).reshape(-1)
        if t.shape != (n,):
            raise ScalingInputError("columns must have equal length")
        _bad_values("tokens_seen", t, positive=True)
        x["tokens_seen"] = t
    return x


def identifiability_problem(name: str, v: np.ndarray) -> str | None:
    """Why a power law in feature ``v`` cannot be identified from these runs, or None."""
    logs = np.log(v)
    distinct = int(np.unique(np.round(logs, 6)).size)
    if distinct < MIN_DISTINCT:
        what = "the same" if distinct == 1 else f"only {distinct} distinct values of"
        return (
            f"all runs have {what} {name}: a power law needs at least {MIN_DISTINCT} distinct "
            "values"
        )
    if np.ptp(logs) < MIN_LOG_SPREAD:
        return (
            f"{name} spans only {v.min():.6g}–{v.max():.6g} (× {math.exp(np.ptp(logs)):.4g}): a power "
            f"law needs at least a factor {math.exp(MIN_LOG_SPREAD):g}"
        )
    return None


def _identifiable(spec: LawForm, x: Mapping[str, np.ndarray]) -> bool:
    return all(
        identifiability_problem(c, x[c]) is None for c in spec.features if c != "model_params"
    )


def _normalise(x: Mapping[str, np.ndarray], refs: dict[str, float]) -> dict[str, np.ndarray]:
    return {k: x[k] / refs[k] for k in refs}


def _bounds(form: LawForm, levels: int = 1) -> tuple[np.ndarray, np.ndarray]:
    lo = np.full(len(form.params) + levels - 1, -np.inf)
    hi = np.full(len(form.params) + levels - 1, np.inf)
    for i, name in enumerate(form.params):
        if name in ("beta", "gamma", "alpha"):
            lo[i] = 0.0 if form.name == "chinchilla" else -EXPONENT_BOUND
            hi[i] = EXPONENT_BOUND
    return lo, hi
