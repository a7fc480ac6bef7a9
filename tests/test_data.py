"""Reading task files: every format, renamed fields, and errors that name file, line and field."""

from __future__ import annotations

import json

import pytest

from dataplan.data.formatting import PromptFormatter
from dataplan.data.loading import Fields, load_examples
from dataplan.errors import InputError
from dataplan.evaluation.metrics import exact_match, normalise_answer

RECORDS = [
    {"id": "a", "prompt": "2+2=", "answer": "4"},
    {"id": "b", "prompt": "Capital of France?", "answer": "Paris"},
    {"id": "c", "prompt": "Sky colour?", "answer": 7},
]


def _write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_jsonl_csv_parquet_and_datasets_agree(tmp_path):
    import datasets
    import pandas as pd

    jsonl = _write_jsonl(tmp_path / "t.jsonl", RECORDS)
    frame = pd.DataFrame([{**r, "answer": str(r["answer"])} for r in RECORDS])
    frame.to_csv(tmp_path / "t.csv", index=False)
    frame.to_parquet(tmp_path / "t.parquet")
    datasets.Dataset.from_pandas(frame).save_to_disk(str(tmp_path / "ds"))
    datasets.DatasetDict({"train": datasets.Dataset.from_pandas(frame)}).save_to_disk(
        str(tmp_path / "dsd")
    )
    expected = [("a", "2+2=", "4"), ("b", "Capital of France?", "Paris"), ("c", "Sky colour?", "7")]
    for path in (
        jsonl,
        tmp_path / "t.csv",
        tmp_path / "t.parquet",
        tmp_path / "ds",
        tmp_path / "dsd",
    ):
        got = [(e.id, e.prompt, e.answer) for e in load_examples(path)]
        assert got == expected, path


def test_a_test_or_holdout_folder_of_several_splits_names_its_split(tmp_path):
    """The pool of a train/test folder is its train split; the same folder as --test-data is
    refused (it would silently test on the training split)."""
    import datasets

    from dataplan.data.sources import DataSource

    def split(name):
        rows = [{"id": f"{name}{i}", "prompt": f"{name} {i}?", "answer": "x"} for i in range(4)]
        return datasets.Dataset.from_list(rows)

    folder = tmp_path / "dd"
    datasets.DatasetDict({"train": split("tr"), "test": split("te")}).save_to_disk(str(folder))
    assert [e.id for e in load_examples(folder)] == ["tr0", "tr1", "tr2", "tr3"]
    assert [e.id for e in load_examples(folder, split="test")] == ["te0", "te1", "te2", "te3"]
    with pytest.raises(InputError, match="several splits: this file takes no --split"):
        DataSource(data=str(folder)).splits(test_data=str(folder))
    with pytest.raises(InputError, match="no split 'dev'"):
        load_examples(folder, split="dev")


def test_renamed_fields_and_missing_ids(tmp_path):
    path = _write_jsonl(tmp_path / "t.jsonl", [{"q": "hi", "a": "yo"}, {"q": "x", "a": "y"}])
    examples = load_examples(path, fields=Fields(prompt="q", answer="a"))
    assert [(e.id, e.prompt, e.answer, e.line) for e in examples] == [
        ("1", "hi", "yo", 1),
        ("2", "x", "y", 2),
    ]


def test_bigbench_task_json(tmp_path):
    task = {
        "task_prefix": "Decide.",
        "example_input_prefix": "\nS: ",
        "example_output_prefix": "\nA: ",
        "examples": [
            {"input": "one", "target_scores": {"yes": 0, "no": 1}},
            {"input": "two", "target": ["first", "second"]},
        ],
    }
    path = tmp_path / "task.json"
    path.write_text(json.dumps(task))
    ex = load_examples(path)
    # BIG-bench's default: the options follow the input, one per "choice:" line, seeded order.
    lines = ex[0].prompt.split("\n")
    assert lines[:2] == ["Decide.", "S: one"] and lines[-1] == "A:"
    assert sorted(lines[2:4]) == ["  choice: no", "  choice: yes"]
    assert ex[0].answer == "no" and ex[0].choices == ("yes", "no")
    assert ex[1].answer == "first" and ex[1].choices is None
    assert ex[1].prompt == "Decide.\nS: two\nA:"
    assert load_examples(path, show_choices=False)[0].prompt == "Decide.\nS: one\nA:"
    task["append_choices_to_input"] = False
    path.write_text(json.dumps(task))
    assert load_examples(path)[0].prompt == "Decide.\nS: one\nA:"
    assert "choice: yes" in load_examples(path, show_choices=True)[0].prompt


