"""The registry of weighting schemes: how per-example training weights are chosen.

A scheme gives the first weights of a training set (None = unweighted) and, optionally, a
:data:`~dataplan.training.weights.WeightFunction` that recomputes them from the current model
during training. ``uniform`` (every example counts once; the unweighted loss) is the only scheme
so far; ICA reweighting (arXiv 2510.14459) comes next. Adding one is a subclass of
:class:`Weighting` and one line in ``WEIGHTINGS``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch

from dataplan.errors import ConfigError
from dataplan.training.weights import WeightFunction


class Weighting(ABC):
    """A weighting scheme."""

    name: ClassVar[str]

    def settings(self) -> dict[str, Any]:
        """The scheme's options, recorded with results."""
        return {}

    @abstractmethod
    def initial(
        self, model: torch.nn.Module, examples: Sequence[Any], formatter: Any
    ) -> np.ndarray | None:
        """(N,) weights before training, or None for the unweighted loss."""

    def refresh_function(self, examples: Sequence[Any], formatter: Any) -> WeightFunction | None:
        """A function recomputing the weights from the current model (None: fixed weights)."""
        return None


class Uniform(Weighting):
    """Every example counts once: the objective's unweighted loss."""

    name: ClassVar[str] = "uniform"

    def initial(
        self, model: torch.nn.Module, examples: Sequence[Any], formatter: Any
    ) -> np.ndarray | None:
        return None


WEIGHTINGS: dict[str, type[Weighting]] = {
    Uniform.name: Uniform,
}


def get_weighting(name: str, **options: Any) -> Weighting:
    """A weighting scheme by name (options go to its constructor)."""
    if name not in WEIGHTINGS:
        raise ConfigError(f"unknown weighting {name!r}; choose from {', '.join(WEIGHTINGS)}")
    return WEIGHTINGS[name](**options)
