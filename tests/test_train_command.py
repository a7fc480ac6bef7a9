"""`dataplan train` on a tiny model: a loadable PEFT adapter, the weights of every refresh in the
run folder, and bad options refused before any model loads."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dataplan.io import read_parquet
from test_cli import run_main
from test_weigh import _files


def _args(tiny_model_dir, tmp_path, data, *extra):
    return [
        "train",
        "--model",
        str(tiny_model_dir),
        "--data",
        str(data),
        "--out",
        str(tmp_path / "adapter"),
        "--min-steps",
        "4",
        "--max-steps",
        "4",
        "--batch-size",
        "4",
        "--lora-r",
        "2",
        "--json",
        *extra,
    ]


def test_train_uniform_writes_a_peft_adapter(tiny_model_dir, tmp_path, capsys, monkeypatch):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    data, _ = _files(tmp_path)
    code, out, err = run_main(_args(tiny_model_dir, tmp_path, data), capsys)
    assert code == 0, err
    summary = json.loads(out)
    assert summary["steps"] == 4 and summary["weights"] == []  # uniform: the unweighted loss
    model = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir), str(tmp_path / "adapter")
    )
    assert any("lora_B" in n for n, _ in model.named_parameters())
    run = tmp_path / "adapter-run"
    assert (run / "config.json").exists() and (run / "loss.png").exists()
    assert json.loads((run / "result.json").read_text())["weighting"] == "uniform"
    # A finished run rerun with the same settings is not retrained: the same summary.
    import dataplan.training

    def no_training(*args, **kw):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(dataplan.training, "train", no_training)
    code, again, err = run_main(_args(tiny_model_dir, tmp_path, data), capsys)
    assert code == 0, err
    assert json.loads(again) == summary


def test_train_ica_records_every_refresh(tiny_model_dir, tmp_path, capsys):
    data, holdout = _files(tmp_path)
    args = _args(tiny_model_dir, tmp_path, data, "--weighting", "ica", "--holdout", str(holdout))
    code, out, err = run_main([*args, "--k", "2", "--refresh", "2"], capsys)
    assert code == 0, err
    summary = json.loads(out)
    assert [w["step"] for w in summary["weights"]] == [0, 2]  # before training, then halfway
    table = read_parquet(tmp_path / "adapter-run" / "weights.parquet")
    first = np.asarray(table["weight_step0"])
    assert first.min() == 0.0 and first.max() == 1.0 and "weight_step2" in table
    assert (tmp_path / "adapter-run" / "weights.png").exists()
    assert not (tmp_path / "adapter-run" / "state").exists()  # checkpoints removed when done


@pytest.mark.parametrize("weighting", ["rho", "one-shot", "filter"])
def test_train_sft_baselines(tiny_model_dir, tmp_path, capsys, weighting):
    """The baselines train SFT into a loadable adapter with their weights recorded."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    data, holdout = _files(tmp_path)
    args = _args(
        tiny_model_dir, tmp_path, data, "--weighting", weighting, "--holdout", str(holdout)
    )
    code, out, err = run_main([*args, "--k", "2", "--keep", "0.5"], capsys)
    assert code == 0, err
    assert json.loads(out)["weighting"] == weighting
    weights = np.asarray(read_parquet(tmp_path / "adapter-run" / "weights.parquet")["weight_step0"])
    if weighting == "filter":  # the top half kept at weight 1
        assert set(weights.tolist()) == {0.0, 1.0} and weights.sum() == len(weights) // 2
    else:
        assert weights.min() == 0.0 and weights.max() == 1.0
    PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir), str(tmp_path / "adapter")
    )


def test_train_normalise_batch(tiny_model_dir, tmp_path, capsys):
    data, holdout = _files(tmp_path)
    args = _args(tiny_model_dir, tmp_path, data, "--weighting", "ica", "--holdout", str(holdout))
    code, out, err = run_main([*args, "--k", "2", "--normalise", "batch"], capsys)
    assert code == 0 and json.loads(out)["weights"][0]["step"] == 0, err
    config = json.loads((tmp_path / "adapter-run" / "config.json").read_text())
    assert config["ica"]["normalise"] == "batch"
    weigh = ["weigh", "--model", str(tiny_model_dir), "--data", str(data), "--holdout"]
    weigh += [str(holdout), "--out", str(tmp_path / "w.parquet"), "--normalise", "batch"]
    code, _, err = run_main(weigh, capsys)
    assert code == 2 and "exist only while training" in err, err


