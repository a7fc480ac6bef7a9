"""The raw records of a data file: what loading reads before any field is interpreted.

A record is one row of a data file as the file holds it, normally a mapping from field names to
values (text, numbers, lists, null; the loaders refuse anything else), paired with where it came
from: the 1-based line (JSONL, CSV) or record number (JSON, Parquet, a ``datasets`` folder, a
BIG-bench task.json). The file kinds are ``.jsonl``, ``.json`` (a list of records, or a
BIG-bench ``task.json``, whose examples :func:`bigbench_records` formats as BIG-bench does),
``.csv`` (an empty cell is null), ``.parquet``/``.pq`` and a folder written by ``datasets``'
``save_to_disk``. :mod:`dataplan.data.loading` turns records into examples; the value checks it
shares with the readers (text, answers, valid Unicode) are here.

A malformed file raises :class:`~dataplan.errors.InputError` naming the file, the line or record
number and, when one is at fault, the field; no other exception escapes for bad content.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from dataplan.errors import InputError, first_line
from dataplan.parsing import JSONSyntaxError, decode_json, is_number, read_utf8

CHOICE_ORDER_SEED = 20240611  # the seeded order of BIG-bench options shown in prompts

Records = list[tuple[int, Any]]


# -- checking values -----------------------------------------------------------------------------


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _is_list(value: Any) -> bool:
    return isinstance(value, (list, tuple))


def _kind(value: Any) -> str:
    """How a value reads in a message: the JSON kind rather than the Python type."""
    if value is None:
        return "null (or an empty cell)"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, (int, float)):
        return f"a number ({value!r})" if len(repr(value)) <= 30 else "a number"
    if _is_list(value):
        return "a list"
    if isinstance(value, Mapping):
        return "an object"
    return type(value).__name__


def _check_unicode(text: str, path: Path | str, line: int | None, name: str) -> None:
    """Refuse lone surrogates (JSON's ``"\\ud800"``): such text cannot be encoded or tokenised."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise InputError(
            f"not valid Unicode (a lone surrogate at character {err.start + 1})",
            path=path,
            line=line,
            field=name,
        ) from None


def _text(value: Any, path: Path | str, line: int, name: str) -> str:
    """A text field: a string, nothing else."""
    if isinstance(value, str):
        _check_unicode(value, path, line, name)
        return value
    raise InputError(f"expected text, got {_kind(value)}", path=path, line=line, field=name)


def _answer_text(value: Any, path: Path | str, line: int, name: str, *, lists: bool = True) -> str:
    """An answer or option: text, a finite number (matched as text: 3.0 stays "3.0"), or, with
    ``lists``, a BIG-bench list of acceptable texts, whose first is the reference."""
    if isinstance(value, str):
        _check_unicode(value, path, line, name)
        return value
    if is_number(value, finite=True):
        return str(value)
    if lists and _is_list(value) and value and all(isinstance(v, str) for v in value):
        return _text(value[0], path, line, name)
    raise InputError(f"expected text, got {_kind(value)}", path=path, line=line, field=name)


# -- reading records -----------------------------------------------------------------------------


def _read_records(
    path: Path,
    *,
    split: str | None,
    show_choices: bool | None,
    columns: Iterable[str],
    bigbench: bool = True,
    default_split: bool = True,
) -> tuple[Records, str, bool]:
    """``(records, kind, is_bigbench)``: the ``(line or record number, record)`` pairs of any
    supported file, ``kind`` naming what the numbers count (``line`` or ``record``)."""
    try:
        exists = path.exists()
    except (OSError, ValueError) as err:  # a name too long, a NUL byte
        raise InputError(f"cannot access ({_reason(err)})", path=path) from None
    if not exists:
        raise InputError("file not found", path=path)
    try:
        if path.is_dir():
            return _read_datasets_folder(path, split, default_split), "record", False
        suffix = path.suffix.lower()
        if suffix == ".jsonl":
            return _read_jsonl(path), "line", False
        if suffix == ".json":
            return _read_json(path, show_choices, bigbench=bigbench)
        if suffix == ".csv":
            return _read_csv(path, set(columns)), "line", False
        if suffix in (".parquet", ".pq"):
            return _read_parquet(path), "record", False
    except OSError as err:
        raise InputError(f"cannot read ({_reason(err)})", path=path) from None
    kinds = ".jsonl, .json, .csv, .parquet, a BIG-bench task.json or a datasets folder"
    if not bigbench:
        kinds = ".jsonl, .json, .csv, .parquet or a datasets folder"
    raise InputError(f"unsupported file type {suffix!r} (use {kinds})", path=path)


