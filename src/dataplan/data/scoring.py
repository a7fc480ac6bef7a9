"""Answer normalisation and exact match, as in the CoS-Low authors' evaluation.

The model's output is cleaned before matching: first line only, text after ``####`` when
present (numeric answers), surrounding whitespace and a trailing full stop removed, lower-cased.
"""

from __future__ import annotations

from collections.abc import Sequence


def normalise_answer(text: str) -> str:
    lines = text.strip().splitlines()
    first = lines[0] if lines else ""
    if "####" in first:
        first = first.rsplit("####", 1)[1]
    return first.strip().rstrip(".").strip().lower()


def exact_match(prediction: str, reference: str) -> bool:
    return normalise_answer(prediction) == normalise_answer(reference)


def exact_match_accuracy(predictions: Sequence[str], references: Sequence[str]) -> float:
    if len(predictions) != len(references) or not predictions:
        raise ValueError("need equally many (and at least one) predictions and references")
    return sum(exact_match(p, r) for p, r in zip(predictions, references, strict=True)) / len(
        predictions
    )
