"""The files of ``dataplan scaling``: the runs file ``fit`` reads and the law file it writes.

:func:`read_runs` reads a runs file (CSV or Parquet, one row per fine-tuning run) into columns:
numbers as float arrays, labels (``strategy``, ``task``, ``metric``) as strings. :func:`read_law`
reads the JSON law written by ``dataplan scaling fit --out`` and checks every field ``plan`` and
:meth:`~dataplan.maths.scaling.ScalingLaw.from_dict` read, with its type and range.

A bad runs file raises :class:`~dataplan.errors.InputError` naming the file, the line (CSV) or
record number (Parquet) and the column; a bad law file raises
:class:`~dataplan.errors.ConfigError` naming the file and the field (a dotted path such as
``strategies.random.n``).
"""

from __future__ import annotations

import inspect
import itertools
import numbers
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dataplan.data.tables import TableSpec, read_table
from dataplan.errors import ConfigError, InputError, first_line
from dataplan.maths.scaling import COLUMNS, FORMS, ScalingInputError, ScalingLaw
from dataplan.parsing import decode_json, is_number, read_utf8

TEXT_COLUMNS = ("strategy", "task", "metric")
# Must hold numbers (a non-number is an input error); other columns may hold labels.
NUMERIC_COLUMNS = (
    *COLUMNS,
    "tokens_seen",
    "pool_size",
    "epochs",
    "seed",
    "exact_match",
    "token_f1",
    "loglik_accuracy",
)


RUNS = TableSpec(
    required=COLUMNS,
    numeric=NUMERIC_COLUMNS,
    text=TEXT_COLUMNS,
    positive=tuple(c for c in COLUMNS if c != "performance"),
    what="runs",
    item="run",
)


def read_runs(path: str | Path) -> dict[str, np.ndarray | list]:
    """Columns of a runs file: the numeric ones (a non-number there is an input error) as float
    arrays, labels such as ``strategy``, ``task`` and ``metric`` as strings.

    Raises:
        InputError: naming the file, the line (CSV) or record number (Parquet) and the column of
            the first bad value; ``n_examples``, ``mean_tokens``, ``model_params`` and
            ``performance`` must be finite numbers, the first three positive.
    """
    return read_table(path, RUNS)


NOT_A_LAW = "not a law file written by `dataplan scaling fit --out`"
MOST_EXAMPLES = 10**15  # beyond, the planning grid's integers would overflow
_SETTINGS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "loss": (lambda v: v in ("soft_l1", "huber", "linear", "cauchy", "arctan"), "a loss name"),
    "f_scale": (lambda v: v is None or _positive(v), "null or a positive number"),
    "n_starts": (lambda v: _integer(v, 1), "a positive integer"),
    "n_bootstrap": (lambda v: _integer(v, 0), "a non-negative integer"),
    "level": (lambda v: is_number(v) and 0 < v < 1, "a number in (0, 1)"),
    "holdout": (lambda v: isinstance(v, str), "a string"),
    "seed": (lambda v: _integer(v, 0), "a non-negative integer"),
    "strategy_effects": (lambda v: isinstance(v, bool), "true or false"),
}


class _BadLaw(Exception):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(f'field "{field}": {message}')


def _positive(v: Any) -> bool:
    return is_number(v, finite=True) and v > 0


def _integer(v: Any, low: int) -> bool:
    return is_number(v) and isinstance(v, numbers.Integral) and int(v) >= low


def _get(d: Mapping[str, Any], key: str, where: str = "") -> Any:
    if key not in d:
        raise _BadLaw(where + key, "missing")
    return d[key]


def _expect(ok: bool, field: str, what: str, value: Any) -> None:
    if not ok:
        shown = repr(value) if len(repr(value)) <= 40 else type(value).__name__
        raise _BadLaw(field, f"expected {what}, got {shown}")


def _object(v: Any, field: str) -> Mapping[str, Any]:
    _expect(isinstance(v, Mapping), field, "an object", v)
    return v


def _list_of(v: Any, field: str, ok: Callable[[Any], bool], what: str) -> Sequence[Any]:
    _expect(isinstance(v, (list, tuple)), field, f"a list of {what}", v)
    for i, x in enumerate(v):
        _expect(ok(x), f"{field}[{i}]", what, x)
    return v


