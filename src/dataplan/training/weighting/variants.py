"""Two baselines built on ICA scores: one demonstration, and hard filtering.

- ``one-shot``: ICA with a single demonstration (k = 1; the paper found k = 3 better);
- ``filter``: keep the top ``keep`` fraction of the pool by ICA score with weight 1, drop the rest
  (weight 0) — the hard selection the paper's reweighting beat.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, ClassVar

from dataplan.data.loading import Example
from dataplan.errors import ConfigError
from dataplan.training.weighting.ica import ICA, ICASettings

if TYPE_CHECKING:
    from dataplan.training.weights import WeightFunction


class OneShot(ICA):
    """ICA with one demonstration per example."""

    name: ClassVar[str] = "one-shot"

    def __init__(
        self,
        holdout: Sequence[Example],
        settings: ICASettings | None = None,
        progress: bool = False,
    ):
        super().__init__(holdout, replace(settings or ICASettings(), k=1), progress)


class Filter(ICA):
    """The top ``keep`` fraction by ICA score, uniformly weighted; the rest left out.

    Args:
        keep: the fraction kept, in (0, 1].
    """

    name: ClassVar[str] = "filter"

    def __init__(
        self,
        holdout: Sequence[Example],
        settings: ICASettings | None = None,
        keep: float = 0.75,
        progress: bool = False,
    ):
        if not 0.0 < keep <= 1.0:
            raise ConfigError(f"--keep must be in (0, 1], got {keep}")
        super().__init__(holdout, settings, progress)
        self.keep = keep

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "keep": self.keep}

    def _weight_function(
        self, examples: Sequence[Any], formatter: Any, demonstrations: Any
    ) -> WeightFunction:
        from dataplan.maths.weights import top_fraction_weights
        from dataplan.training.weighting.ica import ica_weight_function

        return ica_weight_function(
            examples,
            self.holdout,
            formatter,
            self.ica,
            demonstrations,
            to_weights=lambda scores: top_fraction_weights(scores, self.keep),
            progress=self.progress,
        )
