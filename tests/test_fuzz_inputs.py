"""Property-based tests of every loader and parser: a malformed input gives a clean result or
the package's own error naming the place (file, line, field), never another exception.

Each test writes its generated input to a fresh folder under one session-wide temporary
folder (hypothesis does not allow function-scoped fixtures inside ``@given``). Valid generated
inputs must also round-trip exactly.
"""

from __future__ import annotations

import copy
import csv
import io
import json
import math
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from dataplan.calibrations import get_calibration
from dataplan.data.loading import (
    Example,
    Fields,
    PreferenceExample,
    PreferenceFields,
    load_examples,
    load_preferences,
)
from dataplan.errors import ConfigError, InputError
from dataplan.maths.forecast import Calibration
from dataplan.parsing import decode_json, parse_floats, parse_ints, parse_names
from dataplan.workflows.scaling import fit_runs, plan, read_law, read_runs

# DATAPLAN_FUZZ_EXAMPLES=1000 explores further (the default keeps the file under a minute).
EXAMPLES = int(os.environ.get("DATAPLAN_FUZZ_EXAMPLES", "60"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
FEW = settings(FUZZ, max_examples=max(1, EXAMPLES * 2 // 5))


@pytest.fixture(scope="session")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def _fresh(base: Path, name: str) -> Path:
    """A path ``name`` in a new folder (the name is kept so messages can be matched)."""
    return Path(tempfile.mkdtemp(dir=base)) / name


def _assert_located(err: Exception, path: Path, *, lines: int | None = None) -> None:
    """The message names the file; a line, when given, is in the file and in the message."""
    message = str(err)
    assert str(path) in message, message
    if isinstance(err, InputError):
        assert err.path == str(path)
        if err.line is not None:
            assert err.line >= 1
            if lines is not None:
                assert err.line <= lines, (err.line, lines)
            assert message.startswith(f"{path}:{err.line}: "), message
        if err.field is not None:
            assert f'field "{err.field}"' in message


def _n_lines(data: bytes) -> int:
    return max(1, len(data.splitlines()))


def _check_examples(examples: list[Example], path: Path) -> None:
    assert examples
    ids = [e.id for e in examples]
    assert len(set(ids)) == len(ids)
    for e in examples:
        assert isinstance(e, Example)
        assert isinstance(e.id, str) and e.id.strip()
        assert isinstance(e.prompt, str) and e.prompt.strip()
        assert e.answer is None or (isinstance(e.answer, str) and e.answer.strip())
        if e.choices is not None:
            assert isinstance(e.choices, tuple) and len(e.choices) >= 2
            assert all(isinstance(c, str) for c in e.choices)
        assert e.source == str(path)
        assert isinstance(e.line, int) and e.line >= 1
        (e.prompt + (e.answer or "") + e.id).encode("utf-8")  # no lone surrogates


# -- JSON values ---------------------------------------------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)
nonblank = st.text(min_size=1, max_size=20).filter(lambda s: s.strip())
# Values for fields that expect text: mostly good text, often a wrong kind.
field_values = st.one_of(
    nonblank,
    nonblank,
    st.just(""),
    st.just("   "),
    st.none(),
    st.booleans(),
    st.integers(-1000, 1000),
    st.floats(allow_nan=True, allow_infinity=True),
    st.lists(nonblank, max_size=3),
    st.lists(scalars, max_size=3),
    st.dictionaries(st.text(max_size=5), scalars, max_size=3),
    st.just("\ud800 lone surrogate"),
)


def _is_text(v: Any) -> bool:
    return isinstance(v, str) and bool(v.strip()) and "\ud800" not in v


def _finite_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _example_field_error(rec: dict[str, Any]) -> str | None:
    """Oracle: the first field of ``rec`` that load_examples must refuse, or None."""
    if "prompt" not in rec or not _is_text(rec["prompt"]):
        return "prompt"
    a = rec.get("answer")
    if not _missing(a) and not (_is_text(a) or _finite_number(a)):  # a list is refused too
        return "answer"
    i = rec.get("id")
    if not _missing(i) and not (_is_text(i) or _finite_number(i)):
        return "id"
    return None


def _pref_field_error(rec: dict[str, Any]) -> str | None:
    for name in ("prompt", "chosen", "rejected"):
        if name not in rec or not _is_text(rec[name]):
            return name
    i = rec.get("id")
    if not _missing(i) and not (_is_text(i) or _finite_number(i)):
        return "id"
    return None


def _record(names: tuple[str, ...], draw_value) -> st.SearchStrategy[dict[str, Any]]:
    """Records whose fields are each present (with a value of any kind) or absent."""
    return st.fixed_dictionaries(
        {}, optional={name: draw_value for name in names} | {"other": json_values}
    )


def _json_line(rec: Any) -> str:
    return json.dumps(rec, allow_nan=True)


# -- JSONL ---------------------------------------------------------------------------------------


@FUZZ
@given(data=st.binary(max_size=300))
def test_jsonl_random_bytes(workdir, data):
    path = _fresh(workdir, "t.jsonl")
    path.write_bytes(data)
    try:
        _check_examples(load_examples(path), path)
    except InputError as err:
        _assert_located(err, path, lines=_n_lines(data))


@FUZZ
@given(lines=st.lists(json_values | _record(("prompt", "answer", "id"), field_values), max_size=6))
def test_jsonl_random_json_values_per_line(workdir, lines):
    path = _fresh(workdir, "t.jsonl")
    path.write_text("".join(_json_line(v) + "\n" for v in lines), encoding="utf-8")
    try:
        examples = load_examples(path)
    except InputError as err:
        _assert_located(err, path, lines=len(lines))
        if lines:
            assert err.line is not None
        return
    _check_examples(examples, path)
    for e in examples:
        rec = lines[e.line - 1]
        assert _example_field_error(rec) is None
        assert e.prompt == rec["prompt"]


@FUZZ
@given(records=st.lists(_record(("prompt", "answer", "id"), field_values), min_size=1, max_size=5))
def test_jsonl_field_types_are_checked_by_line_and_field(workdir, records):
    """A list, object, boolean or empty value where text is expected names file, line, field."""
    path = _fresh(workdir, "t.jsonl")
    path.write_text("".join(_json_line(r) + "\n" for r in records), encoding="utf-8")
    expected = next(
        ((k, f) for k, r in enumerate(records, 1) if (f := _example_field_error(r))), None
    )
    try:
        examples = load_examples(path)
    except InputError as err:
        _assert_located(err, path, lines=len(records))
        if expected is None:  # only a duplicated id remains
            assert err.field == "id" and "duplicated id" in str(err)
        else:
            assert (err.line, err.field) == expected, str(err)
        return
    assert expected is None
    _check_examples(examples, path)


@FUZZ
@given(
    records=st.lists(
        st.fixed_dictionaries({"prompt": nonblank, "answer": nonblank}),
        min_size=1,
        max_size=6,
    ),
    blank_lines=st.lists(st.sampled_from(["\n", "  \n", "\t\n"]), max_size=3),
    bom=st.booleans(),
)
def test_jsonl_valid_records_round_trip(workdir, records, blank_lines, bom):
    records = [{"id": f"id-{k}", **r} for k, r in enumerate(records)]
    path = _fresh(workdir, "t.jsonl")
    text = "".join(blank_lines) + "".join(json.dumps(r) + "\n" for r in records)
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    examples = load_examples(path, require_answer=True)
    assert [e.to_record() for e in examples] == records
    assert [e.line for e in examples] == [len(blank_lines) + k + 1 for k in range(len(records))]


def test_jsonl_numbers_ids_and_lists_follow_the_documented_rules(workdir):
    path = _fresh(workdir, "t.jsonl")
    rows = [{"id": 7, "prompt": "2+2=", "answer": 4}]  # numbers are read as their text
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    got = [e.to_record() for e in load_examples(path)]
    assert got == [{"id": "7", "prompt": "2+2=", "answer": "4"}]
    for bad, field, fragment in [
        ({"prompt": ["a", "b"]}, "prompt", "expected text, got a list"),
        ({"prompt": 12}, "prompt", "expected text, got a number"),
        ({"prompt": {"role": "user"}}, "prompt", "expected text, got an object"),
        ({"prompt": "a", "answer": {"x": 1}}, "answer", "got an object"),
        ({"prompt": "a", "answer": ["first", "second"]}, "answer", "got a list"),
        ({"prompt": "a", "answer": True}, "answer", "got a boolean"),
        ({"prompt": "a", "answer": float("inf")}, "answer", "got a number"),
        ({"prompt": "a", "id": [1]}, "id", "got a list"),
        ({"prompt": "a", "id": {"k": 1}}, "id", "got an object"),
        ({"prompt": "a", "id": False}, "id", "got a boolean"),
        ({"prompt": "a", "id": " "}, "id", "empty id"),
        ({"prompt": "\ud800"}, "prompt", "lone surrogate"),
    ]:
        path.write_text('{"prompt": "ok"}\n' + json.dumps(bad) + "\n")
        with pytest.raises(InputError) as err:
            load_examples(path)
        assert (err.value.line, err.value.field) == (2, field), str(err.value)
        assert fragment in str(err.value)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("[" * 50000 + "\n", "nested too deeply"),
        ('{"prompt": ' + "9" * 5000 + "}\n", "integer string conversion"),
    ],
)
def test_jsonl_json_the_decoder_cannot_handle(workdir, text, fragment):
    path = _fresh(workdir, "t.jsonl")
    path.write_text('{"prompt": "a"}\n' + text)
    with pytest.raises(InputError, match=fragment) as err:
        load_examples(path)
    assert err.value.line == 2


def test_non_utf8_names_the_byte_and_line(workdir):
    path = _fresh(workdir, "t.jsonl")
    path.write_bytes(b'{"prompt": "a"}\n{"prompt": "caf\xe9"}\n')
    with pytest.raises(InputError, match=r"t\.jsonl: not UTF-8 text .*at byte 31, line 2"):
        load_examples(path)


# -- CSV -----------------------------------------------------------------------------------------

csv_text = st.text(
    alphabet=st.sampled_from('prompt,answeridchoices"\n\r \t[]x\x00é\ufeff'), max_size=120
)


@FUZZ
@given(text=csv_text, bom=st.booleans())
def test_csv_random_text(workdir, text, bom):
    path = _fresh(workdir, "t.csv")
    data = (b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8")
    path.write_bytes(data)
    try:
        _check_examples(load_examples(path), path)
    except InputError as err:
        _assert_located(err, path, lines=_n_lines(data))


@FUZZ
@given(
    rows=st.lists(
        st.fixed_dictionaries(
            {"prompt": nonblank, "answer": nonblank},
            optional={"choices": st.lists(nonblank, min_size=1, max_size=2)},  # + the answer
        ),
        min_size=1,
        max_size=5,
    ),
    quoting=st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL, csv.QUOTE_NONNUMERIC]),
    bom=st.booleans(),
    order=st.permutations(["id", "prompt", "answer", "choices", "note"]),
    lineterminator=st.sampled_from(["\r\n", "\n"]),
)
def test_csv_valid_rows_round_trip(workdir, rows, quoting, bom, order, lineterminator):
    assume(all("\x00" not in v for r in rows for v in (r["prompt"], r["answer"])))
    if lineterminator == "\n" and quoting == csv.QUOTE_MINIMAL:
        # The writer then leaves a lone \r unquoted, which every reader takes as a line end.
        assume(all("\r" not in r["prompt"] + r["answer"] for r in rows))
    from dataplan.evaluation.metrics import normalise_answer

    for r in rows:  # options the loader accepts: the answer among them, none empty or repeated
        if "choices" in r:
            r["choices"] = [r["answer"], *r["choices"]]
            keys = [normalise_answer(c) for c in r["choices"]]
            assume(all(keys) and len(set(keys)) == len(keys))
    records = [{"id": f"r{k}", **r} for k, r in enumerate(rows)]
    buf = io.StringIO(newline="")
    writer = csv.DictWriter(buf, fieldnames=order, quoting=quoting, lineterminator=lineterminator)
    writer.writeheader()
    for r in records:
        cells = {**r, "note": "n"}
        cells["choices"] = json.dumps(r["choices"]) if "choices" in r else ""
        writer.writerow(cells)
    path = _fresh(workdir, "t.csv")
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + buf.getvalue().encode("utf-8"))
    examples = load_examples(path)
    assert [e.to_record() for e in examples] == [
        {
            "id": r["id"],
            "prompt": r["prompt"],
            "answer": r["answer"],
            **({"choices": r["choices"]} if "choices" in r else {}),
        }
        for r in records
    ]
    lines = [e.line for e in examples]
    assert lines == sorted(lines) and lines[0] >= 2