def _reason(err: BaseException) -> str:
    return (isinstance(err, OSError) and err.strerror) or first_line(err)


def _read_jsonl(path: Path) -> Records:
    records = []
    # newline=None: lines end as in a file opened in text mode (\n, \r\n or \r).
    for lineno, raw in enumerate(io.StringIO(read_utf8(path), newline=None), start=1):
        if not raw.strip():
            continue
        try:
            records.append((lineno, decode_json(raw.rstrip("\r\n"))))
        except JSONSyntaxError as err:
            where = "" if err.colno is None else f" at column {err.colno}"
            raise InputError(f"malformed JSON ({err.msg}{where})", path=path, line=lineno) from None
    return records


def _read_json(
    path: Path, show_choices: bool | None = None, *, bigbench: bool = True
) -> tuple[Records, str, bool]:
    try:
        data = decode_json(read_utf8(path))
    except JSONSyntaxError as err:
        where = "" if err.colno is None else f" at column {err.colno}"
        raise InputError(f"malformed JSON ({err.msg}{where})", path=path, line=err.lineno) from None
    if bigbench and isinstance(data, dict) and "examples" in data:
        records = bigbench_records(data, path, show_choices=show_choices)
        return list(enumerate(records, start=1)), "record", True
    if isinstance(data, list):
        return list(enumerate(data, start=1)), "record", False
    expected = "a list of records" + (" or a BIG-bench task with 'examples'" if bigbench else "")
    raise InputError(f"expected {expected}, got {_kind(data)}", path=path)


def bigbench_records(
    task: Mapping[str, Any], path: Path | str = "task.json", *, show_choices: bool | None = None
) -> list[dict[str, Any]]:
    """Records ``{prompt, answer, choices?}`` from a BIG-bench ``task.json``, formatted as BIG-bench
    formats them.

    The prompt is ``task_prefix + example_input_prefix + input [+ choices] +
    example_output_prefix`` (BIG-bench's defaults: ``"\\nQ: "`` and ``"\\nA: "``) without
    surrounding whitespace. For a multiple-choice example of a task whose
    ``append_choices_to_input`` is true (BIG-bench's default; ``show_choices`` overrides it), the
    options follow the input, each after ``choice_prefix`` (default ``"\\n  choice: "``), in a
    seeded order per example [our choice: the task files list the correct option first, which
    would give the answer away]. The answer is ``target`` (its first item for a list) or the
    best-scored choice of ``target_scores``; the choices are kept for multiple-choice scoring.

    Raises:
        InputError: naming the record number and the task.json field of a malformed example.
    """
    if not isinstance(task, Mapping):
        raise InputError(f"expected a BIG-bench task object, got {_kind(task)}", path=path)
    settings: dict[str, Any] = {}
    for name, default in (
        ("example_input_prefix", "\nQ: "),
        ("example_output_prefix", "\nA: "),
        ("task_prefix", ""),
        ("choice_prefix", "\n  choice: "),
    ):
        value = task.get(name, default)
        if not isinstance(value, str):
            raise InputError(f"expected text, got {_kind(value)}", path=path, field=name)
        _check_unicode(value, path, None, name)
        settings[name] = value
    append = task.get("append_choices_to_input", True)
    if not isinstance(append, bool):
        raise InputError(
            f"expected true or false, got {_kind(append)}",
            path=path,
            field="append_choices_to_input",
        )
    if show_choices is not None:
        append = show_choices
    examples = task.get("examples")
    if not isinstance(examples, list):
        raise InputError(
            f"expected a list of examples, got {_kind(examples)}", path=path, field="examples"
        )
    records = []
    for k, ex in enumerate(examples, start=1):
        if not isinstance(ex, Mapping):
            raise InputError(f"expected an object, got {_kind(ex)}", path=path, line=k)
        if "input" not in ex:
            raise InputError("missing field", path=path, line=k, field="input")
        body = ex["input"]
        if not isinstance(body, str):
            raise InputError(f"expected text, got {_kind(body)}", path=path, line=k, field="input")
        _check_unicode(body, path, k, "input")
        rec: dict[str, Any] = {}
        if "target_scores" in ex:
            scores = ex["target_scores"]
            if (
                not isinstance(scores, Mapping)
                or len(scores) < 2
                or not all(is_number(v, finite=True) for v in scores.values())
            ):
                raise InputError(
                    "expected an object of at least two options with numeric scores",
                    path=path,
                    line=k,
                    field="target_scores",
                )
            for option in scores:
                _text(option, path, k, "target_scores")
                if not option.strip():
                    raise InputError("empty option", path=path, line=k, field="target_scores")
            rec["choices"] = list(scores)
            rec["answer"] = max(scores, key=lambda c: scores[c])
            if append:
                order = np.random.default_rng([CHOICE_ORDER_SEED, k]).permutation(len(scores))
                body += "".join(settings["choice_prefix"] + rec["choices"][i] for i in order)
        elif "target" in ex:
            rec["answer"] = _bigbench_target(ex["target"], Path(path), k)
        else:
            raise InputError("missing field", path=path, line=k, field="target")
        prompt = settings["task_prefix"] + settings["example_input_prefix"] + body
        rec["prompt"] = (prompt + settings["example_output_prefix"]).strip()
        if not rec["prompt"]:
            raise InputError("empty input (and prefixes)", path=path, line=k, field="input")
        records.append(rec)
    return records


