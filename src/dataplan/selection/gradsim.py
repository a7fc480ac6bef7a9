"""``gradsim`` — LESS-style similarity to a target set (docs/methods.md §5.4)::

    score_i = mean_a cos(g_i^a, ḡ_T^a)

over every adapter a (members × checkpoints), ḡ_T^a the mean gradient of the ``--target FILE``
examples under adapter a [our choice: plain gradients, no Adam preconditioning].
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dataplan.maths import selection as sel
from dataplan.selection.base import EnsembleLayout, PoolStatistics, Scored, SelectionMethod

if TYPE_CHECKING:
    from dataplan.workflows.select_config import SelectConfig


class GradSim(SelectionMethod):
    name = "gradsim"
    needs_ensemble = True
    needs_target = True

    def adapters(self, cfg: SelectConfig, layout: EnsembleLayout) -> list[str]:
        return layout.every

    def score(self, cfg: SelectConfig, stats: PoolStatistics) -> Scored:
        # needs_target: the gradient pass computed the inner products and the target's norms.
        assert stats.inner is not None and stats.target_norm is not None
        cos = sel.cosine_scores(stats.inner, stats.norms(), stats.target_norm)
        return cos.mean(axis=0), dict(stats.columns), []


__all__ = ["GradSim"]
