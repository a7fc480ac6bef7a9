"""``gradnorm`` — the ensemble-mean late gradient norm (docs/methods.md §5.4)::

    score_i = mean_m ‖g_i,late^m‖

over the M members' adapters at the last checkpoint (the shared ``grad_norm_late`` column).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dataplan.selection.base import EnsembleLayout, PoolStatistics, Scored, SelectionMethod

if TYPE_CHECKING:
    from dataplan.workflows.select_config import SelectConfig


class GradNorm(SelectionMethod):
    name = "gradnorm"
    needs_ensemble = True

    def adapters(self, cfg: SelectConfig, layout: EnsembleLayout) -> list[str]:
        return layout.late

    def score(self, cfg: SelectConfig, stats: PoolStatistics) -> Scored:
        return stats.columns["grad_norm_late"], dict(stats.columns), []


__all__ = ["GradNorm"]