def _check_law(d: Any) -> None:
    """Every field :func:`plan` and :meth:`ScalingLaw.from_dict` read, with its type and range.

    Raises:
        _BadLaw: naming the first malformed field (a dotted path such as ``strategies.random.n``).
    """
    if not isinstance(d, Mapping):
        raise _BadLaw("(top level)", f"expected an object, got {type(d).__name__}")
    form = _get(d, "form")
    _expect(isinstance(form, str) and form in FORMS, "form", f"one of {', '.join(FORMS)}", form)
    settings = _object(_get(d, "settings"), "settings")
    known = inspect.signature(ScalingLaw).parameters
    for key, value in settings.items():
        if key not in known or key == "form":
            raise _BadLaw(f"settings.{key}", "unknown setting")
        if key in _SETTINGS:
            ok, what = _SETTINGS[key]
            _expect(ok(value), f"settings.{key}", what, value)
    for key, value in _object(_get(d, "params"), "params").items():
        _expect(is_number(value), f"params.{key}", "a number", value)
    for key, value in _object(_get(d, "intervals"), "intervals").items():
        pair = isinstance(value, (list, tuple)) and len(value) == 2 and all(map(is_number, value))
        _expect(value is None or pair, f"intervals.{key}", "null or two numbers", value)
    _object(_get(d, "fixed"), "fixed")
    _object(_get(d, "heldout"), "heldout")
    _list_of(_get(d, "notes"), "notes", lambda v: isinstance(v, str), "strings")
    _expect(_integer(_get(d, "n_runs"), 0), "n_runs", "a non-negative integer", d["n_runs"])
    converged = _get(d, "converged")
    _expect(isinstance(converged, (bool, np.bool_)), "converged", "true or false", converged)
    _expect(_positive(_get(d, "f_scale")), "f_scale", "a positive number", d["f_scale"])
    refs = _object(_get(d, "refs"), "refs")
    features = FORMS[form].features
    for key in features:
        _expect(_positive(_get(refs, key, "refs.")), f"refs.{key}", "a positive number", refs[key])
    extra = sorted(set(refs) - set(features))
    if extra:
        raise _BadLaw(f"refs.{extra[0]}", f"not a feature of the {form} form")
    for key, value in _object(_get(d, "ranges"), "ranges").items():
        pair = (
            isinstance(value, (list, tuple))
            and len(value) == 2
            and all(is_number(x, finite=True) for x in value)
            and value[0] <= value[1]
        )
        _expect(pair, f"ranges.{key}", "[low, high]", value)
    levels = d.get("strategy_levels", [])
    _list_of(levels, "strategy_levels", lambda v: isinstance(v, str), "strategies")
    if bool(settings.get("strategy_effects", False)) != bool(levels):
        raise _BadLaw(
            "strategy_levels", "must list the strategies exactly when strategy effects are fitted"
        )
    n_params = len(FORMS[form].params) + max(0, len(levels) - 1)
    finite = lambda v: is_number(v, finite=True)  # noqa: E731
    p = _list_of(_get(d, "internal_params"), "internal_params", finite, "finite numbers")
    if len(p) != n_params:
        raise _BadLaw("internal_params", f"{len(p)} values; the law has {n_params} parameters")
    boots = _get(d, "bootstrap_internal_params")
    _expect(isinstance(boots, (list, tuple)), "bootstrap_internal_params", "a list of lists", boots)
    for i, b in enumerate(boots):
        _list_of(b, f"bootstrap_internal_params[{i}]", finite, "finite numbers")
        if len(b) != n_params:
            raise _BadLaw(f"bootstrap_internal_params[{i}]", f"{len(b)} values, not {n_params}")
    m = _get(d, "model_params")
    _expect(_positive(m), "model_params", "a positive number", m)
    strategies = _object(_get(d, "strategies"), "strategies")
    if not strategies:
        raise _BadLaw("strategies", "no length profile")
    in_range = lambda v: is_number(v, finite=True) and 1 <= v <= MOST_EXAMPLES  # noqa: E731
    for name, prof in strategies.items():
        where = f"strategies.{name}"
        prof = _object(prof, where)
        n = _list_of(_get(prof, "n", where + "."), where + ".n", in_range, "numbers of examples")
        lengths = _list_of(
            _get(prof, "mean_tokens", where + "."),
            where + ".mean_tokens",
            _positive,
            "positive numbers",
        )
        if not n or len(n) != len(lengths):
            raise _BadLaw(where, "the length profile is empty or uneven")
        if any(a >= b for a, b in itertools.pairwise(n)):
            raise _BadLaw(where + ".n", "not increasing")
    if levels and not set(strategies) & set(levels):
        raise _BadLaw("strategies", "no profile of the law's strategies")
    pool = d.get("pool_size")
    _expect(
        pool is None or (in_range(pool) and float(pool).is_integer()),
        "pool_size",
        f"null or a number of examples up to {MOST_EXAMPLES:.0e}",
        pool,
    )
    rows = d.get("comparison", [])
    _expect(isinstance(rows, (list, tuple)), "comparison", "a list", rows)
    for i, row in enumerate(rows):
        row = _object(row, f"comparison[{i}]")
        _expect(
            isinstance(_get(row, "form", f"comparison[{i}]."), str),
            f"comparison[{i}].form",
            "a string",
            row["form"],
        )
        rmse = row.get("heldout_rmse")
        _expect(rmse is None or is_number(rmse), f"comparison[{i}].heldout_rmse", "a number", rmse)


def _law(law_dict: dict[str, Any]) -> ScalingLaw:
    try:
        _check_law(law_dict)
        return ScalingLaw.from_dict(law_dict)
    except (_BadLaw, ScalingInputError, ArithmeticError) as err:
        raise ConfigError(f"{NOT_A_LAW}: {err}") from None


def read_law(path: str | Path) -> dict[str, Any]:
    """The law JSON written by ``dataplan scaling fit --out``, checked field by field.

    Raises:
        ConfigError: naming the file (and the field) if it cannot be read or is not such a law.
    """
    p = Path(path)
    try:
        law = decode_json(read_utf8(p))
    except FileNotFoundError:
        raise ConfigError(f"{p}: law file not found") from None
    except (OSError, ValueError) as err:  # also JSONSyntaxError
        raise ConfigError(f"{p}: cannot read the fitted law ({first_line(err)})") from None
    except InputError as err:  # not UTF-8
        raise ConfigError(f"{p}: cannot read the fitted law ({err.message})") from None
    try:
        _law(law)
    except ConfigError as err:
        raise ConfigError(f"{p}: {err}") from None
    return law
