"""Dataset-volume scaling laws of fine-tuned performance (arXiv 2505.06150, docs/methods.md §7).

Forms (performance P, higher is better; N examples, L̄ mean tokens per example, V = N·L̄ the
dataset volume, T tokens seen in training, M model parameters)::

    volume      P = A · V^β · M^γ + E
    tokens      P = A · T^β · M^γ + E
    examples    P = A · N^β · M^γ + E
    chinchilla  P = E − A · N^(−α) − B · L̄^(−β)        (additive, Chinchilla-style)

Modules:

- :mod:`.forms`: the forms, their parameters and equations, the finite reparametrisation they
  are fitted in, and the checks of the runs' feature columns.
- :mod:`.fitting`: one form's fit (exponent-grid starts, robust least squares);
- :mod:`.estimator`: :class:`ScalingLaw`, the robust estimator (grid starts, robust fits,
  bootstrap intervals, held-out refits, prediction, saving and loading).
- :mod:`.validation`: :func:`compare_forms`, the forms ranked by held-out error.

Everything public is re-exported here (``from dataplan.maths.scaling import ScalingLaw``).
"""

from __future__ import annotations

from dataplan.maths.scaling.estimator import ScalingLaw
from dataplan.maths.scaling.fitting import MAX_EVALUATIONS, FitResult, fit_params
from dataplan.maths.scaling.forms import (
    COLUMNS,
    EXPONENT_BOUND,
    FORMS,
    LEVEL,
    MIN_DISTINCT,
    MIN_LOG_SPREAD,
    LawForm,
    ScalingInputError,
    identifiability_problem,
    runs_features,
)
from dataplan.maths.scaling.validation import compare_forms

__all__ = [
    "COLUMNS",
    "EXPONENT_BOUND",
    "FORMS",
    "LEVEL",
    "MAX_EVALUATIONS",
    "MIN_DISTINCT",
    "MIN_LOG_SPREAD",
    "FitResult",
    "LawForm",
    "ScalingInputError",
    "ScalingLaw",
    "compare_forms",
    "fit_params",
    "identifiability_problem",
    "runs_features",
]