@FEW
@given(
    drop=st.sampled_from(["prompt", "answer", "id"]),
    extra=st.booleans(),
    n=st.integers(1, 4),
)
def test_csv_missing_columns_and_extra_values(workdir, drop, extra, n):
    names = [c for c in ("id", "prompt", "answer") if c != drop]
    lines = [",".join(names)] + [",".join(f"{c}{k}" for c in names) for k in range(n)]
    if extra:
        lines[-1] += ",surplus"
    path = _fresh(workdir, "t.csv")
    path.write_text("\n".join(lines) + "\n")
    if extra:
        with pytest.raises(InputError, match="more values than header") as err:
            load_examples(path)
        assert err.value.line == n + 1  # all rows are read before any is checked
    elif drop == "prompt":
        with pytest.raises(InputError) as err:
            load_examples(path)
        assert (err.value.line, err.value.field) == (2, "prompt")
        assert "missing field" in str(err.value)
    else:
        examples = load_examples(path)
        assert len(examples) == n
        assert [e.line for e in examples] == list(range(2, n + 2))
    if drop == "answer" and not extra:
        with pytest.raises(InputError) as err:
            load_examples(path, require_answer=True)
        assert (err.value.line, err.value.field) == (2, "answer")


def test_csv_duplicated_used_column_is_refused(workdir):
    path = _fresh(workdir, "t.csv")
    path.write_text("prompt,answer,prompt\na,b,c\n")
    with pytest.raises(InputError, match=r't\.csv:1: field "prompt": duplicated column'):
        load_examples(path)
    path.write_text("prompt,note,note\na,b,c\n")  # an unused duplicate does not matter
    assert load_examples(path)[0].prompt == "a"


