"""Scores that rank training examples for selection, and the top-k choice (pure numpy).

Notation: N examples, an ensemble of M LoRA adapters, gradients g_i^m of example i's loss under
member m, taken at an *early* and a *late* checkpoint of the members' training.
ḡ_i = mean_m ‖g_i^m‖ is the ensemble-mean gradient norm.

G-SNR, default form [our choice, docs/methods.md §5]: how much the gradient shrank during training
(signal: the ensemble learned the example) over how much the members disagree late in training
(noise), both made scale-free::

    G-SNR_i = ((ḡ_i,early − ḡ_i,late) / ḡ_i,early)  /  (std_m ‖g_i,late^m‖ / ḡ_i,late + ε)

G-SNR, shrinkage form: the signal alone, without the members' spread — on a 135M proxy with
30% corrupted labels the spread was *lower* for the corrupted examples (the members agree they
cannot fit them) and cancelled the shrinkage's separation (docs/select.md)::

    shrinkage_i = (ḡ_i,early − ḡ_i,late) / ḡ_i,early

G-SNR, classic form: the signal-to-noise ratio of the gradient vectors across members::

    SNR_i = ‖mean_m g_i^m‖² / mean_m ‖g_i^m − mean_m g_i^m‖²

computed from S_i = Σ_m g_i^m and Q_i = Σ_m ‖g_i^m‖² without holding the gradients:
‖mean‖² = ‖S_i‖²/M², mean_m ‖g − mean‖² = Q_i/M − ‖S_i‖²/M².

IFD (Superfiltering, arXiv 2402.00530): ``PPL(answer | prompt) / PPL(answer)`` from the proxy; a
value ≥ 1 means the prompt does not help predict the answer and Superfiltering drops it, so those
examples rank after every example with IFD < 1.
"""

from __future__ import annotations

import math

import numpy as np

GSNR_FORMS = ("default", "shrinkage", "classic")


def _as_2d(name: str, x: np.ndarray) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"{name} must have shape (M, N), got {a.shape}")
    return a


