"""Parsing of option values, text files and JSON that fails only with the package's own errors.

Comma-separated option values (``--budgets 0,16,32``, ``--seeds 0,1``) follow the CLI's syntax:
items are split on commas, and blank items (empty or whitespace only) are ignored, so
``"1, 2,,3,"`` is ``(1, 2, 3)`` and ``""`` is ``()``. A bad item, or one given twice, is a
:class:`ConfigError` naming the option and the item.
"""

from __future__ import annotations

import codecs
import json
import math
import numbers
from pathlib import Path
from typing import Any

from dataplan.errors import ConfigError, InputError

__all__ = [
    "JSONSyntaxError",
    "decode_json",
    "is_number",
    "parse_floats",
    "parse_ints",
    "parse_names",
    "read_utf8",
]


def _items(text: str, what: str) -> list[str]:
    if not isinstance(text, str):
        raise ConfigError(f"{what}: expected comma-separated values, got {type(text).__name__}")
    return [s for s in text.split(",") if s.strip()]


def parse_ints(text: str, what: str) -> tuple[int, ...]:
    """Comma-separated integers (``"0, 16,32"`` → ``(0, 16, 32)``).

    Raises:
        ConfigError: naming ``what`` (the option) and the first item that is not an integer.
    """
    out = []
    for item in _items(text, what):
        try:
            out.append(int(item))
        except ValueError:  # also integers too long to convert
            raise ConfigError(
                f"{what}: {item.strip()!r} is not an integer "
                f"(expected comma-separated integers, got {text!r})"
            ) from None
    return _distinct(tuple(out), what, text)


def parse_floats(text: str, what: str) -> tuple[float, ...]:
    """Comma-separated finite numbers (``"0.1,1e-3"`` → ``(0.1, 0.001)``).

    Raises:
        ConfigError: naming ``what`` and the first item that is not a finite number (``nan``,
            ``inf`` and numbers beyond the float range are refused).
    """
    out = []
    for item in _items(text, what):
        try:
            value = float(item)
        except ValueError:
            value = None
        if value is None or not math.isfinite(value):
            raise ConfigError(
                f"{what}: {item.strip()!r} is not a finite number "
                f"(expected comma-separated numbers, got {text!r})"
            )
        out.append(value)
    return _distinct(tuple(out), what, text)


def parse_names(text: str, what: str) -> tuple[str, ...]:
    """Comma-separated names, stripped of surrounding whitespace (``"a, b"`` → ``("a", "b")``).

    Every item is accepted (as by the CLI); ``what`` names the option if ``text`` is not text.
    """
    return _distinct(tuple(item.strip() for item in _items(text, what)), what, text)


def _distinct(items: tuple[Any, ...], what: str, text: str) -> tuple[Any, ...]:
    """``items``, unless one is repeated: every list option is a set of budgets, seeds, tasks…
    in which a repeat would be measured or counted twice."""
    seen: set[Any] = set()
    for item in items:
        if item in seen:
            raise ConfigError(f"{what}: {item!r} is given more than once (got {text!r})")
        seen.add(item)
    return items


def is_number(value: Any, *, finite: bool = False) -> bool:
    """A real number (Python or numpy; not a boolean), finite if asked (an integer too large
    for a float is not)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return False
    if not finite:
        return True
    try:
        return math.isfinite(value)
    except OverflowError:  # an int beyond the float range
        return False


class JSONSyntaxError(ValueError):
    """Text that is not JSON; ``lineno``/``colno`` are 1-based, None when unknown."""

    def __init__(self, msg: str, lineno: int | None = None, colno: int | None = None) -> None:
        self.msg = msg
        self.lineno = lineno
        self.colno = colno
        where = "" if lineno is None else f" at line {lineno} column {colno}"
        super().__init__(msg + where)


class _DuplicateKey(Exception):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object's members, refusing a repeated key (``json.loads`` would keep the last)."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def decode_json(text: str) -> Any:
    """``json.loads`` that fails only with :class:`JSONSyntaxError` — also for nesting deeper
    than the interpreter's recursion limit, for integers too long to convert (which
    ``json.loads`` reports as RecursionError and a plain ValueError) and for an object that
    repeats a key (which ``json.loads`` silently resolves to the last value)."""
    try:
        return json.loads(text, object_pairs_hook=_unique_keys)
    except _DuplicateKey as err:
        raise JSONSyntaxError(f"duplicated key {err.args[0]!r}") from None
    except json.JSONDecodeError as err:
        raise JSONSyntaxError(err.msg, err.lineno, err.colno) from None
    except RecursionError:
        raise JSONSyntaxError("nested too deeply") from None
    except ValueError as err:  # "Exceeds the limit (4300 digits) for integer string conversion"
        raise JSONSyntaxError(str(err).split(":")[0]) from None


def read_utf8(path: str | Path) -> str:
    """The text of a UTF-8 file (a leading byte-order mark is dropped).

    Raises:
        InputError: naming the file, and the byte and line of the first invalid byte.
        OSError: if the file cannot be read.
    """
    data = Path(path).read_bytes()
    skip = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        return data[skip:].decode("utf-8")
    except UnicodeDecodeError as err:
        at = skip + err.start
        before = data[:at]
        line = len(before.splitlines()) + (not before or before.endswith((b"\n", b"\r")))
        raise InputError(
            f"not UTF-8 text ({err.reason} at byte {at}, line {line})", path=path
        ) from None
