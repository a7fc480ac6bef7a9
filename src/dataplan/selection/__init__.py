"""The selection methods of ``dataplan select``, by name (docs/methods.md §5).

Each method is one module with one :class:`~dataplan.selection.base.SelectionMethod` subclass,
registered by one line in :data:`METHODS`; what its scores need (a model, a target set, proxy
losses, the ensemble's gradient statistics) it declares, and the shared passes of
:mod:`dataplan.workflows.select_scoring` compute and cache them.
"""

from __future__ import annotations

from dataplan.selection.base import EnsembleLayout, PoolStatistics, Scored, SelectionMethod
from dataplan.selection.gradnorm import GradNorm
from dataplan.selection.gradsim import GradSim
from dataplan.selection.gsnr import GSNR
from dataplan.selection.ifd import IFD
from dataplan.selection.loss import Loss
from dataplan.selection.random import Random

METHODS: dict[str, type[SelectionMethod]] = {
    "gsnr": GSNR,
    "gradnorm": GradNorm,
    "gradsim": GradSim,
    "ifd": IFD,
    "loss": Loss,
    "random": Random,
}


def get_method(name: str) -> SelectionMethod:
    """The registered method ``name`` (KeyError if unknown)."""
    return METHODS[name]()


__all__ = [
    "METHODS",
    "EnsembleLayout",
    "PoolStatistics",
    "Scored",
    "SelectionMethod",
    "get_method",
]