# -- Parquet -------------------------------------------------------------------------------------

_ARROW_KINDS = [
    "string",
    "int",
    "float",
    "bool",
    "list_str",
    "list_int",
    "struct",
    "binary",
    "null",
]


def _arrow_column(kind: str, values: list[Any]):
    import pyarrow as pa

    types = {
        "string": pa.string(),
        "int": pa.int64(),
        "float": pa.float64(),
        "bool": pa.bool_(),
        "list_str": pa.list_(pa.string()),
        "list_int": pa.list_(pa.int64()),
        "struct": pa.struct([("role", pa.string()), ("n", pa.int64())]),
        "binary": pa.binary(),
        "null": pa.null(),
    }
    return pa.array(values, type=types[kind])


@st.composite
def arrow_columns(draw, n: int):
    kind = draw(st.sampled_from(_ARROW_KINDS))
    value = {
        "string": st.text(max_size=8),
        "int": st.integers(-(2**63), 2**63 - 1),
        "float": st.floats(allow_nan=True, allow_infinity=True),
        "bool": st.booleans(),
        "list_str": st.lists(st.text(max_size=5), max_size=3),
        "list_int": st.lists(st.integers(-5, 5), max_size=3),
        "struct": st.fixed_dictionaries({"role": st.text(max_size=4), "n": st.integers(0, 9)}),
        "binary": st.binary(max_size=6),
        "null": st.none(),
    }[kind]
    values = draw(st.lists(st.none() | value, min_size=n, max_size=n))
    return kind, values


@FUZZ
@given(data=st.data(), n=st.integers(0, 4))
def test_parquet_random_column_types(workdir, data, n):
    import pyarrow as pa
    import pyarrow.parquet as pq

    names = data.draw(
        st.lists(st.sampled_from(["prompt", "answer", "id", "choices", "x"]), unique=True)
    )
    columns = {name: data.draw(arrow_columns(n)) for name in names}
    table = (
        pa.table({name: _arrow_column(*kv) for name, kv in columns.items()})
        if names
        else (pa.table({"x": pa.array([None] * n, type=pa.null())}))
    )
    path = _fresh(workdir, "t.parquet")
    pq.write_table(table, path)
    try:
        examples = load_examples(path)
    except InputError as err:
        _assert_located(err, path, lines=max(n, 1))
        if n and "no examples" not in str(err):
            assert err.line is not None
        return
    _check_examples(examples, path)
    records = table.to_pylist()
    for e in examples:
        assert e.prompt == records[e.line - 1]["prompt"]


@FEW
@given(
    rows=st.lists(
        st.fixed_dictionaries({"prompt": nonblank, "answer": nonblank}), min_size=1, max_size=5
    ),
    int_ids=st.booleans(),
)
def test_parquet_valid_rows_round_trip(workdir, rows, int_ids):
    import pyarrow as pa
    import pyarrow.parquet as pq

    ids = list(range(len(rows))) if int_ids else [f"r{k}" for k in range(len(rows))]
    path = _fresh(workdir, "t.parquet")
    pq.write_table(
        pa.Table.from_pylist([{"id": i, **r} for i, r in zip(ids, rows, strict=True)]), path
    )
    assert [e.to_record() for e in load_examples(path)] == [
        {"id": str(i), **r} for i, r in zip(ids, rows, strict=True)
    ]


@FEW
@given(data=st.binary(max_size=200))
def test_parquet_random_bytes(workdir, data):
    path = _fresh(workdir, "t.parquet")
    path.write_bytes(b"PAR1" + data + b"PAR1")
    with pytest.raises(InputError, match="cannot read Parquet") as err:
        load_examples(path)
    _assert_located(err.value, path)


# -- datasets folders ----------------------------------------------------------------------------


