"""The metrics of an evaluation, and the rule naming a task's headline metric.

Answer normalisation, exact match and token F1 follow the CoS-Low authors' evaluation.

The model's output is cleaned before matching: first line only, text after ``####`` when
present (numeric answers), surrounding whitespace and a trailing full stop removed, lower-cased.
Token F1 (SQuAD-style) compares the whitespace tokens of the cleaned texts with punctuation and
the articles a/an/the removed.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


def normalise_answer(text: str) -> str:
    lines = text.strip().splitlines()
    first = lines[0] if lines else ""
    if "####" in first:
        first = first.rsplit("####", 1)[1]
    return first.strip().rstrip(".").strip().lower()


def exact_match(prediction: str, reference: str) -> bool:
    return normalise_answer(prediction) == normalise_answer(reference)


def _f1_tokens(text: str) -> list[str]:
    return _ARTICLES.sub(" ", normalise_answer(text).translate(_PUNCT)).split()


def token_f1(prediction: str, reference: str) -> float:
    """Harmonic mean of token precision and recall; 1.0 when both are empty."""
    pred, ref = _f1_tokens(prediction), _f1_tokens(reference)
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def _check(predictions: Sequence[str], references: Sequence[str]) -> None:
    if len(predictions) != len(references) or not predictions:
        raise ValueError("need equally many (and at least one) predictions and references")


def exact_match_accuracy(predictions: Sequence[str], references: Sequence[str]) -> float:
    _check(predictions, references)
    return sum(exact_match(p, r) for p, r in zip(predictions, references, strict=True)) / len(
        predictions
    )


def mean_token_f1(predictions: Sequence[str], references: Sequence[str]) -> float:
    _check(predictions, references)
    return sum(token_f1(p, r) for p, r in zip(predictions, references, strict=True)) / len(
        predictions
    )


def majority_share(predictions: Sequence[str]) -> float:
    """Share of the most common (cleaned) prediction: 1.0 means the model collapsed to one answer."""
    if not predictions:
        raise ValueError("no predictions")
    counts = Counter(normalise_answer(p) for p in predictions)
    return counts.most_common(1)[0][1] / len(predictions)


def majority_baseline(
    train_answers: Sequence[str], test_answers: Sequence[str]
) -> tuple[str, float]:
    """The training set's most common answer and its exact-match accuracy on the test answers."""
    if not train_answers or not test_answers:
        raise ValueError("need training and test answers")
    label = Counter(normalise_answer(a) for a in train_answers).most_common(1)[0][0]
    return label, sum(normalise_answer(a) == label for a in test_answers) / len(test_answers)


METRICS = ("exact_match", "token_f1", "loglik_accuracy")
OPTION_KINDS = ("classification", "multiple_choice")


def headline_metric(available: Mapping[str, Any], task_metric: str, kind: str | None) -> str:
    """The metric that measures a task [our choice, docs/methods.md §4]: option log-likelihood
    accuracy for classification and multiple choice (exact match at n = 0 measures the answer
    format, not the task), else the task's own.

    Arithmetic keeps exact match even when its file lists options: the right option's
    likelihood saturates after a few examples while the generated answer keeps improving.
    ``kind`` None (a data file) counts as options when a log-likelihood value exists.

    Args:
        available: metric name → value (or AUC); a None value counts as missing.
        task_metric: the task's own metric (``exact_match`` or ``token_f1``).
        kind: the suite task's kind, or None for a data file.
    """
    has_loglik = available.get("loglik_accuracy") is not None
    if has_loglik and (kind is None or kind in OPTION_KINDS):
        return "loglik_accuracy"
    return task_metric
