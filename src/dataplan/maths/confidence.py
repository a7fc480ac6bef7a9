"""Which examples count as low-confidence (CoS-Low step 2, arXiv 2512.24991): pure numpy."""

from __future__ import annotations

import numpy as np


def lowest_confidence(
    scores: np.ndarray, fraction: float = 0.1, *, k: int = 32, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """The lowest-confidence ``fraction`` of the pool, and ``k`` of them sampled with ``seed``.

    The low set has ``floor(fraction · N)`` examples (ties broken by index, stable sort), like
    the authors' first decile. Returns ``(low_indices, chosen_indices)``, the chosen sorted.

    Raises:
        ValueError: if the low set holds fewer than ``k`` examples.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    n_low = int(np.floor(fraction * len(scores) + 1e-9))
    if n_low < k:
        raise ValueError(
            f"the lowest {fraction:.0%} of a pool of {len(scores)} is {n_low} examples, fewer than "
            f"the {k} needed"
        )
    low = np.argsort(np.asarray(scores), kind="stable")[:n_low]
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(low, size=k, replace=False))
    return np.sort(low), chosen