def gsnr_default(norms_early: np.ndarray, norms_late: np.ndarray, eps: float = 1e-3) -> np.ndarray:
    """The default G-SNR from per-member gradient norms.

    Args:
        norms_early: ‖g_i,early^m‖, shape (M, N).
        norms_late: ‖g_i,late^m‖, shape (M, N).
        eps: keeps the ratio finite when the members agree exactly.

    Returns:
        G-SNR_i, shape (N,). An example whose early gradient is zero scores 0 (nothing to learn).
    """
    early, late = _as_2d("norms_early", norms_early), _as_2d("norms_late", norms_late)
    if early.shape != late.shape:
        raise ValueError(f"early {early.shape} and late {late.shape} norms differ in shape")
    if early.shape[0] < 2:
        raise ValueError(
            "G-SNR needs an ensemble of at least 2 members (its noise is their spread)"
        )
    g_late = late.mean(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        spread = np.where(g_late > 0, late.std(axis=0) / g_late, 0.0)
    return gsnr_shrinkage(early, late) / (spread + eps)


def gsnr_shrinkage(norms_early: np.ndarray, norms_late: np.ndarray) -> np.ndarray:
    """Relative shrinkage of the ensemble-mean gradient norm, (ḡ_early − ḡ_late) / ḡ_early.

    Args:
        norms_early: ‖g_i,early^m‖, shape (M, N), M ≥ 1.
        norms_late: ‖g_i,late^m‖, shape (M, N).

    Returns:
        shape (N,), at most 1; negative when the gradient grew. A zero early gradient scores 0.
    """
    early, late = _as_2d("norms_early", norms_early), _as_2d("norms_late", norms_late)
    if early.shape != late.shape:
        raise ValueError(f"early {early.shape} and late {late.shape} norms differ in shape")
    g_early, g_late = early.mean(axis=0), late.mean(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(g_early > 0, (g_early - g_late) / g_early, 0.0)


def gsnr_classic(
    sum_sq_norms: np.ndarray, sq_norm_of_sum: np.ndarray, members: int, eps: float = 1e-9
) -> np.ndarray:
    """Classic SNR ``‖mean_m g‖² / mean_m ‖g − mean‖²`` from Q_i = Σ_m ‖g_i^m‖² and ‖S_i‖².

    Args:
        sum_sq_norms: Q_i, shape (N,).
        sq_norm_of_sum: ‖Σ_m g_i^m‖², shape (N,).
        members: M (≥ 2).
        eps: floor of the dispersion relative to mean_m ‖g^m‖² (identical members would
            divide by zero); a zero gradient everywhere scores 0.
    """
    if members < 2:
        raise ValueError("the classic SNR needs at least 2 ensemble members")
    q = np.asarray(sum_sq_norms, dtype=np.float64)
    s2 = np.asarray(sq_norm_of_sum, dtype=np.float64)
    signal = s2 / members**2
    # Relative floor: Q/M − ‖S‖²/M² cancels to rounding error when the members nearly agree.
    noise = np.maximum(q / members - signal, eps * q / members)
    return np.where(q > 0, signal / np.where(noise > 0, noise, 1.0), 0.0)


def ifd(loss_conditioned: np.ndarray, loss_unconditioned: np.ndarray) -> np.ndarray:
    """``PPL(answer | prompt) / PPL(answer) = exp(ℓ(answer | prompt) − ℓ(answer))``.

    Args:
        loss_conditioned: mean answer-token cross-entropy given the prompt, shape (N,).
        loss_unconditioned: the same without the prompt, shape (N,).
    """
    return np.exp(
        np.asarray(loss_conditioned, np.float64) - np.asarray(loss_unconditioned, np.float64)
    )


def cosine_scores(inner: np.ndarray, norms: np.ndarray, target_norm: np.ndarray) -> np.ndarray:
    """cos(g_i, ḡ_target) = <g_i, ḡ_T> / (‖g_i‖ ‖ḡ_T‖); 0 where a norm is 0.

    Shapes broadcast: e.g. inner and norms (C, N) for C checkpoints, target_norm (C, 1).
    """
    inner = np.asarray(inner, np.float64)
    denom = np.asarray(norms, np.float64) * np.asarray(target_norm, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denom > 0, inner / np.where(denom > 0, denom, 1.0), 0.0)


def subset_size(n: int, *, fraction: float | None = None, k: int | None = None) -> int:
    """How many of n examples to keep: ``k``, or ``max(1, ⌊fraction · n + ½⌋)``."""
    if (fraction is None) == (k is None):
        raise ValueError("give exactly one of fraction or k")
    if k is not None:
        if not 1 <= k <= n:
            raise ValueError(f"k must be between 1 and the pool size {n}, got {k}")
        return int(k)
    assert fraction is not None
    if not (0.0 < fraction <= 1.0) or math.isnan(fraction):
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    return max(1, min(n, math.floor(fraction * n + 0.5)))  # half up, not to even


def rank_tiers(scores: np.ndarray, demote: np.ndarray | None = None) -> np.ndarray:
    """Tier of each example before its score: 0, 1 if demoted, 2 if its score is NaN; (N,)."""
    tier = np.zeros(len(scores), dtype=np.int64)
    if demote is not None:
        tier[np.asarray(demote, dtype=bool)] = 1
    tier[np.isnan(np.asarray(scores, dtype=np.float64))] = 2  # NaN after everything
    return tier


def rank_scores(
    scores: np.ndarray, *, descending: bool = True, seed: int = 0, demote: np.ndarray | None = None
) -> np.ndarray:
    """Ranks (0 = best) of each example; ties broken by a seeded draw; NaN scores last.

    Args:
        scores: shape (N,).
        descending: the highest score is best.
        seed: seed of the tie-breaking permutation.
        demote: optional boolean mask (N,) of examples ranked after all others (e.g. IFD ≥ 1).

    Returns:
        ``rank`` with ``rank[i]`` the position of example i, shape (N,), int64.
    """
    s = np.asarray(scores, dtype=np.float64)
    n = s.shape[0]
    missing = np.isnan(s)
    key = np.where(missing, 0.0, -s if descending else s)
    tie = np.random.default_rng([seed, 11]).permutation(n)
    order = np.lexsort((tie, key, rank_tiers(s, demote)))  # last key is the primary one
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    return rank


def balance_ranks(
    rank: np.ndarray, groups: np.ndarray, tier: np.ndarray | None = None
) -> np.ndarray:
    """Re-rank so that every prefix of the ranking keeps each group's share of the pool.

    The j-th best (0-based) of group g, of size n_g, is placed at the quantile (j + ½) / n_g of
    its group; the new ranking orders examples by that quantile, ties by the original rank. A
    top-k then holds k · n_g / N examples of group g within 0.5 + G · n_g / (2N) (G groups;
    within one for groups of similar size), each group's best first — a classification subset
    keeps the pool's label mix while the score decides which examples of each label [our
    choice: proportional, not equal, shares; the whole ranking is stratified, so any ``k`` taken
    from it is balanced].

    Args:
        rank: ranks (0 = best), shape (N,), a permutation of 0..N-1.
        groups: a label per example, shape (N,).
        tier: optional (N,) integers ordered before everything else — e.g. 1 for examples
            demoted by their method (IFD ≥ 1), 2 for NaN scores — so balancing never lifts an
            example above a better tier; a group's share then counts its demoted examples too.

    Returns:
        the balanced ranks, shape (N,), int64.
    """
    rank = np.asarray(rank, dtype=np.int64)
    _, group = np.unique(np.asarray(groups), return_inverse=True)
    quantile = np.empty(rank.shape[0], dtype=np.float64)
    for g in range(group.max() + 1 if group.size else 0):
        members = np.flatnonzero(group == g)
        by_rank = members[np.argsort(rank[members])]
        quantile[by_rank] = (np.arange(by_rank.size) + 0.5) / by_rank.size
    keys = (rank, quantile) if tier is None else (rank, quantile, np.asarray(tier))
    order = np.lexsort(keys)  # the last key is the primary one
    out = np.empty_like(rank)
    out[order] = np.arange(rank.shape[0])
    return out


def length_groups(lengths: np.ndarray, max_groups: int = 5) -> np.ndarray:
    """Group examples by length for :func:`balance_ranks` (``--balance-by answer-length``).

    With at most ``max_groups`` distinct lengths each length is its own group (the 2- and
    3-digit sums of an addition pool). Otherwise a length ℓ goes to stratum
    ⌊B · #{i : lengths_i < ℓ} / N⌋ (B = ``max_groups``), the strata renumbered 0, 1, … in order:
    quantile bins of about N/B examples each, equal lengths always together, so a length shared
    by many examples makes one stratum of its own rather than a split one [our choice].

    Args:
        lengths: a length per example, shape (N,), integers.
        max_groups: B, the most groups returned, ≥ 1.

    Returns:
        a group index per example, shape (N,), int64, in increasing order of length.
    """
    if max_groups < 1:
        raise ValueError(f"max_groups must be at least 1, got {max_groups}")
    lengths = np.asarray(lengths, dtype=np.int64)
    distinct, index = np.unique(lengths, return_inverse=True)
    if distinct.size <= max_groups:
        return index.astype(np.int64)
    below = np.searchsorted(np.sort(lengths), distinct, side="left")  # #{lengths < ℓ}
    stratum = (max_groups * below) // lengths.size
    _, renumbered = np.unique(stratum[index], return_inverse=True)
    return renumbered.astype(np.int64)


__all__ = [
    "GSNR_FORMS",
    "balance_ranks",
    "cosine_scores",
    "gsnr_classic",
    "gsnr_default",
    "gsnr_shrinkage",
    "ifd",
    "length_groups",
    "rank_scores",
    "rank_tiers",
    "subset_size",
]