@pytest.mark.parametrize(
    ("holdout_rows", "fragment"),
    [
        ([], "no examples found"),
        ([{"prompt": "p", "answer": "a"}], "--k 2 is larger than the holdout of 1"),
        ([{"question": "p", "answer": "a"}], 'h.jsonl:1: field "prompt"'),
    ],
)
def test_train_bad_holdout_exit_2(tiny_model_dir, tmp_path, capsys, holdout_rows, fragment):
    from test_weigh import _write

    data, _ = _files(tmp_path)
    holdout = _write(tmp_path / "h.jsonl", holdout_rows)
    args = _args(tiny_model_dir, tmp_path, data, "--weighting", "ica", "--holdout", str(holdout))
    code, out, err = run_main([*args, "--k", "2"], capsys)
    assert code == 2 and out == "" and fragment in err and str(holdout) in err, err
    assert not (tmp_path / "adapter").exists() and not (tmp_path / "adapter-run").exists()


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (["--weighting", "ica"], "--weighting ica needs --holdout FILE"),
        (["--objective", "dpo", "--weighting", "ica"], "--weighting ica needs --holdout FILE"),
        (["--weighting", "softmax"], "unknown --weighting 'softmax'"),
        (["--refresh", "3"], "--refresh needs a weighting other than uniform"),
        (["--weight-decay", "-1"], "--weight-decay must be a non-negative number"),
        (["--normalise", "batch"], "--normalise batch applies to scored weights"),
        (["--normalise", "minibatch"], "--normalise must be pool or batch"),
    ],
)
def test_train_bad_options_exit_2(tiny_model_dir, tmp_path, capsys, extra, fragment):
    data, _ = _files(tmp_path)
    code, out, err = run_main(_args(tiny_model_dir, tmp_path, data, *extra), capsys)
    assert code == 2 and out == "" and fragment in err, err
    assert not (tmp_path / "adapter").exists()


def test_evaluate_scores_a_trained_adapter_as_the_evaluation_core_does(
    tiny_model_dir, tmp_path, capsys
):
    """`dataplan evaluate --adapter` reports what the evaluation core gives for the adapter
    loaded by PEFT itself; with options the headline is their log-likelihood accuracy."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from dataplan.data.formatting import PromptFormatter
    from dataplan.data.loading import load_examples
    from dataplan.evaluation import EvalSettings, evaluate
    from test_weigh import _write

    data, _ = _files(tmp_path)
    code, _, err = run_main(
        _args(tiny_model_dir, tmp_path, data, "--learning-rate", "0.05"), capsys
    )
    assert code == 0, err
    test = _write(
        tmp_path / "test.jsonl",
        [
            {"id": f"x{i}", "prompt": f"Colour {i}?", "answer": c, "choices": ["red", "blue"]}
            for i, c in enumerate(["red", "blue", "red", "red", "blue"])
        ],
    )
    base = ["evaluate", "--model", str(tiny_model_dir), "--data", str(test), "--max-new-tokens"]
    base += ["3", "--json"]
    code, out, err = run_main([*base, "--adapter", str(tmp_path / "adapter")], capsys)
    assert code == 0, err
    got = json.loads(out)
    assert got["n"] == 5 and got["headline"] == "loglik_accuracy"
    assert got["score"] == got["loglik_accuracy"]
    model = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir), str(tmp_path / "adapter")
    )
    fmt = PromptFormatter(AutoTokenizer.from_pretrained(tiny_model_dir))
    expected = evaluate(model.eval(), fmt, load_examples(test), EvalSettings(max_new_tokens=3))
    for name in ("exact_match", "token_f1", "loglik_accuracy", "prediction_majority_share"):
        assert got[name] == pytest.approx(expected[name]), name
    assert got["examples"] == expected["examples"]
    code, out, err = run_main(base, capsys)  # the model alone
    alone = json.loads(out)
    assert code == 0 and alone["adapter"] is None and alone["n"] == 5, err
    assert alone["examples"] != got["examples"]  # the adapter was applied: other answers
    code, out, err = run_main([*base, "--adapter", str(tmp_path)], capsys)
    assert code == 2 and "not a PEFT adapter folder" in err
    # A datasets folder is evaluated on its test split (not the loader's default, train).
    import datasets

    rows = [json.loads(line) for line in test.read_text().splitlines()]
    folder = tmp_path / "dsdict"
    datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_list(rows[:1]),
            "test": datasets.Dataset.from_list(rows[1:4]),
        }
    ).save_to_disk(str(folder))
    other = ["evaluate", "--model", str(tiny_model_dir), "--data", str(folder)]
    code, out, err = run_main([*other, "--max-new-tokens", "3", "--json"], capsys)
    assert code == 0 and json.loads(out)["n"] == 3, err
    code, out, err = run_main(
        [*other, "--split", "train", "--max-new-tokens", "3", "--json"], capsys
    )
    assert code == 0 and json.loads(out)["n"] == 1, err
    code, _, err = run_main(
        ["evaluate", "--model", str(tiny_model_dir), "--task", "demo", "--split", "x"], capsys
    )
    assert code == 2 and "--split" in err


@pytest.mark.parametrize(("weighting", "bar"), [("ica", "ICA in context"), ("rho", "losses")])
def test_train_scoring_shows_progress_unless_quiet(
    tiny_model_dir, tmp_path, capsys, weighting, bar
):
    """Scoring the weights inside `train` (the long pass) shows its progress bar; --json
    silences it."""
    data, holdout = _files(tmp_path)
    args = _args(
        tiny_model_dir, tmp_path, data, "--weighting", weighting, "--holdout", str(holdout)
    )
    table = [a for a in args if a != "--json"]
    code, _, err = run_main([*table, "--k", "2"], capsys)
    assert code == 0, err
    assert bar in err
    quiet = [str(tmp_path / "quiet") if a == str(tmp_path / "adapter") else a for a in args]
    code, _, err = run_main([*quiet, "--k", "2"], capsys)
    assert code == 0, err
    assert bar not in err
