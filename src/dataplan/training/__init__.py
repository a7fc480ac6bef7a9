"""The training core: one :func:`train` for every fine-tune, objectives from a registry,
per-example weights with refreshes, and weighting schemes.

    from dataplan.training import TrainSettings, train
    result = train(model, examples, formatter, TrainSettings(max_steps=50), weights=w)
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what the lazy names are, for type checkers
    from dataplan.training.core import TrainResult as TrainResult
    from dataplan.training.core import train as train
    from dataplan.training.objectives import OBJECTIVES as OBJECTIVES
    from dataplan.training.objectives import Objective as Objective
    from dataplan.training.objectives import get_objective as get_objective
    from dataplan.training.settings import TrainSettings as TrainSettings
    from dataplan.training.weights import Refresh as Refresh
    from dataplan.training.weights import WeightTable as WeightTable

# Imported on first use: the CLI reads TrainSettings (options) without loading torch.
_LAZY = {
    "TrainResult": "dataplan.training.core",
    "train": "dataplan.training.core",
    "OBJECTIVES": "dataplan.training.objectives",
    "Objective": "dataplan.training.objectives",
    "get_objective": "dataplan.training.objectives",
    "TrainSettings": "dataplan.training.settings",
    "Refresh": "dataplan.training.weights",
    "WeightTable": "dataplan.training.weights",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'dataplan.training' has no attribute {name!r}")