def test_bigbench_option_order_is_seeded_and_varies(tmp_path):
    task = {
        "examples": [
            {"input": f"q{i}", "target_scores": {"right": 1, "b": 0, "c": 0, "d": 0}}
            for i in range(40)
        ]
    }
    path = tmp_path / "task.json"
    path.write_text(json.dumps(task))
    first = [e.prompt for e in load_examples(path)]
    assert first == [e.prompt for e in load_examples(path)]
    positions = [p.split("\n")[1:5].index("  choice: right") for p in first]
    assert len(set(positions)) == 4  # the correct option is not always first


@pytest.mark.parametrize(
    ("content", "kwargs", "message"),
    [
        (
            '{"prompt": "a", "answer": "b"}\n{"prompt": "c", "answer": \n',
            {},
            r"t\.jsonl:2: malformed JSON",
        ),
        (
            '{"prompt": "a", "answer": "b"}\n{"answer": "c"}\n',
            {},
            r't\.jsonl:2: field "prompt": missing field',
        ),
        ('{"prompt": "a", "answer": "  "}\n', {}, r't\.jsonl:1: field "answer": empty answer'),
        (
            '{"prompt": "a"}\n',
            {"require_answer": True},
            r't\.jsonl:1: field "answer": missing answer',
        ),
        ('{"prompt": "", "answer": "b"}\n', {}, r't\.jsonl:1: field "prompt": empty prompt'),
        (
            '{"id": 1, "prompt": "a"}\n{"id": 1, "prompt": "b"}\n',
            {},
            r't\.jsonl:2: field "id": duplicated id',
        ),
        ('["a"]\n', {}, r"t\.jsonl:1: expected an object"),
        ('{"prompt": ["a", 3]}\n', {}, r't\.jsonl:1: field "prompt": expected text'),
        ("\n\n", {}, r"t\.jsonl: no examples found"),
    ],
)
def test_bad_input_names_file_line_and_field(tmp_path, content, kwargs, message):
    path = tmp_path / "t.jsonl"
    path.write_text(content)
    with pytest.raises(InputError, match=message):
        load_examples(path, **kwargs)


def test_bad_files(tmp_path):
    with pytest.raises(InputError, match="file not found"):
        load_examples(tmp_path / "nope.jsonl")
    (tmp_path / "t.txt").write_text("x")
    with pytest.raises(InputError, match="unsupported file type"):
        load_examples(tmp_path / "t.txt")
    (tmp_path / "t.csv").write_text("prompt,answer\nhi,there,extra\n")
    with pytest.raises(InputError, match=r"t\.csv:2: more values"):
        load_examples(tmp_path / "t.csv")
    (tmp_path / "t.parquet").write_text("not parquet")
    with pytest.raises(InputError, match="cannot read Parquet"):
        load_examples(tmp_path / "t.parquet")


def test_formatter_chat_and_plain(char_tokenizer):
    chat = PromptFormatter(char_tokenizer)
    enc = chat.encode("hi", "yo")
    text = char_tokenizer.decode(list(enc.prompt_ids))
    assert text == "<|user|>hi<|end|><|assistant|>"
    assert char_tokenizer.decode(list(enc.answer_ids)) == "yo"
    assert enc.end_ids == (char_tokenizer.eos_token_id,)
    assert (
        enc.labels(with_end=False)[-1] == -100
        and enc.labels(with_end=True)[-1] == char_tokenizer.eos_token_id
    )
    plain = PromptFormatter(char_tokenizer, use_chat_template=False)
    assert not plain.chat
    enc2 = plain.encode("Q: hi A:", " yo")
    assert char_tokenizer.decode(list(enc2.prompt_ids)) == "Q: hi A:"
    assert enc2.input_ids(with_end=False) == [*enc2.prompt_ids, *enc2.answer_ids]
    system = PromptFormatter(char_tokenizer, system_prompt="be brief")
    assert char_tokenizer.decode(system.prompt_ids("hi")).startswith("<|system|>be brief<|end|>")


def test_answer_normalisation():
    assert normalise_answer("  Plausible.\nBecause...") == "plausible"
    assert normalise_answer("The answer is #### 42") == "42"
    assert exact_match("YES", "yes") and not exact_match("yes no", "yes")


