"""`dataplan weigh` on a tiny model: weights in [0, 1] with their demonstrations, resume
without recomputation, and bad input named by file and field."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dataplan.io import read_parquet
from test_cli import run_main


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _files(tmp_path, n=12, n_holdout=4):
    words = ["red", "blue", "green", "cat"]
    data = _write(
        tmp_path / "train.jsonl",
        [{"id": f"t{i}", "prompt": f"Colour {i}?", "answer": words[i % 4]} for i in range(n)],
    )
    holdout = _write(
        tmp_path / "holdout.jsonl",
        [
            {"id": f"h{i}", "prompt": f"Colour {i}?", "answer": words[i % 4]}
            for i in range(n_holdout)
        ],
    )
    return data, holdout


def test_weigh_writes_weights_and_resumes(tiny_model_dir, tmp_path, capsys, monkeypatch):
    data, holdout = _files(tmp_path)
    args = [
        "weigh",
        "--model",
        str(tiny_model_dir),
        "--data",
        str(data),
        "--holdout",
        str(holdout),
        "--k",
        "2",
        "--shard-size",
        "5",
        "--out",
        str(tmp_path / "w.parquet"),
        "--run-dir",
        str(tmp_path / "run"),
        "--json",
    ]
    code, out, err = run_main(args, capsys)
    assert code == 0, err
    summary = json.loads(out)
    table = read_parquet(tmp_path / "w.parquet")
    w = np.asarray(table["weight"])
    assert summary["n"] == 12 and len(w) == 12
    assert w.min() == 0.0 and w.max() == 1.0  # min-max over the pool
    s = np.asarray(table["score"])
    np.testing.assert_allclose(w, (s - s.min()) / (s.max() - s.min()))
    np.testing.assert_allclose(s, np.asarray(table["loss"]) - np.asarray(table["loss_in_context"]))
    # a holdout example with the training example's prompt is never its own demonstration
    for i, demos in enumerate(table["demonstrations"]):
        assert len(demos) == 2 and f"h{i}" not in demos
    assert (tmp_path / "run" / "weights.png").exists()
    assert len(list((tmp_path / "run" / "shards").glob("ica-5-*.safetensors"))) == 3
    # batches sized to a memory budget: the same scores
    budgeted = [*args[:-5], "--max-memory", "1GB", "--out", str(tmp_path / "m.parquet")]
    code, _, err = run_main([*budgeted, "--run-dir", str(tmp_path / "m"), "--json"], capsys)
    assert code == 0, err
    np.testing.assert_allclose(read_parquet(tmp_path / "m.parquet")["score"], s, rtol=1e-6)

    def boom(*a, **k):
        raise AssertionError("recomputed although cached")

    monkeypatch.setattr("dataplan.compute.ica.ica_scores", boom)
    monkeypatch.setattr("dataplan.training.weighting.ica.choose_demonstrations", boom)
    # another floor reuses every cached score (the scores do not depend on it)
    code, _, err = run_main([*args[:-1], "--min-weight", "0.2", "--json"], capsys)
    assert code == 0, err
    np.testing.assert_allclose(read_parquet(tmp_path / "w.parquet")["weight"], 0.2 + 0.8 * w)
    with pytest.raises(AssertionError, match="recomputed"):  # other demonstrations: computed
        run_main([*args[:-1], "--demos", "random", "--run-dir", str(tmp_path / "r2")], capsys)

    # a run killed after its first shards resumes with only the missing one
    monkeypatch.undo()
    import dataplan.compute.ica as ica_module

    real, calls = ica_module.ica_scores, []

    def counted(model, formatter, examples, *a, **k):
        calls.append(len(examples))
        return real(model, formatter, examples, *a, **k)

    monkeypatch.setattr("dataplan.compute.ica.ica_scores", counted)
    (last,) = sorted((tmp_path / "run" / "shards").glob("ica-5-*.safetensors"))[-1:]
    last.unlink()
    code, _, err = run_main([*args[:-1], "--out", str(tmp_path / "resumed.parquet")], capsys)
    assert code == 0, err
    assert calls == [2]  # rows 10–11 only
    np.testing.assert_allclose(read_parquet(tmp_path / "resumed.parquet")["score"], s, rtol=1e-6)


@pytest.mark.parametrize(
    ("holdout_rows", "extra", "fragment"),
    [
        ([], [], "no examples found"),
        ([{"prompt": "p", "answer": "a"}], ["--k", "3"], "--k 3 is larger than the holdout of 1"),
        ([{"question": "p", "answer": "a"}], [], 'h.jsonl:1: field "prompt"'),
        (  # the only two holdout examples, one of them the training example itself
            [{"prompt": "Colour 0?", "answer": "red"}, {"prompt": "q", "answer": "a"}],
            ["--k", "2"],
            "has fewer than --k 2 demonstrations",
        ),
    ],
)
def test_weigh_bad_holdout_exit_2(tiny_model_dir, tmp_path, capsys, holdout_rows, extra, fragment):
    data, _ = _files(tmp_path)
    holdout = _write(tmp_path / "h.jsonl", holdout_rows)
    code, out, err = run_main(
        [
            "weigh",
            "--model",
            str(tiny_model_dir),
            "--data",
            str(data),
            "--holdout",
            str(holdout),
            "--out",
            str(tmp_path / "w.parquet"),
            "--run-dir",
            str(tmp_path / "run"),
            *extra,
        ],
        capsys,
    )
    assert code == 2 and out == "" and fragment in err and "Traceback" not in err
    assert str(holdout) in err  # the file named
    assert not (tmp_path / "w.parquet").exists() and not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("rows", "fragment"),
    [
        ([{"prompt": "p", "chosen": "a"}], 'pairs.jsonl:1: field "rejected": missing field'),
        (
            [
                {"prompt": "p", "chosen": "a", "rejected": "b"},
                {"prompt": "q", "chosen": "c", "rejected": "c"},
            ],
            'pairs.jsonl:2: field "rejected": the chosen and rejected responses are the same',
        ),
    ],
)
def test_weigh_bad_pairs_exit_2(tiny_model_dir, tmp_path, capsys, rows, fragment):
    pairs = _write(tmp_path / "pairs.jsonl", rows)
    holdout = _write(
        tmp_path / "hold.jsonl",
        [{"prompt": f"s{i}", "chosen": "a", "rejected": "b"} for i in range(3)],
    )
    args = ["weigh", "--model", str(tiny_model_dir), "--data", str(pairs), "--holdout"]
    args += [str(holdout), "--preference", "--k", "2", "--out", str(tmp_path / "w.parquet")]
    code, out, err = run_main([*args, "--run-dir", str(tmp_path / "run")], capsys)
    assert code == 2 and out == "" and fragment in err and "Traceback" not in err, err
    assert not (tmp_path / "w.parquet").exists() and not (tmp_path / "run").exists()


def test_weigh_preference_pairs(tiny_model_dir, tmp_path, capsys):
    pairs = _write(
        tmp_path / "pairs.jsonl",
        [{"q": f"Colour {i}?", "good": "red", "bad": f"no{i}"} for i in range(6)],
    )
    holdout = _write(
        tmp_path / "hold.jsonl",
        [{"q": f"Shade {i}?", "good": "red", "bad": "x"} for i in range(3)],
    )
    args = ["weigh", "--model", str(tiny_model_dir), "--data", str(pairs), "--holdout"]
    args += [str(holdout), "--preference", "--prompt-field", "q", "--chosen-field", "good"]
    args += ["--rejected-field", "bad", "--k", "2", "--out", str(tmp_path / "w.parquet")]
    code, out, err = run_main([*args, "--run-dir", str(tmp_path / "run"), "--json"], capsys)
    assert code == 0, err
    table = read_parquet(tmp_path / "w.parquet")
    s = np.asarray(table["score"])
    np.testing.assert_allclose(s, np.asarray(table["score_chosen"]) - table["score_rejected"])
    assert json.loads(out)["n"] == 6 and len(table["demonstrations"][0]) == 2
    code, out, err = run_main([*args[:-6], "--k", "2", "--out", "x.parquet"], capsys)
    assert code == 2 and 'field "rejected": missing field' in err  # the default field name