def test_datasets_folders_bad_and_good(workdir):
    import datasets

    empty = _fresh(workdir, "ds")
    empty.mkdir()
    with pytest.raises(InputError, match="not a datasets folder") as err:
        load_examples(empty)
    _assert_located(err.value, empty)
    junk = _fresh(workdir, "ds")
    junk.mkdir()
    (junk / "state.json").write_text("{not json")
    (junk / "dataset_info.json").write_text("[1, 2]")
    with pytest.raises(InputError, match="not a datasets folder"):
        load_examples(junk)
    folder = _fresh(workdir, "ds")
    datasets.Dataset.from_list(
        [{"prompt": "a", "answer": "b", "id": "x"}, {"prompt": None, "answer": "d", "id": "y"}]
    ).save_to_disk(str(folder))
    with pytest.raises(InputError) as err:
        load_examples(folder)
    assert (err.value.line, err.value.field) == (2, "prompt")
    good = _fresh(workdir, "dsd")
    rows = [{"id": "p", "prompt": "q", "chosen": "c", "rejected": "r"}]
    datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)}).save_to_disk(str(good))
    assert [p.to_record() for p in load_preferences(good)] == rows
    with pytest.raises(InputError, match=r"--split \(available: test\)"):
        load_preferences(good, split="train")


# -- BIG-bench task.json -------------------------------------------------------------------------

prefix_values = st.one_of(st.text(max_size=6), st.text(max_size=6), json_values)
bigbench_examples = st.fixed_dictionaries(
    {},
    optional={
        "input": st.one_of(nonblank, nonblank, field_values),
        "target": field_values,
        "target_scores": st.one_of(
            st.dictionaries(nonblank, st.integers(0, 3) | st.floats(0, 1), max_size=4),
            st.dictionaries(st.text(max_size=4), scalars, max_size=3),
            json_values,
        ),
        "comment": json_values,
    },
)


@FUZZ
@given(
    task=st.fixed_dictionaries(
        {"examples": st.one_of(st.lists(bigbench_examples | json_values, max_size=5), json_values)},
        optional={
            "task_prefix": prefix_values,
            "example_input_prefix": prefix_values,
            "example_output_prefix": prefix_values,
            "choice_prefix": prefix_values,
            "append_choices_to_input": st.one_of(st.booleans(), scalars),
            "name": json_values,
        },
    ),
    show_choices=st.sampled_from([None, True, False]),
)
def test_bigbench_random_structures(workdir, task, show_choices):
    path = _fresh(workdir, "task.json")
    path.write_text(json.dumps(task))
    try:
        examples = load_examples(path, show_choices=show_choices)
    except InputError as err:
        n = len(task["examples"]) if isinstance(task["examples"], list) else 1
        _assert_located(err, path, lines=max(n, 1))
        return
    _check_examples(examples, path)
    for e in examples:
        raw = task["examples"][e.line - 1]
        assert isinstance(raw["input"], str) and raw["input"].strip() in e.prompt
        if "target_scores" in raw:
            scores = raw["target_scores"]
            assert e.choices == tuple(scores) and scores[e.answer] == max(scores.values())
        else:
            assert e.choices is None


@FEW
@given(
    rows=st.lists(
        st.tuples(nonblank, st.one_of(nonblank, st.lists(nonblank, min_size=1, max_size=3))),
        min_size=1,
        max_size=4,
    ),
    prefixes=st.tuples(st.text(max_size=4), st.text(max_size=4), st.text(max_size=4)),
)
def test_bigbench_valid_task_round_trips(workdir, rows, prefixes):
    task_prefix, in_prefix, out_prefix = prefixes
    task = {
        "task_prefix": task_prefix,
        "example_input_prefix": in_prefix,
        "example_output_prefix": out_prefix,
        "examples": [{"input": i, "target": t} for i, t in rows],
    }
    path = _fresh(workdir, "task.json")
    path.write_text(json.dumps(task))
    # Renamed fields do not apply to a BIG-bench task (its fields are fixed).
    examples = load_examples(path, fields=Fields(prompt="q", answer="a"))
    assert [e.to_record() for e in examples] == [
        {
            "id": str(k),
            "prompt": (task_prefix + in_prefix + i + out_prefix).strip(),
            "answer": t if isinstance(t, str) else t[0],
        }
        for k, (i, t) in enumerate(rows, 1)
    ]


def test_bigbench_shape_errors_name_the_field(workdir):
    path = _fresh(workdir, "task.json")
    for task, line, field in [
        ({"examples": 5}, None, "examples"),
        ({"examples": {"a": 1}}, None, "examples"),
        ({"task_prefix": ["x"], "examples": []}, None, "task_prefix"),
        ({"append_choices_to_input": "yes", "examples": []}, None, "append_choices_to_input"),
        (
            {"examples": [{"input": "a", "target": "b"}, {"input": ["a"], "target": "b"}]},
            2,
            "input",
        ),
        ({"examples": [{"input": "a", "target": {"x": 1}}]}, 1, "target"),
        ({"examples": [{"input": "a", "target": ""}]}, 1, "target"),
        ({"examples": [{"input": "a", "target_scores": {"only": 1}}]}, 1, "target_scores"),
        ({"examples": [{"input": "a", "target_scores": {"a": 1, "b": None}}]}, 1, "target_scores"),
        ({"examples": [{"input": "a"}]}, 1, "target"),
        (
            {
                "task_prefix": " ",
                "example_input_prefix": "",
                "example_output_prefix": "",
                "examples": [{"input": " ", "target": "x"}],
            },
            1,
            "input",
        ),
    ]:
        path.write_text(json.dumps(task))
        with pytest.raises(InputError) as err:
            load_examples(path)
        assert (err.value.line, err.value.field) == (line, field), str(err.value)
        _assert_located(err.value, path)


# -- preference data -----------------------------------------------------------------------------

PREF_NAMES = ("prompt", "chosen", "rejected", "id")


def _write_records(path: Path, records: list[dict[str, Any]]) -> None:
    """JSONL, JSON or Parquet (by suffix)."""
    if path.suffix == ".jsonl":
        path.write_text("".join(_json_line(r) + "\n" for r in records), encoding="utf-8")
    elif path.suffix == ".json":
        path.write_text(json.dumps(records), encoding="utf-8")
    else:
        raise AssertionError(path)


