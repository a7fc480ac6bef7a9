"""``ifd`` — Superfiltering's instruction-following difficulty (arXiv 2402.00530; docs/methods.md
§5.4), from the frozen proxy's mean answer-token losses::

    IFD_i = PPL(answer_i | prompt_i) / PPL(answer_i) = exp(ℓ(answer_i | prompt_i) − ℓ(answer_i))

The unconditioned context is the prompt template around an empty prompt (BOS, else EOS, without
a template) [our choice]. The highest IFD below 1 is kept first; IFD ≥ 1 (the prompt does not
help) ranks after all others, nearest 1 first.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from dataplan.maths import selection as sel
from dataplan.selection.base import PoolStatistics, Scored, SelectionMethod

if TYPE_CHECKING:
    from dataplan.workflows.select_config import SelectConfig


class IFD(SelectionMethod):
    name = "ifd"
    proxy_losses = ("loss", "loss_unconditioned")

    def score(self, cfg: SelectConfig, stats: PoolStatistics) -> Scored:
        scores = sel.ifd(stats.columns["loss"], stats.columns["loss_unconditioned"])
        return scores, dict(stats.columns), []

    def demote(self, scores: np.ndarray) -> tuple[np.ndarray, str] | None:
        # Superfiltering drops IFD >= 1; when k needs some of them, the closest to 1 come first.
        demoted = scores >= 1.0
        return demoted, f"{int(demoted.sum())} examples with IFD >= 1 ranked last (Superfiltering)"


__all__ = ["IFD"]
