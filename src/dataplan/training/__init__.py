"""The training core: one :func:`train` for every fine-tune, objectives from a registry,
per-example weights with refreshes, and weighting schemes.

    from dataplan.training import TrainSettings, train
    result = train(model, examples, formatter, TrainSettings(max_steps=50), weights=w)
"""

from dataplan.training.core import TrainResult, train
from dataplan.training.objectives import OBJECTIVES, Objective, get_objective
from dataplan.training.settings import TrainSettings
from dataplan.training.weights import Refresh, WeightTable

__all__ = [
    "OBJECTIVES",
    "Objective",
    "Refresh",
    "TrainResult",
    "TrainSettings",
    "WeightTable",
    "get_objective",
    "train",
]
