"""What a weighting scheme is (the protocol of the weighting registry), and ``uniform``.

A scheme gives the first weights of a training set (None = unweighted) and, optionally, a
:data:`~dataplan.training.weights.WeightFunction` that recomputes them from the current model
during training. The registry (``WEIGHTINGS`` in :mod:`dataplan.training.weighting`) lists the
schemes; adding one is a subclass of :class:`Weighting` in a module and one line there.
"""

from __future__ import annotations

from abc import ABC
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

if TYPE_CHECKING:
    import torch

    from dataplan.data.formatting import PromptFormatter
    from dataplan.training.weights import WeightFunction


class Weighting(ABC):
    """A weighting scheme."""

    name: ClassVar[str]

    def settings(self) -> dict[str, Any]:
        """The scheme's options, recorded with results."""
        return {}

    def initial(
        self, model: torch.nn.Module, examples: Sequence[Any], formatter: PromptFormatter
    ) -> np.ndarray | None:
        """(N,) weights before training, or None for the unweighted loss: by default the refresh
        function's at step 0 (None for a scheme without one)."""
        fn = self.refresh_function(model, examples, formatter)
        return None if fn is None else fn(model, 0)

    def refresh_function(
        self, model: torch.nn.Module, examples: Sequence[Any], formatter: PromptFormatter
    ) -> WeightFunction | None:
        """A function recomputing the weights from the current model (None: fixed weights).

        ``model`` is the model *before training*: whatever the scheme fixes once (ICA's
        demonstrations, RHO's reference losses) is computed with it here, so that a run resumed
        mid-training recomputes later weights exactly as an uninterrupted run does.
        """
        return None


class Uniform(Weighting):
    """Every example counts once: the objective's unweighted loss."""

    name: ClassVar[str] = "uniform"  # no refresh function: no weights