@FUZZ
@given(
    records=st.lists(_record(PREF_NAMES, field_values), min_size=1, max_size=4),
    suffix=st.sampled_from([".jsonl", ".json"]),
)
def test_preferences_random_field_types(workdir, records, suffix):
    for k, rec in enumerate(records):
        if _missing(rec.get("id")) or _finite_number(rec.get("id")):
            rec["id"] = f"r{k}"
    path = _fresh(workdir, "prefs" + suffix)
    _write_records(path, records)
    expected = next(((k, f) for k, r in enumerate(records, 1) if (f := _pref_field_error(r))), None)
    try:
        pairs = load_preferences(path)
    except InputError as err:
        _assert_located(err, path, lines=len(records))
        if expected is None:
            assert "duplicated id" in str(err)
        else:
            assert (err.line, err.field) == expected, str(err)
            value = records[expected[0] - 1].get(expected[1])
            if isinstance(value, (list, dict)):
                assert "conversational preference data is not supported yet" in str(err)
        return
    assert expected is None
    for p, rec in zip(pairs, records, strict=True):
        assert isinstance(p, PreferenceExample)
        assert p.to_record() == {k: rec[k] for k in PREF_NAMES}


@FEW
@given(
    rows=st.lists(
        st.fixed_dictionaries({"prompt": nonblank, "chosen": nonblank, "rejected": nonblank}),
        min_size=1,
        max_size=5,
    ),
    kind=st.sampled_from(["jsonl", "json", "csv", "parquet"]),
    with_ids=st.booleans(),
)
def test_preferences_valid_round_trip(workdir, rows, kind, with_ids):
    import pyarrow as pa
    import pyarrow.parquet as pq

    assume(all("\x00" not in v for r in rows for v in r.values()))
    assume(all(r["chosen"].strip() != r["rejected"].strip() for r in rows))  # else refused
    records = [{"id": f"p{k}", **r} if with_ids else r for k, r in enumerate(rows)]
    path = _fresh(workdir, f"prefs.{kind}")
    if kind == "csv":
        buf = io.StringIO(newline="")
        writer = csv.DictWriter(buf, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(records)
        path.write_text(buf.getvalue(), encoding="utf-8", newline="")
    elif kind == "parquet":
        pq.write_table(pa.Table.from_pylist(records), path)
    else:
        _write_records(path, records)
    pairs = load_preferences(path)
    if with_ids:
        expected_ids = [r["id"] for r in records]
    elif kind == "csv":  # the line, which a quoted line break moves on
        expected_ids = [str(p.line) for p in pairs]
    else:
        expected_ids = [str(k) for k in range(1, len(records) + 1)]
    assert [p.to_record() for p in pairs] == [
        {"id": i, **{k: r[k] for k in ("prompt", "chosen", "rejected")}}
        for i, r in zip(expected_ids, records, strict=True)
    ]
    assert all(p.source == str(path) for p in pairs)


def test_preferences_unit(workdir):
    path = _fresh(workdir, "prefs.jsonl")
    rows = [
        {"id": "a", "prompt": "Say hi", "chosen": "Hi!", "rejected": "No."},
        {"prompt": "Say yes", "chosen": "Yes", "rejected": "No"},
        {"id": 3, "prompt": "p", "chosen": "c", "rejected": "r"},
    ]
    _write_records(path, rows)
    pairs = load_preferences(path)
    assert [(p.id, p.line) for p in pairs] == [("a", 1), ("2", 2), ("3", 3)]
    assert pairs[0] == PreferenceExample("a", "Say hi", "Hi!", "No.", source=str(path), line=1)

    renamed = _fresh(workdir, "prefs.jsonl")
    _write_records(renamed, [{"question": "q", "good": "g", "bad": "b", "key": "k1"}])
    fields = PreferenceFields(prompt="question", chosen="good", rejected="bad", id="key")
    assert load_preferences(renamed, fields=fields)[0].to_record() == {
        "id": "k1",
        "prompt": "q",
        "chosen": "g",
        "rejected": "b",
    }

    conversational = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
    for bad, line_field, fragment in [
        (
            {"prompt": "p", "chosen": conversational, "rejected": "r"},
            "chosen",
            "expected a string (conversational preference data is not supported yet)",
        ),
        (
            {"prompt": "p", "chosen": "c", "rejected": {"role": "assistant"}},
            "rejected",
            "conversational preference data is not supported yet",
        ),
        (
            {"prompt": "p", "chosen": 1, "rejected": "r"},
            "chosen",
            "expected a string, got a number",
        ),
        (
            {"prompt": "p", "chosen": "c", "rejected": None},
            "rejected",
            "expected a string, got null",
        ),
        ({"prompt": "p", "chosen": "c", "rejected": True}, "rejected", "got a boolean"),
        ({"prompt": "p", "chosen": " ", "rejected": "r"}, "chosen", "empty chosen"),
        ({"prompt": "p", "chosen": "c"}, "rejected", "missing field"),
        (  # a pair without a preference
            {"prompt": "Same", "chosen": "x", "rejected": " x "},
            "rejected",
            "the chosen and rejected responses are the same",
        ),
        ({"prompt": "p", "chosen": "c", "rejected": "r", "id": [1]}, "id", "got a list"),
        ({"id": "a", "prompt": "p", "chosen": "c", "rejected": "r"}, "id", "duplicated id"),
    ]:
        _write_records(path, [rows[0], bad])
        with pytest.raises(InputError) as err:
            load_preferences(path)
        assert (err.value.line, err.value.field) == (2, line_field), str(err.value)
        assert fragment in str(err.value)
        assert str(err.value).startswith(f"{path}:2: ")

    task = _fresh(workdir, "task.json")
    task.write_text(json.dumps({"examples": [{"input": "a", "target": "b"}]}))
    with pytest.raises(InputError, match="expected a list of records"):
        load_preferences(task)
    with pytest.raises(InputError, match="file not found"):
        load_preferences(workdir / "nope.jsonl")
    other = _fresh(workdir, "prefs.txt")
    other.write_text("x")
    with pytest.raises(InputError, match="unsupported file type"):
        load_preferences(other)
    empty = _fresh(workdir, "prefs.jsonl")
    empty.write_text("\n")
    with pytest.raises(InputError, match="no preference pairs"):
        load_preferences(empty)
    csv_path = _fresh(workdir, "prefs.csv")
    csv_path.write_text("prompt,chosen,rejected\np,c,\n")
    with pytest.raises(InputError, match=r'prefs\.csv:2: field "rejected": expected a string'):
        load_preferences(csv_path)


# -- scaling-run files ---------------------------------------------------------------------------

RUN_COLUMNS = ["n_examples", "mean_tokens", "model_params", "performance"]
run_cells = st.one_of(
    st.integers(1, 10**6).map(str),
    st.floats(1e-3, 1e9).map(repr),
    st.sampled_from(
        ["", "inf", "-inf", "nan", "NaN", "NA", "abc", "0", "-3", "1e400", " 5 ", '"7"']
    ),
    st.text(alphabet='0123456789.,e-+ "\n', max_size=6),
)


@FUZZ
@given(
    header=st.lists(
        st.sampled_from([*RUN_COLUMNS, "strategy", "seed", "tokens_seen", "note", ""]),
        min_size=1,
        max_size=7,
    ),
    rows=st.lists(st.lists(run_cells, min_size=0, max_size=8), max_size=5),
    blank=st.booleans(),
)
def test_scaling_runs_csv_random_columns_and_values(workdir, header, rows, blank):
    lines = [",".join(header)] + [",".join(r) for r in rows]
    if blank and len(lines) > 1:
        lines.insert(1, "")
    text = "\n".join(lines) + "\n"
    path = _fresh(workdir, "runs.csv")
    path.write_text(text, encoding="utf-8")
    try:
        runs = read_runs(path)
    except InputError as err:
        _assert_located(err, path, lines=text.count("\n") + 1)
        if err.field is not None:
            assert err.field in header or err.field in RUN_COLUMNS
        return
    for c in RUN_COLUMNS:
        v = runs[c]
        assert isinstance(v, np.ndarray) and v.dtype == np.float64
        assert np.all(np.isfinite(v))
        if c != "performance":
            assert np.all(v > 0)
    assert len({len(v) for v in runs.values()}) == 1


@FEW
@given(data=st.binary(max_size=200), suffix=st.sampled_from([".csv", ".parquet"]))
def test_scaling_runs_random_bytes(workdir, data, suffix):
    path = _fresh(workdir, "runs" + suffix)
    path.write_bytes(data)
    with pytest.raises(InputError) as err:
        read_runs(path)
    _assert_located(err.value, path, lines=_n_lines(data))
    with pytest.raises(InputError):
        fit_runs(path, n_bootstrap=0)


@FUZZ
@given(
    runs=st.lists(
        st.tuples(
            st.integers(1, 10**6),
            st.integers(1, 4096).map(lambda k: k / 8),
            st.integers(1, 10**12),
            st.integers(-(2**20), 2**20).map(lambda k: k / 1024),
            st.sampled_from(["random", "shortest", "NA", "1"]),
        ),
        min_size=1,
        max_size=6,
    ),
)
def test_scaling_runs_valid_csv_round_trips(workdir, runs):
    path = _fresh(workdir, "runs.csv")
    buf = io.StringIO(newline="")
    writer = csv.writer(buf)
    writer.writerow([*RUN_COLUMNS, "task"])
    writer.writerows(runs)
    path.write_text(buf.getvalue(), encoding="utf-8", newline="")
    got = read_runs(path)
    for j, c in enumerate(RUN_COLUMNS):
        np.testing.assert_array_equal(got[c], np.array([float(r[j]) for r in runs]))


def test_scaling_runs_errors_name_line_and_column(workdir):
    import pandas as pd

    path = _fresh(workdir, "runs.csv")
    head = "n_examples,mean_tokens,model_params,performance\n"
    for body, line, field, fragment in [
        ("1,2,3,0.5\n\n   \n4,5,6,oops\n", 5, "performance", "not a number: 'oops'"),
        ("1,2,3,0.5\n4,inf,6,0.1\n", 3, "mean_tokens", "not a finite number"),
        ("1,2,3,0.5\n4,,6,0.1\n", 3, "mean_tokens", "missing value"),
        ("1,2,3,0.5\n4,5\n", 3, "model_params", "missing value"),
        ('1,2,3,"0.5\nstill"\n4,5,0,0.1\n', 4, "model_params", "model_params must be positive"),
        ("1,2,3,0.5,9\n", 2, None, "more values than header"),
    ]:
        path.write_text(head + body)
        with pytest.raises(InputError) as err:
            read_runs(path)
        assert (err.value.line, err.value.field) == (line, field), str(err.value)
        assert fragment in str(err.value)
        _assert_located(err.value, path)
    path.write_text("n_examples,mean_tokens,performance,performance\n1,2,3,4\n")
    with pytest.raises(InputError, match=r'runs\.csv:1: field "performance": duplicated column'):
        read_runs(path)
    pq_path = _fresh(workdir, "runs.parquet")
    frame = pd.DataFrame(
        {
            "n_examples": [1.0, 2.0],
            "mean_tokens": [3.0, 4.0],
            "model_params": [5.0, 6.0],
            "performance": [0.1, None],
        }
    )
    frame.to_parquet(pq_path)
    with pytest.raises(InputError) as err:
        read_runs(pq_path)
    assert (err.value.line, err.value.field) == (2, "performance")  # record number
    frame["performance"] = [[0.1], [0.2]]
    frame.to_parquet(pq_path)
    with pytest.raises(InputError, match="not a number") as err:
        read_runs(pq_path)
    assert (err.value.line, err.value.field) == (1, "performance")
    folder = _fresh(workdir, "runs.csv")
    folder.mkdir()
    with pytest.raises(InputError, match="folder"):
        read_runs(folder)


def test_fit_of_runs_at_absurd_scales_is_an_input_error(workdir):
    """Finite, positive but absurd values (1e300 examples) made the fit's SVD fail."""
    path = _fresh(workdir, "runs.csv")
    rows = [(1e300, 3.0), (10, 5.0), (1e-300, 7.0), (2, 9.0), (1e6, 2.0), (1, 1.0)]
    body = "".join(f"{n!r},{t!r},1e8,{k / 10!r}\n" for k, (n, t) in enumerate(rows))
    path.write_text("n_examples,mean_tokens,model_params,performance\n" + body)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        with pytest.raises(InputError) as err:
            fit_runs(path, n_bootstrap=3)
    _assert_located(err.value, path)


@FEW
@given(data=st.data())
def test_scaling_runs_parquet_random_column_types(workdir, data):
    import pyarrow as pa
    import pyarrow.parquet as pq

    n = data.draw(st.integers(0, 3))
    columns = {c: data.draw(arrow_columns(n)) for c in [*RUN_COLUMNS, "strategy"]}
    path = _fresh(workdir, "runs.parquet")
    pq.write_table(pa.table({c: _arrow_column(*kv) for c, kv in columns.items()}), path)
    try:
        runs = read_runs(path)
    except InputError as err:
        _assert_located(err, path, lines=max(n, 1))
        return
    for c in RUN_COLUMNS:
        assert np.all(np.isfinite(runs[c]))


# -- scaling laws --------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def law_dict(tmp_path_factory) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    n = np.repeat([32, 64, 128, 256, 512, 1024], 4)
    tokens = rng.choice([40.0, 80.0, 120.0, 200.0], size=n.size)
    perf = 0.02 * (n * tokens) ** 0.25 + 0.05 + rng.normal(0, 0.005, n.size)
    path = tmp_path_factory.mktemp("law") / "runs.csv"
    lines = ["n_examples,mean_tokens,model_params,performance,strategy,pool_size"]
    names = ["random", "shortest", "longest", "stratified"]
    lines += [
        f"{a},{b},1.35e8,{float(c)!r},{names[k % 4]},2000"
        for k, (a, b, c) in enumerate(zip(n, tokens, perf, strict=True))
    ]
    path.write_text("\n".join(lines) + "\n")
    law = fit_runs(path, n_bootstrap=12)
    return json.loads(json.dumps(law))  # as read back from `scaling fit --out`


def _paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value[:3]):
            out += _paths(v, (*prefix, i))
    return out


