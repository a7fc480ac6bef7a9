"""Pairwise cosine similarity of per-example gradients, from their Gram matrix.

For N flattened gradients g_1..g_N (each of length P) the Gram matrix is ``K[i, j] = <g_i, g_j>``
(shape N×N). Everything CoS-Low needs follows from K, so the gradients themselves never have to
be held at once:

    ‖g_i‖ = sqrt(K[i, i])
    cos(g_i, g_j) = K[i, j] / (‖g_i‖ ‖g_j‖)
    CoS = median over the N(N−1)/2 pairs i < j of cos(g_i, g_j)      (496 pairs for N = 32)
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _numpy(x: Any) -> Any:
    """A torch tensor (duck-typed: no torch import here) as something numpy reads."""
    return x.detach().cpu() if hasattr(x, "detach") else x


def cosine_from_gram(gram: Any, eps: float = 0.0) -> np.ndarray:
    """Cosine matrix (N×N, float64) from a Gram matrix; a zero gradient gives cosine 0."""
    k = np.asarray(_numpy(gram), np.float64)
    if k.ndim != 2 or k.shape[0] != k.shape[1]:
        raise ValueError(f"gram must be square, got shape {k.shape}")
    norms = np.sqrt(np.clip(np.diag(k), 0.0, None))
    denom = np.outer(norms, norms)
    with np.errstate(divide="ignore", invalid="ignore"):
        cos = np.where(denom > eps, k / np.where(denom > eps, denom, 1.0), 0.0)
    return np.clip(cos, -1.0, 1.0)


def gradient_norms_from_gram(gram: Any) -> np.ndarray:
    """Per-example gradient norms ``sqrt(diag K)``, shape (N,)."""
    k = np.asarray(_numpy(gram), np.float64)
    return np.sqrt(np.clip(np.diag(k), 0.0, None))


def median_pairwise(matrix: np.ndarray) -> float:
    """Median of the strictly upper-triangular entries (each unordered pair once, no diagonal)."""
    m = np.asarray(matrix, dtype=np.float64)
    n = m.shape[0]
    if n < 2:
        raise ValueError("need at least two examples for a pairwise median")
    return float(np.median(m[np.triu_indices(n, k=1)]))


def cos_similarity_score(gram: Any) -> float:
    """CoS: the median pairwise cosine of the gradients whose Gram matrix is ``gram``."""
    return median_pairwise(cosine_from_gram(gram))
