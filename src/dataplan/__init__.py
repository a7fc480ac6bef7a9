"""dataplan: plan the data of a language-model fine-tune.

The package is layered:

- :mod:`dataplan.maths` — pure functions of arrays and tensors (AUC, cosines, forecasts);
- :mod:`dataplan.data` and :mod:`dataplan.models` — reading task files, formatting examples into
  tokens, loading models and adapters;
- :mod:`dataplan.compute` — model computations (confidence over a pool, per-example gradients);
- :mod:`dataplan.workflows` — orchestration with run folders, caching and resumption;
- :mod:`dataplan.cli` — the ``dataplan`` command.

The public Python API is re-exported here lazily so that ``import dataplan`` stays cheap.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "data_efficiency_auc": "dataplan.maths.auc",
    "auc_from_results": "dataplan.maths.auc",
    "Calibration": "dataplan.maths.forecast",
    "forecast": "dataplan.maths.forecast",
    "budget_for_target": "dataplan.maths.forecast",
    "get_calibration": "dataplan.calibrations",
    "list_calibrations": "dataplan.calibrations",
    "load_examples": "dataplan.data.loading",
    "load_model": "dataplan.models.loading",
    "greedy_answers": "dataplan.compute.generation",
    "evaluate": "dataplan.evaluation",
    "headline_metric": "dataplan.evaluation",
    "train": "dataplan.training",
    "TrainSettings": "dataplan.training",
    "ResultStore": "dataplan.store",
    "gradient_gram": "dataplan.compute.gradients",
    "coslow": "dataplan.workflows.coslow",
    "estimate": "dataplan.workflows.estimate",
    "EstimateConfig": "dataplan.workflows.estimate",
    "measure_curve": "dataplan.workflows.curve",
    "CurveConfig": "dataplan.workflows.curve",
    "calibrate": "dataplan.workflows.calibrate",
    "CalibrateConfig": "dataplan.workflows.calibrate",
    "load_task": "dataplan.tasks.registry",
    "ScalingLaw": "dataplan.maths.scaling",
    "select": "dataplan.workflows.select",
    "SelectConfig": "dataplan.workflows.select",
    "gradient_stats": "dataplan.compute.example_stats",
    "compare_forms": "dataplan.maths.scaling",
}

__all__ = ["__version__", *sorted(_LAZY)]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'dataplan' has no attribute {name!r}")