def _check_plan(result: dict[str, Any]) -> None:
    best = result["best"]
    assert isinstance(best["strategy"], str)
    assert isinstance(best["n_examples"], int) and best["n_examples"] >= 1
    assert isinstance(best["predicted_performance"], float)
    assert all(isinstance(n, str) for n in result["notes"])


@FUZZ
@given(data=st.data(), budget=st.floats(1e2, 1e9))
def test_law_json_mutations(workdir, law_dict, data, budget):
    law = copy.deepcopy(law_dict)
    where = data.draw(st.sampled_from(_paths(law)[1:]))
    parent = law
    for key in where[:-1]:
        parent = parent[key]
    if data.draw(st.booleans()) and isinstance(parent, dict):
        del parent[where[-1]]
    else:
        parent[where[-1]] = data.draw(json_values)
    path = _fresh(workdir, "law.json")
    path.write_text(json.dumps(law))
    try:
        checked = read_law(path)
    except ConfigError as err:
        message = str(err)
        assert message.startswith(f"{path}: "), message
        assert "not a law file" in message and 'field "' in message, message
        return
    try:
        with warnings.catch_warnings():  # absurd but well-typed parameters overflow
            warnings.simplefilter("ignore", RuntimeWarning)
            _check_plan(plan(checked, budget))
    except ConfigError as err:  # a valid law can still have no candidate within the budget
        assert "no candidate fits" in str(err) or "tokens form" in str(err), str(err)


