"""``random`` — a seeded uniform draw, no model (docs/methods.md §5.4)::

score_i ~ U[0, 1), drawn by ``numpy.random.default_rng([seed, 5])``
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from dataplan.selection.base import PoolStatistics, Scored, SelectionMethod

if TYPE_CHECKING:
    from dataplan.workflows.select_config import SelectConfig


class Random(SelectionMethod):
    name = "random"
    needs_model = False

    def score(self, cfg: SelectConfig, stats: PoolStatistics) -> Scored:
        return np.random.default_rng([cfg.seed, 5]).random(len(stats.pool)), {}, []


__all__ = ["Random"]