def _bigbench_target(value: Any, path: Path, k: int) -> str:
    """A ``target``: text, a number, or a list of acceptable texts (the first is the answer)."""
    if _is_list(value) and value and all(isinstance(v, str) for v in value):
        value = value[0]
    if not (isinstance(value, str) or is_number(value, finite=True)):
        raise InputError(
            f"expected text or a list of texts, got {_kind(value)}",
            path=path,
            line=k,
            field="target",
        )
    text = _answer_text(value, path, k, "target")
    if not text.strip():
        raise InputError("empty target", path=path, line=k, field="target")
    return text


def _read_csv(path: Path, columns: set[str]) -> Records:
    # A long prompt is no error (the csv module's default field limit is 128 KiB, and JSONL
    # has none); strict: an unterminated quote is an error, not a record swallowing the rest.
    csv.field_size_limit(max(csv.field_size_limit(), 2**31 - 1))
    reader = csv.DictReader(io.StringIO(read_utf8(path), newline=""), strict=True)
    records = []
    read_to = 0  # the last line of the last complete record (or of the header)
    try:
        if reader.fieldnames is None:
            raise InputError("empty CSV file (no header)", path=path)
        read_to = reader.line_num
        seen: set[str] = set()
        for name in reader.fieldnames:
            if name in seen and name in columns:  # DictReader would keep the last silently
                raise InputError("duplicated column", path=path, line=reader.line_num, field=name)
            seen.add(name)
        for row in reader:
            if None in row:
                raise InputError("more values than header columns", path=path, line=reader.line_num)
            # A quoted value may span lines: the record starts where its first line is.
            start = reader.line_num - sum(v.count("\n") for v in row.values() if v)
            records.append((start, {k: (v if v != "" else None) for k, v in row.items()}))
            read_to = reader.line_num
    except csv.Error as err:  # in the record after the last complete one
        raise InputError(f"malformed CSV ({err})", path=path, line=read_to + 1) from None
    return records


def _read_parquet(path: Path) -> Records:
    import pyarrow.parquet as pq

    try:
        rows = pq.read_table(path).to_pylist()
    except Exception as err:  # pyarrow raises several unrelated types for a bad file
        raise InputError(f"cannot read Parquet ({first_line(err)})", path=path) from None
    return list(enumerate(rows, start=1))


def _read_datasets_folder(path: Path, split: str | None, default_split: bool = True) -> Records:
    """The records of a ``save_to_disk`` folder: of a ``DatasetDict``, the ``split`` named, else
    its only split, else (with ``default_split``: the training data) its ``train`` split. A
    holdout or test file passes ``default_split=False``: silently reading the training split of
    a folder that also holds a test split would test on training data."""
    import datasets

    try:
        ds = datasets.load_from_disk(str(path))
    except Exception as err:  # missing files, bad JSON metadata, unreadable Arrow files…
        raise InputError(
            f"not a datasets folder written by save_to_disk ({first_line(err)})", path=path
        ) from None
    if isinstance(ds, datasets.DatasetDict):
        names = list(ds)
        if split is not None:
            chosen: str | None = split
        elif len(names) == 1:
            chosen = names[0]
        else:
            chosen = "train" if default_split and "train" in ds else None
        if chosen is None or chosen not in ds:
            ask = (
                "choose a split with --split"
                if default_split
                else "this file takes no --split: save the split to use on its own "
                "(DatasetDict[split].save_to_disk) or export it to JSONL"
            )
            what = f"no split {split!r}" if split is not None else "several splits"
            raise InputError(f"{what}: {ask} (available: {', '.join(names) or 'none'})", path=path)
        ds = ds[chosen]
    try:
        return list(enumerate(ds, start=1))
    except Exception as err:  # decoding features (images, audio) can fail in many ways
        raise InputError(
            f"cannot read the datasets folder ({first_line(err)})", path=path
        ) from None