@FEW
@given(law=json_values | st.dictionaries(st.text(max_size=10), json_values, max_size=6))
def test_plan_refuses_random_dicts(law):
    with pytest.raises(ConfigError, match="not a law file"):
        plan(law, 5e4)


def test_law_round_trips_and_bad_files(workdir, law_dict):
    path = _fresh(workdir, "law.json")
    path.write_text(json.dumps(law_dict))
    assert read_law(path) == law_dict
    _check_plan(plan(read_law(path), 5e4))
    for text, fragment in [
        ("[" * 50000, "nested too deeply"),
        ("{", "cannot read the fitted law"),
        ("[]", r'field "\(top level\)"'),
    ]:
        path.write_text(text)
        with pytest.raises(ConfigError, match=fragment) as err:
            read_law(path)
        assert str(err.value).startswith(f"{path}: ")
    path.write_bytes(b"\xff")
    with pytest.raises(ConfigError, match="not UTF-8"):
        read_law(path)
    broken = copy.deepcopy(law_dict)
    broken["model_params"] = "1e8"
    with pytest.raises(ConfigError, match='field "model_params": expected a positive number'):
        plan(broken, 5e4)
    broken = copy.deepcopy(law_dict)
    broken["strategies"] = {}
    with pytest.raises(ConfigError, match='field "strategies"'):
        plan(broken, 5e4)
    broken = copy.deepcopy(law_dict)
    broken["pool_size"] = 1e30
    with pytest.raises(ConfigError, match='field "pool_size"'):
        plan(broken, 5e4)


# -- calibration files ---------------------------------------------------------------------------

calibration_fields = {
    "name": st.one_of(nonblank, field_values),
    "coef": st.one_of(st.floats(-2, 2), scalars, json_values),
    "intercept": st.one_of(st.floats(-2, 2), scalars),
    "n_max": st.one_of(st.integers(-5, 10**6), scalars),
    "residual_std": st.one_of(st.none(), st.floats(0, 1), scalars),
    "loo_residuals": st.one_of(st.lists(st.floats(-1, 1), max_size=6), json_values),
    "n_tasks": st.one_of(st.none(), st.integers(0, 50), scalars),
    "source": st.one_of(st.text(max_size=8), scalars),
    "extra": st.one_of(
        st.fixed_dictionaries({}, optional={"loo_spearman": st.one_of(st.floats(-1, 1), scalars)}),
        json_values,
    ),
    "unknown": json_values,
}


@FUZZ
@given(
    d=st.one_of(
        st.fixed_dictionaries({}, optional=calibration_fields),
        st.fixed_dictionaries(
            {"name": nonblank, "coef": st.floats(-2, 2), "intercept": st.floats(-2, 2)},
            optional={
                k: v
                for k, v in calibration_fields.items()
                if k not in ("unknown", "name", "coef", "intercept")
            },
        ),
        json_values,
    )
)
def test_calibration_json_random_values(workdir, d):
    path = _fresh(workdir, "cal.json")
    path.write_text(json.dumps(d))
    try:
        cal = get_calibration(path)
    except ConfigError as err:
        message = str(err)
        assert message.startswith(f"{path}: not a valid calibration file ("), message
        return
    assert isinstance(cal.name, str) and math.isfinite(cal.coef) and math.isfinite(cal.intercept)
    assert cal.n_max >= 2 and all(math.isfinite(r) for r in cal.loo_residuals)
    cal.reliability_warning()
    cal.auc_interval(0.5)
    again = Calibration.from_dict(cal.to_dict())  # NaN inside "extra" is not equal to itself
    assert json.dumps(again.to_dict()) == json.dumps(cal.to_dict())


