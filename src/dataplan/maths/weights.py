"""From per-example scores to training weights, and nearest neighbours by cosine (pure numpy).

Min-max normalisation (the ICA paper's, arXiv 2510.14459; not a softmax, no temperature)::

    w_i = (s_i − min_j s_j) / (max_j s_j − min_j s_j)          ∈ [0, 1]

with an optional floor w_min [our choice, ``--min-weight``] so that no example is silenced
entirely: w_i ← w_min + (1 − w_min) · w_i. Scores that are all equal give uniform weights (1);
a NaN score (an example that could not be scored) gets the floor.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike


def minmax_weights(scores: ArrayLike, floor: float = 0.0) -> np.ndarray:
    """Min-max normalised weights of the module docstring, shape (N,), float64.

    Raises:
        ValueError: for a floor outside [0, 1) or no finite score.
    """
    if not 0.0 <= floor < 1.0:
        raise ValueError(f"the weight floor must be in [0, 1), got {floor}")
    s = np.asarray(scores, dtype=np.float64)
    finite = np.isfinite(s)
    if not finite.any():
        raise ValueError("no finite score to normalise")
    lo, hi = s[finite].min(), s[finite].max()
    w = np.ones_like(s) if hi == lo else (s - lo) / (hi - lo)
    w = floor + (1.0 - floor) * w
    w[~finite] = floor
    return w


def top_fraction_weights(scores: ArrayLike, keep: float) -> np.ndarray:
    """Hard filtering: weight 1 for the ⌈keep · N⌉ highest scores (ties by index), else 0.

    Raises:
        ValueError: for ``keep`` outside (0, 1].
    """
    if not 0.0 < keep <= 1.0:
        raise ValueError(f"the kept fraction must be in (0, 1], got {keep}")
    s = np.asarray(scores, dtype=np.float64)
    n_keep = int(np.ceil(keep * s.size - 1e-9))
    order = np.argsort(-np.where(np.isfinite(s), s, -np.inf), kind="stable")
    w = np.zeros_like(s)
    w[order[:n_keep]] = 1.0
    return w


def nearest_by_cosine(
    queries: ArrayLike, keys: ArrayLike, k: int, exclude: ArrayLike | None = None
) -> np.ndarray:
    """Indices of the ``k`` keys most cosine-similar to each query, best first, shape (Q, k).

    Args:
        queries: (Q, D) vectors.
        keys: (K, D) vectors, K ≥ k.
        exclude: (Q, K) bool, pairs never chosen (e.g. a key that is the query itself); each
            query keeps at least k candidates.
    """
    q = np.asarray(queries, dtype=np.float64)
    x = np.asarray(keys, dtype=np.float64)
    if not 1 <= k <= x.shape[0]:
        raise ValueError(f"need 1 <= k <= {x.shape[0]} keys, got k = {k}")
    qn = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    xn = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    sims = qn @ xn.T  # (Q, K)
    if exclude is not None:
        mask = np.asarray(exclude, dtype=bool)
        if (x.shape[0] - mask.sum(axis=1) < k).any():
            raise ValueError(f"a query has fewer than k = {k} keys left after exclusions")
        sims = np.where(mask, -np.inf, sims)
    # stable: among equal similarities the lower key index comes first
    return np.argsort(-sims, axis=1, kind="stable")[:, :k]
