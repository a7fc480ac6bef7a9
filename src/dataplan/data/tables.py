"""Tables of numbers users give as files (CSV or Parquet, one row per record): read into columns,
with every bad value reported by file, line (CSV) or record number (Parquet) and column.

Used for the runs file of ``dataplan scaling fit`` and the probes file of ``dataplan probe fit``.
pandas reads the values; the CSV is also walked by the standard ``csv`` module to know each row's
physical line (pandas does not report it), so an error names the line an editor shows.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dataplan.errors import InputError, first_line
from dataplan.parsing import read_utf8

_BLANK = re.compile(r"[ \t]*(?:\r\n|\r|\n)?")  # a line pandas skips


@dataclass(frozen=True)
class TableSpec:
    """What a table must hold.

    Attributes:
        required: columns that must be present, with a finite number in every row.
        numeric: columns that, when present, must hold numbers (a non-number is an error);
            other columns holding a non-number are read as labels.
        text: columns always read as labels.
        positive: required columns whose values must be > 0.
        what, item: how messages name the table and a row ("runs", "run").
    """

    required: Sequence[str]
    numeric: Sequence[str] = ()
    text: Sequence[str] = ()
    positive: Sequence[str] = ()
    what: str = "rows"
    item: str = "row"


def read_table(path: str | Path, spec: TableSpec) -> dict[str, np.ndarray | list]:
    """Columns of a CSV or Parquet table: numbers as float arrays, labels as strings.

    Raises:
        InputError: naming the file, the line (CSV) or record number (Parquet) and the column of
            the first bad value; a missing required column; no rows.
    """
    import pandas as pd

    p = Path(path)
    known = (*spec.required, *spec.numeric, *spec.text)
    try:
        if not p.is_file():
            raise InputError(
                f"is a folder, not a {spec.what} file" if p.is_dir() else "file not found", path=p
            )
        if p.suffix.lower() in (".parquet", ".pq"):
            frame = _read_frame(p, spec, lambda: pd.read_parquet(p))
            lines: list[int] | None = list(range(1, len(frame) + 1))  # record numbers
        else:
            text = read_utf8(p)
            lines = _csv_row_lines(text, p, known)
            frame = _read_frame(p, spec, lambda: pd.read_csv(io.StringIO(text)))
            if len(lines) != len(frame):  # the parsers disagree on an odd file: count rows
                lines = None
            labels = [c for c in spec.text if c in frame.columns]
            if labels:  # read as written: pandas would make "NA" and "None" NaN and "01" 1
                raw = _read_frame(
                    p,
                    spec,
                    lambda: pd.read_csv(
                        io.StringIO(text), usecols=labels, dtype=str, keep_default_na=False
                    ),
                )
                for c in labels:
                    frame[c] = raw[c].to_numpy()
    except (OSError, ValueError) as err:  # a name too long or with a NUL byte, unreadable
        raise InputError(f"cannot read {spec.what} ({first_line(err)})", path=p) from None
    missing = [c for c in spec.required if c not in frame.columns]
    if missing:
        raise InputError(f"missing column(s) {', '.join(missing)}", path=p, field=missing[0])

    def bad(row: int, column: str, message: str) -> InputError:
        if lines is None:
            return InputError(f"{message} ({spec.item} {row + 1})", path=p, field=column)
        return InputError(message, path=p, line=lines[row], field=column)

    out: dict[str, Any] = {}
    for c in frame.columns:
        column = frame[c]
        values = _numbers(column)
        if values is None:  # booleans, dates: no cell is a number
            values = pd.Series(np.nan, index=column.index, dtype=np.float64)
        not_number = values.isna() & column.notna()
        numeric = c in spec.required or c in spec.numeric
        if c in spec.text:
            for row, v in enumerate(column):
                if v is None or v == "" or (isinstance(v, float) and math.isnan(v)):
                    raise bad(row, c, "missing label")
            out[c] = [str(v) for v in column]
            continue
        if not_number.any() and not numeric:
            out[c] = [str(v) for v in column]  # labels
            continue
        if not_number.any():
            row = int(np.flatnonzero(not_number.to_numpy())[0])
            raise bad(row, c, f"not a number: {_show(column.iloc[row])}")
        numbers = values.to_numpy(dtype=np.float64)
        if c in spec.required:
            for row, v in enumerate(numbers):
                if math.isnan(v):
                    raise bad(row, c, "missing value")
                if not math.isfinite(v):
                    raise bad(row, c, f"not a finite number: {v}")
                if c in spec.positive and not v > 0:
                    raise bad(row, c, f"{c} must be positive (got {v:g})")
        out[c] = numbers
    if len(frame) == 0:
        raise InputError(f"no {spec.what}", path=p)
    return out


def _read_frame(path: Path, spec: TableSpec, read: Callable[[], Any]) -> Any:
    try:
        return read()
    except Exception as err:  # pandas and pyarrow raise many parser error types
        raise InputError(f"cannot read {spec.what} ({first_line(err)})", path=path) from None


def _numbers(column: Any) -> Any:
    """The column as numbers (NaN where a cell is not one), or None if it cannot hold numbers
    (booleans, dates)."""
    import pandas as pd

    kinds = pd.api.types
    if (
        kinds.is_bool_dtype(column)
        or kinds.is_datetime64_any_dtype(column)
        or kinds.is_timedelta64_dtype(column)
    ):
        return None
    try:
        return pd.to_numeric(column, errors="coerce")
    except (TypeError, ValueError):
        return None


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _csv_row_lines(text: str, path: Path, known: Sequence[str]) -> list[int]:
    """The line of each row of a CSV, skipping the blank lines pandas skips; refuses rows with
    more values than the header and duplicated known columns."""
    physical: list[str] = []

    def source() -> Iterator[str]:
        for raw in io.StringIO(text, newline=""):
            physical.append(raw)
            yield raw

    reader = csv.reader(source())
    header: list[str] | None = None
    lines = []
    done = 0  # physical lines read before the current row
    try:
        for row in reader:
            consumed, done = physical[done:], len(physical)
            if not row or (len(consumed) == 1 and _BLANK.fullmatch(consumed[0])):
                continue
            if header is None:
                header = row
                named = [c for c in row if c in known]
                dup = next((c for c in named if named.count(c) > 1), None)
                if dup is not None:
                    raise InputError(
                        "duplicated column", path=path, line=reader.line_num, field=dup
                    )
                continue
            if len(row) > len(header):
                raise InputError("more values than header columns", path=path, line=reader.line_num)
            lines.append(reader.line_num)
    except csv.Error as err:
        raise InputError(f"malformed CSV ({err})", path=path, line=reader.line_num) from None
    return lines


def row_lines(path: Path, spec: TableSpec) -> list[int]:
    """The physical line of each row of a CSV table (as :func:`read_table` reports them)."""
    return _csv_row_lines(read_utf8(path), path, (*spec.required, *spec.numeric, *spec.text))
