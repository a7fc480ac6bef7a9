"""``gradsim`` — LESS-style similarity to a target set (docs/methods.md §5.4)::

    score_i = mean_a cos(g_i^a, ḡ_T^a)

over every adapter a (members × checkpoints), ḡ_T^a the mean gradient of the ``--target FILE``
examples under adapter a [our choice: plain gradients, no Adam preconditioning].
"""

from __future__ import annotations

from dataplan.maths import selection as sel
from dataplan.selection.base import EnsembleLayout, PoolStatistics, Scored, SelectionMethod


class GradSim(SelectionMethod):
    name = "gradsim"
    needs_ensemble = True
    needs_target = True

    def adapters(self, cfg, layout: EnsembleLayout) -> list[str]:
        return layout.every

    def score(self, cfg, stats: PoolStatistics) -> Scored:
        cos = sel.cosine_scores(stats.inner, stats.norms(), stats.target_norm)
        return cos.mean(axis=0), dict(stats.columns), []


__all__ = ["GradSim"]
