"""The registry of weighting schemes: how per-example training weights are chosen.

A scheme gives the first weights of a training set (None = unweighted) and, optionally, a
function recomputing them from the current model during training. ``uniform`` (every example
counts once: the unweighted loss), ``ica`` (in-context approximation reweighting, arXiv
2510.14459) and its baselines ``one-shot`` (k = 1), ``rho`` (RHO-LOSS with a holdout-trained
adapter) and ``filter`` (the top fraction by ICA score, uniformly weighted). Adding one is a module with a subclass of :class:`Weighting` and one line in
``WEIGHTINGS`` (docs/extending.md).
"""

from __future__ import annotations

from typing import Any

from dataplan.errors import ConfigError
from dataplan.training.weighting.base import Uniform, Weighting
from dataplan.training.weighting.ica import ICA, ICASettings
from dataplan.training.weighting.rho import RhoLoss
from dataplan.training.weighting.variants import Filter, OneShot

WEIGHTINGS: dict[str, type[Weighting]] = {
    Uniform.name: Uniform,
    ICA.name: ICA,
    OneShot.name: OneShot,
    RhoLoss.name: RhoLoss,
    Filter.name: Filter,
}


def get_weighting(name: str, **options: Any) -> Weighting:
    """A weighting scheme by name (options go to its constructor)."""
    if name not in WEIGHTINGS:
        raise ConfigError(f"unknown weighting {name!r}; choose from {', '.join(WEIGHTINGS)}")
    return WEIGHTINGS[name](**options)


__all__ = [
    "ICA",
    "WEIGHTINGS",
    "Filter",
    "ICASettings",
    "OneShot",
    "RhoLoss",
    "Uniform",
    "Weighting",
    "get_weighting",
]
