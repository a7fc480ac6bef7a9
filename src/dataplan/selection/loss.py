"""``loss`` — the frozen proxy's mean answer-token loss given the prompt (docs/methods.md §5.4)::

score_i = ℓ(answer_i | prompt_i)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dataplan.selection.base import PoolStatistics, Scored, SelectionMethod

if TYPE_CHECKING:
    from dataplan.workflows.select_config import SelectConfig


class Loss(SelectionMethod):
    name = "loss"
    proxy_losses = ("loss",)

    def score(self, cfg: SelectConfig, stats: PoolStatistics) -> Scored:
        return stats.columns["loss"], dict(stats.columns), []


__all__ = ["Loss"]
