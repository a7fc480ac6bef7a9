"""``loss`` — the frozen proxy's mean answer-token loss given the prompt (docs/methods.md §5.4)::

score_i = ℓ(answer_i | prompt_i)
"""

from __future__ import annotations

from dataplan.selection.base import PoolStatistics, Scored, SelectionMethod


class Loss(SelectionMethod):
    name = "loss"
    proxy_losses = ("loss",)

    def score(self, cfg, stats: PoolStatistics) -> Scored:
        return stats.columns["loss"], dict(stats.columns), []


__all__ = ["Loss"]