def test_encoding_bom_and_choices_cells(tmp_path):
    bad = tmp_path / "t.jsonl"
    bad.write_bytes(b'{"prompt": "caf\xe9", "answer": "x"}\n')
    with pytest.raises(InputError, match=r"t\.jsonl: not UTF-8"):
        load_examples(bad)
    bom = tmp_path / "bom.csv"
    bom.write_text('\ufeffprompt,answer,choices\nhi,yes,"[""yes"", ""no""]"\n', encoding="utf-8")
    ex = load_examples(bom)[0]
    assert ex.prompt == "hi" and ex.choices == ("yes", "no")
    flat = tmp_path / "flat.csv"
    flat.write_text("prompt,answer,choices\nhi,yes,yes-no\n")
    with pytest.raises(InputError, match=r'flat\.csv:2: field "choices": expected a list'):
        load_examples(flat)


@pytest.mark.parametrize("scores", [{}, {"a": "high"}, ["a", "b"]])
def test_bigbench_bad_target_scores(tmp_path, scores):
    path = tmp_path / "task.json"
    path.write_text(json.dumps({"examples": [{"input": "x", "target_scores": scores}]}))
    with pytest.raises(InputError, match=r'task\.json:1: field "target_scores"'):
        load_examples(path)


def test_prompt_longer_than_context_window_is_an_input_error(tmp_path, char_tokenizer):
    from dataplan.data.formatting import encode_examples

    path = tmp_path / "long.jsonl"
    path.write_text(
        '{"prompt": "short", "answer": "a"}\n{"prompt": "' + "x" * 80 + '", "answer": "b"}\n',
        encoding="utf-8",
    )
    examples = load_examples(path)
    tok = char_tokenizer
    old = tok.model_max_length
    tok.model_max_length = 64
    try:
        fmt = PromptFormatter(tok)
        assert fmt.max_length == 64
        with pytest.raises(InputError) as err:
            encode_examples(fmt, examples)
        assert err.value.line == 2 and err.value.field == "prompt"
        assert "context window of 64" in str(err.value)
        with pytest.raises(InputError) as err:
            fmt.generation_prompts(examples, max_new_tokens=16)
        assert err.value.line == 2
        assert len(fmt.generation_prompts(examples[:1], max_new_tokens=16)) == 1
    finally:
        tok.model_max_length = old


def test_load_model_takes_context_window_from_config(tiny_model_dir):
    from dataplan.models.loading import load_model

    loaded = load_model(str(tiny_model_dir), device="cpu")
    assert loaded.tokenizer.model_max_length == 512  # max_position_embeddings of the tiny model


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        # an unterminated quote swallowed every later row into one prompt
        ("q.csv", 'prompt,answer\nok,1\n"a,1\nb,2\nc,3\n', "q.csv:3: malformed CSV"),
        ("q.csv", 'prompt,answer\n"a" b,1\n', "q.csv:2: malformed CSV"),
        # json.loads keeps the last of two equal keys
        ("d.jsonl", '{"prompt": "p", "answer": "1", "answer": "2"}\n', "duplicated key 'answer'"),
        # the column of the problem, not of the line's end
        ("c.jsonl", '{"prompt": "a", "answer": "b"}\n{"prompt":"b"\n', "c.jsonl:2: malformed JSON"),
        ("o.jsonl", '{"prompt": "p", "answer": "z", "choices": ["x", "y"]}\n', "not one of"),
        ("o.jsonl", '{"prompt": "p", "answer": "x", "choices": ["x", " X "]}\n', "repeated"),
        ("o.jsonl", '{"prompt": "p", "answer": "x", "choices": ["x", " "]}\n', "empty option"),
    ],
)
def test_malformed_files_are_refused_where_the_problem_is(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(InputError, match=message) as err:
        load_examples(path, require_answer=True)
    if "malformed JSON" in message:
        assert "column 14" in str(err.value)


def test_csv_records_are_located_at_their_first_line_and_may_be_long(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text('prompt,answer\n"line one\nline two",x\nshort,y\n' + "z" * 200_000 + ",w\n")
    examples = load_examples(path)
    assert [(e.id, e.line) for e in examples] == [("2", 2), ("4", 4), ("5", 5)]
    assert len(examples[2].prompt) == 200_000  # beyond the csv module's default field limit


def test_a_split_with_nothing_to_test_is_an_input_error(tmp_path):
    from dataplan.data.sources import DataSource

    path = _write_jsonl(tmp_path / "one.jsonl", [{"prompt": "p", "answer": "a"}])
    with pytest.raises(InputError, match="an empty test set"):
        DataSource(data=str(path)).splits()
