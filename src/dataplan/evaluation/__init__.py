"""The evaluation core: :func:`evaluate` (greedy answers, option log-likelihood, the metrics)
and :func:`headline_metric` (which metric measures a task)."""

from dataplan.evaluation.core import EvalSettings, evaluate
from dataplan.evaluation.metrics import METRICS, OPTION_KINDS, headline_metric

__all__ = ["METRICS", "OPTION_KINDS", "EvalSettings", "evaluate", "headline_metric"]