@FEW
@given(
    cal=st.builds(
        Calibration,
        name=nonblank,
        coef=st.floats(-2, 2),
        intercept=st.floats(-2, 2),
        n_max=st.integers(2, 10**6),
        residual_std=st.none() | st.floats(0, 1),
        loo_residuals=st.lists(st.floats(-1, 1), max_size=6).map(tuple),
        n_tasks=st.none() | st.integers(0, 50),
        source=st.text(max_size=10),
        extra=st.fixed_dictionaries({}, optional={"loo_spearman": st.floats(-1, 1)}),
    )
)
def test_calibration_round_trips(workdir, cal):
    path = _fresh(workdir, "cal.json")
    path.write_text(json.dumps(cal.to_dict()))
    assert get_calibration(path) == cal


@FEW
@given(data=st.binary(max_size=100))
def test_calibration_random_bytes(workdir, data):
    path = _fresh(workdir, "cal.json")
    path.write_bytes(data)
    try:
        get_calibration(path)
    except ConfigError as err:
        assert str(err).startswith(f"{path}: "), str(err)


def test_calibration_field_errors(workdir):
    path = _fresh(workdir, "cal.json")
    base = {"name": "m", "coef": 0.5, "intercept": 0.2}
    for change, field in [
        ({"coef": "0.5"}, "coef"),
        ({"name": ["m"]}, "name"),
        ({"loo_residuals": "123"}, "loo_residuals"),
        ({"extra": [1]}, "extra"),
        ({"extra": {"loo_spearman": "high"}}, "extra"),
        ({"n_max": 1e400}, "n_max"),
        ({"n_tasks": "many"}, "n_tasks"),
    ]:
        path.write_text(json.dumps({**base, **change}))
        with pytest.raises(ConfigError, match=f'field "{field}"'):
            get_calibration(path)
    with pytest.raises(ConfigError, match="unknown calibration"):
        get_calibration("x" * 5000)  # a name too long for the file system is no file


# -- comma-separated option values ---------------------------------------------------------------

list_text = st.text(alphabet=st.sampled_from("0123456789 ,-+._eE\tainfx١"), max_size=25)


def _reference(text: str, convert):
    """The CLI's helpers: split on commas, skip blank items, convert the rest."""
    return tuple(convert(s) for s in text.split(",") if s.strip())


def _repeats(items: tuple) -> bool:
    """Whether an item is given twice (refused: every list option is a set)."""
    return len(set(items)) < len(items)


@FUZZ
@given(text=list_text)
def test_parse_ints_matches_the_cli_syntax(text):
    try:
        expected = _reference(text, int)
    except ValueError:
        with pytest.raises(ConfigError, match=r"^--seeds: ") as err:
            parse_ints(text, "--seeds")
        assert "is not an integer" in str(err.value)
        return
    if _repeats(expected):
        with pytest.raises(ConfigError, match=r"^--seeds: .* is given more than once"):
            parse_ints(text, "--seeds")
        return
    assert parse_ints(text, "--seeds") == expected


@FUZZ
@given(text=list_text)
def test_parse_floats_matches_the_cli_syntax_and_refuses_non_finite(text):
    try:
        expected = _reference(text, float)
        ok = all(math.isfinite(v) for v in expected)
    except ValueError:
        ok = False
    if not ok:
        with pytest.raises(ConfigError, match=r"^--checkpoints: .* is not a finite number"):
            parse_floats(text, "--checkpoints")
        return
    if _repeats(expected):
        with pytest.raises(ConfigError, match=r"^--checkpoints: .* is given more than once"):
            parse_floats(text, "--checkpoints")
        return
    assert parse_floats(text, "--checkpoints") == expected


@FUZZ
@given(
    ints=st.lists(st.integers(-(10**12), 10**12), max_size=6, unique=True),
    floats=st.lists(st.floats(allow_nan=False, allow_infinity=False), max_size=6, unique=True),
    names=st.lists(
        st.text(min_size=1, max_size=8).map(str.strip).filter(lambda s: s and "," not in s),
        max_size=5,
        unique=True,
    ),
    pad=st.sampled_from(["", " ", "\t", " ,"]),
)
def test_comma_lists_round_trip(ints, floats, names, pad):
    assert parse_ints(f",{pad}".join(map(str, ints)), "--budgets") == tuple(ints)
    assert parse_floats(f",{pad}".join(map(repr, floats)), "--lr") == tuple(floats)
    assert parse_names(f",{pad}".join(names), "--tasks") == tuple(names)


def test_comma_lists_unit():
    assert parse_ints(" 1, 2,,3, ", "--budgets") == (1, 2, 3)
    with pytest.raises(ConfigError, match=r"^--n: 32 is given more than once"):
        parse_ints("32, 64, 32", "--n")
    with pytest.raises(ConfigError, match=r"^--tasks: 'a' is given more than once"):
        parse_names("a, b, a", "--tasks")
    assert parse_ints("", "--budgets") == ()
    assert parse_floats("1e-3, .5", "--lr") == (0.001, 0.5)
    assert parse_names(" a ,, b ", "--tasks") == ("a", "b")
    for bad in ("nan", "inf", "-Infinity", "1e400", "x"):
        with pytest.raises(ConfigError, match=rf"^--lr: '{bad}' is not a finite number"):
            parse_floats(f"1,{bad}", "--lr")
    with pytest.raises(ConfigError, match=r"^--seeds: '1\.5' is not an integer"):
        parse_ints("0, 1.5", "--seeds")
    with pytest.raises(ConfigError, match=r"^--seeds: '9+' is not an integer"):
        parse_ints("9" * 5000, "--seeds")
    with pytest.raises(ConfigError, match=r"^--tasks: expected comma-separated"):
        parse_names(None, "--tasks")  # type: ignore[arg-type]


@FEW
@given(text=st.text(max_size=40))
def test_decode_json_fails_only_with_its_own_error(text):
    from dataplan.parsing import JSONSyntaxError

    try:
        decode_json(text)
    except JSONSyntaxError as err:
        assert err.lineno is None or err.lineno >= 1
