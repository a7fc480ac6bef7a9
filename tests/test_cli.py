"""The CLI contract: --json prints one object; bad input exits 2 with one line; no traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dataplan.cli.app import app, main

FIXTURES = Path(__file__).parent / "fixtures" / "dataefficiency"
runner = CliRunner()


def run_main(args: list[str], capsys) -> tuple[int, str, str]:
    """Invoke the real entry point (with its error handling) in-process."""
    old = sys.argv
    sys.argv = ["dataplan", *args]
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        sys.argv = old
    out, err = capsys.readouterr()
    return code, out, err


def test_predict_worked_example_json(capsys):
    code, out, _ = run_main(
        [
            "predict",
            "--cos-low",
            "0.65",
            "--coef",
            "0.54",
            "--intercept",
            "0.31",
            "--target",
            "0.9",
            "--json",
        ],
        capsys,
    )
    assert code == 0
    d = json.loads(out)
    assert round(d["n_star"]) == 1028
    assert d["auc"] == pytest.approx(0.661)


def test_predict_builtin_calibration_has_interval(capsys):
    code, out, _ = run_main(
        [
            "predict",
            "--cos-low",
            "0.5",
            "--calibration",
            "mistral-7b-instruct-v0.3",
            "--target",
            "0.8",
            "--json",
        ],
        capsys,
    )
    d = json.loads(out)
    assert code == 0 and d["calibration"] == "mistral-7b-instruct-v0.3"
    assert d["n_star_interval"][0] < d["n_star"] < d["n_star_interval"][1]


def test_predict_raw_accuracy_target(capsys):
    code, out, _ = run_main(
        [
            "predict",
            "--cos-low",
            "0.65",
            "--coef",
            "0.54",
            "--intercept",
            "0.31",
            "--target-accuracy",
            "0.82",
            "--zero-shot-accuracy",
            "0.1",
            "--ceiling",
            "0.9",
            "--json",
        ],
        capsys,
    )
    assert code == 0
    assert json.loads(out)["target"] == pytest.approx(0.9)


@pytest.mark.parametrize(
    "args",
    [
        ["predict", "--cos-low", "0.5", "--target", "0.9"],  # no calibration
        ["predict", "--cos-low", "0.5", "--calibration", "nope", "--target", "0.9"],
        ["predict", "--cos-low", "0.5", "--coef", "1", "--intercept", "0", "--target", "1.5"],
        [
            "predict",
            "--cos-low",
            "0.5",
            "--coef",
            "1",
            "--intercept",
            "0",
            "--target-accuracy",
            "0.5",
        ],
    ],
)
def test_predict_bad_options_exit_2(args, capsys):
    code, out, err = run_main(args, capsys)
    assert code == 2 and out == ""
    assert err.strip().startswith("error:") and "Traceback" not in err


def test_auc_json_matches_published(capsys):
    path = FIXTURES / "finetune_results" / "llama_circa_full_result_v2.json"
    code, out, _ = run_main(["auc", str(path), "--human-score", "0.923", "--json"], capsys)
    d = json.loads(out)
    assert code == 0 and d["metric"] == "accuracy"
    published = json.loads(
        (FIXTURES / "auc_res" / "llama_auc_logscale_by_task_5000.json").read_text()
    )["circa"]
    assert d["auc"] == pytest.approx(published["extrapolation_auc"], abs=1e-12)


def test_auc_custom_budgets_and_metric(tmp_path, capsys):
    path = tmp_path / "r.json"
    path.write_text(
        json.dumps(
            {
                "0": {"f1": 0.0, "em": 0.0},
                "16": {"f1": 0.5, "em": 0.2},
                "64": {"f1": 1.0, "em": 0.4},
            }
        )
    )
    code, out, _ = run_main(
        ["auc", str(path), "--budgets", "0,16,64", "--metric", "em", "--json"], capsys
    )
    d = json.loads(out)
    assert code == 0 and d["metric"] == "em" and d["n_max"] == 64 and d["curve_n"] == [0, 16, 64]


@pytest.mark.parametrize(
    ("content", "extra", "fragment"),
    [
        ("{not json", [], "malformed JSON"),
        ('{"abc": {"accuracy": 0.5}}', [], 'field "abc": budget keys'),
        ('{"0": {"accuracy": "high"}}', [], 'field "0.accuracy": expected a number'),
        ('{"0": {"accuracy": 0.5}}', ["--metric", "f1"], "metric 'f1' not found"),
        ('{"0": {"accuracy": 0.5}}', ["--budgets", "a,b"], "budgets must be"),
    ],
)
def test_auc_bad_input_exit_2(tmp_path, capsys, content, extra, fragment):
    path = tmp_path / "bad.json"
    path.write_text(content)
    code, out, err = run_main(["auc", str(path), *extra], capsys)
    assert code == 2 and out == ""
    assert fragment in err and len(err.strip().splitlines()) == 1


COMMANDS = (
    "estimate",
    "predict",
    "auc",
    "coslow",
    "calibrations",
    "curve",
    "calibrate",
    "select",
    "weigh",
    "train",
    "evaluate",
    "probe",
    "probe fit",
    "probe diagram",
    "plan",
    "report",
    "scaling runs",
    "scaling fit",
    "scaling plan",
    "tasks list",
    "tasks export",
)


def test_help_is_fast_and_lists_commands():
    """Every command has help, and building the CLI loads no model code (torch, transformers,
    peft): that import, not the parsing, is what makes a CLI slow to answer --help."""
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for cmd in COMMANDS:
        assert cmd.split()[0] in result.output
        sub = runner.invoke(app, [*cmd.split(), "--help"])
        assert sub.exit_code == 0 and "Usage" in sub.output, (cmd, sub.output)
    code = (
        "import sys; import dataplan.cli.app; "
        "print(sorted(m for m in ('torch', 'transformers', 'peft', 'datasets', 'scipy') "
        "if m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "[]", proc.stdout


def test_shared_options_are_offered_by_every_command_that_loads_a_model():
    shared = ("--model", "--device", "--dtype", "--trust-remote-code", "--chat-template")
    for cmd in (
        "estimate",
        "coslow",
        "curve",
        "calibrate",
        "select",
        "weigh",
        "train",
        "scaling runs",
    ):
        out = runner.invoke(app, [*cmd.split(), "--help"], env={"COLUMNS": "200"}).output
        for flag in (*shared, "--json", "--quiet"):
            assert flag in out, (cmd, flag)
    for cmd in ("curve", "calibrate", "train", "scaling runs"):  # the training settings
        out = runner.invoke(app, [*cmd.split(), "--help"], env={"COLUMNS": "200"}).output
        for flag in ("--lora-r", "--max-steps", "--min-steps", "--learning-rate"):
            assert flag in out, (cmd, flag)


def test_predict_without_target_forecasts_for_09_like_estimate(capsys):
    code, out, err = run_main(
        ["predict", "--cos-low", "0.65", "--coef", "0.54", "--intercept", "0.31", "--json"],
        capsys,
    )
    assert code == 0, err
    d = json.loads(out)
    assert d["target"] == 0.9 and "no target given" in d["note"]


def test_calibrations_table_names_its_source_column(capsys):
    code, out, _ = run_main(["calibrations"], capsys)
    header = next(line for line in out.splitlines() if "name" in line)
    assert code == 0 and "source" in header  # a named column, not an unnamed sixth one
    assert "[1] published coefficients" in out  # a source's details as a note under the table


def test_console_script_subprocess_exit_code(tmp_path):
    """The installed entry point, in a real process: one error line on stderr, exit 2."""
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2")
    env = {**os.environ, "COLUMNS": "200"}
    proc = subprocess.run(
        [sys.executable, "-m", "dataplan", "auc", str(bad), "--json"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert "bad.json:1: malformed JSON" in proc.stderr and "Traceback" not in proc.stderr


def _labelled_file(path, n=5):
    words = ["red", "blue", "green", "cat", "dog"]
    path.write_text(
        "".join(json.dumps({"prompt": f"Say {w} twice", "answer": w}) + "\n" for w in words[:n])
    )
    return path


def test_coslow_json_contract(tiny_model_dir, tmp_path, capsys):
    data = _labelled_file(tmp_path / "l.jsonl")
    code, out, _ = run_main(
        [
            "coslow",
            "--model",
            str(tiny_model_dir),
            "--labeled",
            str(data),
            "--lora-r",
            "4",
            "--json",
        ],
        capsys,
    )
    assert code == 0
    d = json.loads(out)
    assert set(d) >= {"coslow", "cosines", "grad_norms"}
    cos = d["cosines"]
    assert len(cos) == 5 and all(len(row) == 5 for row in cos)
    assert all(abs(cos[i][i] - 1.0) < 1e-9 for i in range(5)) and len(d["grad_norms"]) == 5


def test_estimate_json_contract(tiny_model_dir, tmp_path, capsys):
    pool = tmp_path / "pool.jsonl"
    pool.write_text(
        "".join(json.dumps({"prompt": f"item {i}", "answer": "yes"}) + "\n" for i in range(20))
    )
    code, out, _ = run_main(
        [
            "estimate",
            "--model",
            str(tiny_model_dir),
            "--data",
            str(pool),
            "--n-labeled",
            "4",
            "--low-fraction",
            "0.2",
            "--max-new-tokens",
            "3",
            "--lora-r",
            "4",
            "--coef",
            "0.5",
            "--intercept",
            "0.3",
            "--target",
            "0.9",
            "--run-dir",
            str(tmp_path / "run"),
            "--json",
        ],
        capsys,
    )
    assert code == 0
    d = json.loads(out)
    assert (
        d["status"] == "ok"
        and d["forecast"]["n_star"] > 0
        and d["run_dir"] == str(tmp_path / "run")
    )


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (
            ["coslow", "--model", "/no/such/model", "--labeled", "{labeled}"],
            "/no/such/model: model folder not found",
        ),
        (
            ["coslow", "--model", "{model}", "--labeled", "{bad}"],
            'bad.jsonl:2: field "answer": missing answer',
        ),
        (["estimate", "--model", "{model}", "--data", "{labeled}"], "a pool of 5 examples has 0"),
        (
            ["coslow", "--model", "{model}", "--labeled", "{labeled}", "--adapter", "{tmp}"],
            "not a PEFT adapter",
        ),
    ],
)
def test_model_and_data_errors_exit_2(tiny_model_dir, tmp_path, capsys, args, fragment):
    labeled = _labelled_file(tmp_path / "l.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "answer": "b"}\n{"prompt": "c"}\n')
    subs = {
        "{labeled}": str(labeled),
        "{bad}": str(bad),
        "{model}": str(tiny_model_dir),
        "{tmp}": str(tmp_path),
    }
    code, out, err = run_main([subs.get(a, a) for a in args], capsys)
    assert code == 2 and out == ""
    assert fragment in err, err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (
            [
                "predict",
                "--cos-low",
                "0.5",
                "--coef",
                "1",
                "--intercept",
                "0",
                "--target",
                "0.5",
                "--n-max",
                "1",
            ],
            "--n-max",
        ),
        (
            ["predict", "--cos-low", "nan", "--coef", "1", "--intercept", "0", "--target", "0.5"],
            "finite",
        ),
        (
            [
                "predict",
                "--cos-low",
                "0.5",
                "--calibration",
                "qwen2.5-14b-instruct",
                "--intercept",
                "0",
                "--target",
                "0.5",
            ],
            "give --calibration",
        ),
        (["auc", "{dir}"], "cannot read"),
        (["auc", "{nan}"], "expected a number"),
        (
            ["predict", "--cos-low", "0.5", "--calibration", "{dir}", "--target", "0.5"],
            "cannot read calibration",
        ),
        (["auc", "{bracket}"], "[/x]"),
    ],
)
def test_more_bad_input_exit_2(tmp_path, capsys, args, fragment):
    nan = tmp_path / "nan.json"
    nan.write_text('{"0": {"accuracy": NaN}}')
    bracket = tmp_path / "[" / "x]"
    bracket.mkdir(parents=True)
    subs = {"{dir}": str(tmp_path), "{nan}": str(nan), "{bracket}": str(tmp_path / "[/x].json")}
    code, out, err = run_main([subs.get(a, a) for a in args], capsys)
    assert code == 2 and out == "", err
    assert fragment in err and "Traceback" not in err


def test_run_dir_that_is_a_file_exit_2(tiny_model_dir, tmp_path, capsys):
    pool = tmp_path / "pool.jsonl"
    pool.write_text(
        "".join(json.dumps({"prompt": f"item {i}", "answer": "yes"}) + "\n" for i in range(20))
    )
    blocker = tmp_path / "run"
    blocker.write_text("not a folder")
    code, out, err = run_main(
        [
            "estimate",
            "--model",
            str(tiny_model_dir),
            "--data",
            str(pool),
            "--n-labeled",
            "2",
            "--run-dir",
            str(blocker),
        ],
        capsys,
    )
    assert code == 2 and out == "" and "exists and is not a folder" in err


@pytest.mark.parametrize(
    "args",
    [
        ["estimate", "--data", "{bad}"],
        ["coslow", "--labeled", "{bad}"],
        ["curve", "--data", "{bad}", "--budgets", "0,4"],
        ["select", "--method", "loss", "--data", "{bad}", "--k", "2"],
        ["scaling", "runs", "--data", "{bad}", "--n", "4", "--out", "{tmp}/runs.csv"],
        ["calibrate", "--name", "x", "--data", "{bad},{tmp}/b2.jsonl,{tmp}/b3.jsonl"],
    ],
)
def test_a_missing_model_is_reported_before_bad_data(tmp_path, capsys, args):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": ["not", "text"]}\n[broken\n')
    argv = [a.replace("{bad}", str(bad)).replace("{tmp}", str(tmp_path)) for a in args]
    code, out, err = run_main([*argv, "--model", str(tmp_path / "no-such-model")], capsys)
    assert code == 2 and out == ""
    assert "no-such-model: model folder not found" in err and "Traceback" not in err
