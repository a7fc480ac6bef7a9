"""Planted label noise, for measuring how selection and weighting cope with wrong labels.

:func:`corrupt_answers` replaces the answers of a seeded ``fraction`` of the examples by a wrong
one: another of the example's options when it has options, else — a numeric answer — the number
shifted by 1 to 9. The studies of ``select`` and of ICA weighting corrupt their pools with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from dataplan.data.loading import Example


def corrupt_answers(
    examples: Sequence[Example], fraction: float, seed: int
) -> tuple[list[Example], list[str]]:
    """``(examples with round(fraction · N) answers replaced, ids of the corrupted)``.

    Raises:
        ValueError: for an example with neither options nor a numeric answer.
    """
    rng = np.random.default_rng([seed, 7])
    chosen = set(rng.choice(len(examples), size=round(fraction * len(examples)), replace=False))
    out, bad = [], []
    for i, e in enumerate(examples):
        if i in chosen:
            if e.choices:
                answer = str(rng.choice([c for c in e.choices if c != e.answer]))
            else:
                answer = str(int(e.answer or "") + int(rng.integers(1, 10)))
            out.append(replace(e, answer=answer))
            bad.append(e.id)
        else:
            out.append(e)
    return out, bad
