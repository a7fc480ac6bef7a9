"""``dataplan auc``: the data-efficiency AUC of a result file, with the curve it was computed on."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dataplan.errors import InputError
from dataplan.maths.auc import clean_curve, data_efficiency_auc, metric_chain, select_metric
from dataplan.options import cli


def parse_budgets(text: str) -> tuple[int, ...]:
    """``"0,50,…,5000"`` → the positive grid ``(50, …, 5000)``; 0 is always the zero-shot point."""
    try:
        values = sorted({int(v) for v in text.split(",") if v.strip()})
    except ValueError:
        raise InputError(
            f"budgets must be comma-separated integers, got {text!r}", field="budgets"
        ) from None
    grid = tuple(v for v in values if v > 0)
    if any(v < 0 for v in values) or not grid:
        raise InputError(
            "budgets must be non-negative with at least one positive value", field="budgets"
        )
    return grid


def read_results(path: Path) -> dict[str, dict[str, float]]:
    """A result file ``{"<n>": {"<metric>": value}}``, validated field by field."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError("file not found", path=path) from None
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"cannot read ({err})", path=path) from None
    except json.JSONDecodeError as err:
        raise InputError(f"malformed JSON ({err.msg})", path=path, line=err.lineno) from None
    if not isinstance(data, dict) or not data:
        raise InputError('expected an object {"<n>": {"<metric>": value}}', path=path)
    for n, metrics in data.items():
        try:
            if int(n) < 0:
                raise ValueError
        except ValueError:
            raise InputError(
                "budget keys must be non-negative integers", path=path, field=n
            ) from None
        if not isinstance(metrics, dict):
            raise InputError("expected an object of metric values", path=path, field=n)
        for name, value in metrics.items():
            if value is not None and (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not math.isfinite(value)
            ):
                raise InputError(
                    f"expected a number, got {value!r}", path=path, field=f"{n}.{name}"
                )
    return data


def auc_report(
    path: str | Path,
    *,
    metric: str | None = None,
    human_score: float | None = None,
    budgets: str = "0,50,100,200,500,1000,2500,5000",
) -> dict[str, Any]:
    """AUC, metric used, cleaned curve, zero-shot value and ceiling of a result file."""
    grid = parse_budgets(budgets)
    results = read_results(Path(path))
    try:
        curve = select_metric(results, metric)
    except KeyError as err:
        raise InputError(str(err.args[0]), path=path, field=metric) from None
    chosen = metric_chain({k for v in results.values() for k in v}, metric)[0]
    try:
        value = data_efficiency_auc(curve, human_score=human_score, grid=grid)
    except ValueError as err:
        raise InputError(str(err), path=path) from None
    ns, values = clean_curve(curve, grid)
    lo, hi = min(grid), max(grid)
    best = max(v for n, v in curve.items() if n == 0 or lo <= n <= hi)
    return {
        "file": str(path),
        "auc": value,
        "metric": chosen,
        "n_max": hi,
        "human_score": human_score,
        "zero_shot": float(values.min()),
        "ceiling": best if human_score is None else max(human_score, best),
        "curve_n": [int(n) for n in ns],
        "curve": [float(v) for v in values],
    }


@dataclass(kw_only=True)
class AucConfig:
    """Settings of ``dataplan auc``.

    Attributes:
        results: Result file in the paper's format: {"<n>": {"<metric>": value}}.
        metric: Metric key (default: f1 if present, else accuracy / exact_string_match_accuracy).
        human_score: Human-level score H (ceiling).
        budgets: Budget grid; n_max is the largest. 0 (zero-shot) is always included.
    """

    results: str = field(metadata=cli(argument=True))
    metric: str | None = None
    human_score: float | None = None
    budgets: str = "0,50,100,200,500,1000,2500,5000"
