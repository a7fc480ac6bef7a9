"""Read a task's examples from JSONL, CSV, Parquet, a ``datasets`` folder or a BIG-bench task.json.

Every record becomes an :class:`Example` with a prompt, an optional answer and the place it came
from, so any later error can name the file, the line and the field. Fields default to ``prompt``
and ``answer`` and can be renamed. :func:`load_preferences` reads preference pairs (a prompt
with a chosen and a rejected answer) from the same kinds of files.

A malformed file raises :class:`~dataplan.errors.InputError` naming the file, the line (JSONL,
CSV) or record number (JSON, Parquet, datasets, task.json) and the field; no other exception
escapes for bad content. The files are read into raw records by :mod:`dataplan.data.records`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dataplan.data.records import (
    CHOICE_ORDER_SEED,
    Records,
    _answer_text,
    _check_unicode,
    _is_list,
    _is_missing,
    _kind,
    _read_records,
    _text,
    bigbench_records,
)
from dataplan.errors import InputError
from dataplan.parsing import JSONSyntaxError, decode_json, is_number


@dataclass(frozen=True)
class Example:
    """One task example.

    Attributes:
        id: a stable identifier (the ``id`` field when present, else the 1-based record number).
        prompt: the input text.
        answer: the reference answer, or None for an unlabelled pool.
        choices: the answer options for multiple choice (BIG-bench ``target_scores``), if any.
        source: the file it was read from.
        line: 1-based line (JSONL/CSV) or record number (Parquet, datasets, task.json).
    """

    id: str
    prompt: str
    answer: str | None = None
    choices: tuple[str, ...] | None = None
    source: str = ""
    line: int | None = None

    def to_record(self) -> dict[str, Any]:
        rec: dict[str, Any] = {"id": self.id, "prompt": self.prompt, "answer": self.answer}
        if self.choices is not None:
            rec["choices"] = list(self.choices)
        return rec


@dataclass(frozen=True)
class Fields:
    """Names of the fields to read."""

    prompt: str = "prompt"
    answer: str = "answer"
    id: str = "id"


@dataclass(frozen=True)
class PreferenceExample:
    """One preference pair: a prompt, the preferred (``chosen``) and the other answer.

    Attributes are as for :class:`Example`; ``chosen`` and ``rejected`` are the two answers.
    """

    id: str
    prompt: str
    chosen: str
    rejected: str
    source: str = ""
    line: int | None = None

    def to_record(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "prompt": self.prompt,
            "chosen": self.chosen,
            "rejected": self.rejected,
        }

    def response(self, which: str) -> Example:
        """The prompt with its ``chosen`` or ``rejected`` response as a labelled example."""
        if which not in ("chosen", "rejected"):
            raise ValueError(f"which must be chosen or rejected, got {which!r}")
        answer = self.chosen if which == "chosen" else self.rejected
        return Example(
            id=self.id, prompt=self.prompt, answer=answer, source=self.source, line=self.line
        )


@dataclass(frozen=True)
class PreferenceFields:
    """Names of the fields of a preference record."""

    prompt: str = "prompt"
    chosen: str = "chosen"
    rejected: str = "rejected"
    id: str = "id"


def load_examples(
    path: str | Path,
    *,
    fields: Fields | None = None,
    require_answer: bool = False,
    split: str | None = None,
    show_choices: bool | None = None,
    default_split: bool = True,
) -> list[Example]:
    """Read every example of a task file.

    Args:
        path: a ``.jsonl``/``.json``/``.csv``/``.parquet`` file, a BIG-bench ``task.json`` or a
            folder written by ``datasets``' ``save_to_disk``.
        fields: field names (default ``prompt``, ``answer``, ``id``; not used for a BIG-bench
            task, whose fields are fixed).
        require_answer: fail on a record with no answer (for labelled data).
        split: the split of a ``DatasetDict`` folder (default: the only split, else ``train``).
        default_split: False for a holdout or test file: a folder of several splits then needs
            its split named (``train`` is never taken silently).
        show_choices: BIG-bench ``task.json`` only: list the options in the prompt (default: the
            task's ``append_choices_to_input``, which BIG-bench defaults to true).

    The prompt must be text; the answer may be text or a number (matched as text: ``3.0`` stays
    ``"3.0"``) — a list or an object is an input error (in a BIG-bench ``task.json`` a target
    list is BIG-bench's acceptable answers, the first the reference); the id may be text or a
    number.

    Raises:
        InputError: naming the file, line and field of the first bad record.
    """
    fields = fields or Fields()
    p = Path(path)
    records, kind, bigbench = _read_records(
        p,
        split=split,
        show_choices=show_choices,
        columns=(*_names(fields), "choices"),
        default_split=default_split,
    )
    if bigbench:
        fields = Fields()  # bigbench_records writes the default names
    examples = [_to_example(rec, line, p, fields, require_answer) for line, rec in records]
    if not examples:
        raise InputError("no examples found", path=p)
    _check_unique_ids(examples, p, fields.id, kind)
    return examples


def load_preferences(
    path: str | Path,
    *,
    fields: PreferenceFields | None = None,
    split: str | None = None,
    default_split: bool = True,
) -> list[PreferenceExample]:
    """Read every preference pair of a JSONL/JSON/CSV/Parquet file or a ``datasets`` folder.

    The prompt, chosen and rejected fields are required and must be non-empty strings (the
    conversational form, lists of ``{"role", "content"}`` messages, is not supported yet); the
    id is optional (default: the record number) and, when present, text or an integer. A pair
    whose chosen and rejected answers are equal is an input error.

    Raises:
        InputError: naming the file, line and field of the first bad record.
    """
    fields = fields or PreferenceFields()
    p = Path(path)
    records, kind, _ = _read_records(
        p,
        split=split,
        show_choices=None,
        columns=_names(fields),
        bigbench=False,
        default_split=default_split,
    )
    pairs = [_to_preference(rec, line, p, fields) for line, rec in records]
    if not pairs:
        raise InputError("no preference pairs found", path=p)
    _check_unique_ids(pairs, p, fields.id, kind)
    return pairs


# -- turning records into examples ---------------------------------------------------------------


def _names(fields: Fields | PreferenceFields) -> tuple[str, ...]:
    return tuple(getattr(fields, f) for f in fields.__dataclass_fields__)


def _to_example(
    rec: Mapping[str, Any], line: int, path: Path, fields: Fields, require_answer: bool
) -> Example:
    if not isinstance(rec, Mapping):
        raise InputError(f"expected an object, got {_kind(rec)}", path=path, line=line)
    if fields.prompt not in rec:
        raise InputError("missing field", path=path, line=line, field=fields.prompt)
    prompt = _text(rec[fields.prompt], path, line, fields.prompt)
    if not prompt.strip():
        raise InputError("empty prompt", path=path, line=line, field=fields.prompt)
    answer = None
    if fields.answer in rec and not _is_missing(rec[fields.answer]):
        answer = _answer_text(rec[fields.answer], path, line, fields.answer, lists=False)
        if not answer.strip():
            raise InputError("empty answer", path=path, line=line, field=fields.answer)
    elif require_answer:
        raise InputError("missing answer", path=path, line=line, field=fields.answer)
    choices = _choices(rec.get("choices"), path, line)
    if choices is not None:
        _check_choices(choices, answer, path, line)
    return Example(
        id=_id(rec, line, path, fields.id),
        prompt=prompt,
        answer=answer,
        choices=choices,
        source=str(path),
        line=line,
    )


def _to_preference(
    rec: Mapping[str, Any], line: int, path: Path, fields: PreferenceFields
) -> PreferenceExample:
    if not isinstance(rec, Mapping):
        raise InputError(f"expected an object, got {_kind(rec)}", path=path, line=line)
    texts = {}
    for role in ("prompt", "chosen", "rejected"):
        name = getattr(fields, role)
        if name not in rec:
            raise InputError("missing field", path=path, line=line, field=name)
        value = rec[name]
        if _is_list(value) or isinstance(value, Mapping):
            raise InputError(
                f"expected a string (conversational preference data is not supported yet), "
                f"got {_kind(value)}",
                path=path,
                line=line,
                field=name,
            )
        if not isinstance(value, str):
            raise InputError(
                f"expected a string, got {_kind(value)}", path=path, line=line, field=name
            )
        _check_unicode(value, path, line, name)
        if not value.strip():
            raise InputError(f"empty {role}", path=path, line=line, field=name)
        texts[role] = value
    if texts["chosen"].strip() == texts["rejected"].strip():  # no preference to learn
        raise InputError(
            "the chosen and rejected responses are the same",
            path=path,
            line=line,
            field=fields.rejected,
        )
    return PreferenceExample(
        id=_id(rec, line, path, fields.id), **texts, source=str(path), line=line
    )


def _id(rec: Mapping[str, Any], line: int, path: Path, name: str) -> str:
    """The record's id (text or an integer; a float id keeps its text, ``1.0``), else its line."""
    value = rec.get(name)
    if _is_missing(value):
        return str(line)
    if isinstance(value, str):
        _check_unicode(value, path, line, name)
        if not value.strip():
            raise InputError("empty id", path=path, line=line, field=name)
        return value
    if is_number(value, finite=True):
        return str(value)
    raise InputError(
        f"expected text or an integer, got {_kind(value)}", path=path, line=line, field=name
    )


def _choices(value: Any, path: Path, line: int) -> tuple[str, ...] | None:
    """Options of a multiple-choice example: a list, or a JSON list in a text cell (CSV)."""
    if hasattr(value, "tolist"):  # numpy arrays from Parquet
        value = value.tolist()
    if _is_missing(value) or (isinstance(value, str) and value == ""):
        return None
    if isinstance(value, str):
        try:
            value = decode_json(value)
        except JSONSyntaxError:
            value = None
    if not _is_list(value) or len(value) < 2:
        raise InputError(
            "expected a list of at least two options", path=path, line=line, field="choices"
        )
    return tuple(_answer_text(c, path, line, "choices", lists=False) for c in value)


def _check_choices(choices: tuple[str, ...], answer: str | None, path: Path, line: int) -> None:
    """Options that can be scored: none empty, none repeated, the answer among them — as the
    option accuracy compares them (normalised answers), else it would silently count 0."""
    from dataplan.evaluation.metrics import normalise_answer  # the metric's own comparison

    seen: set[str] = set()
    for option in choices:
        key = normalise_answer(option)
        if not key:
            raise InputError("an empty option", path=path, line=line, field="choices")
        if key in seen:
            raise InputError(f"option {option!r} repeated", path=path, line=line, field="choices")
        seen.add(key)
    if answer is not None and normalise_answer(answer) not in seen:
        raise InputError(
            f"the answer {answer!r} is not one of the options",
            path=path,
            line=line,
            field="choices",
        )


def _check_unique_ids(examples: Sequence[Any], path: Path, field: str, kind: str) -> None:
    seen: dict[str, int | None] = {}
    for ex in examples:
        if ex.id in seen:
            raise InputError(
                f"duplicated id {ex.id!r} (first seen at {kind} {seen[ex.id]})",
                path=path,
                line=ex.line,
                field=field,
            )
        seen[ex.id] = ex.line


__all__ = [
    "CHOICE_ORDER_SEED",
    "Example",
    "Fields",
    "PreferenceExample",
    "PreferenceFields",
    "Records",
    "bigbench_records",
    "load_examples",
    "load_preferences",
]
