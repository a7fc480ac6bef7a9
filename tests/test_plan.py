"""`dataplan plan` on a tiny model: every step in its run folder, the report and plan.json, a
rerun that reuses everything, and skipped steps that say why."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from test_cli import run_main
from test_estimate import _pool
from test_weigh import _files

ROOT = Path(__file__).resolve().parent.parent
RUNS = ROOT / "studies/scaling-smollm2/runs-arithmetic_2_digit_addition.csv"


def _args(tiny_model_dir, tmp_path, *extra):
    data = _pool(tmp_path / "pool.jsonl")
    _, holdout = _files(tmp_path)
    return [
        "plan",
        "--model",
        str(tiny_model_dir),
        "--data",
        str(data),
        "--holdout",
        str(holdout),
        "--n-labeled",
        "4",
        "--low-fraction",
        "0.25",
        "--coef",
        "0.5",
        "--intercept",
        "0.3",
        "--n-max",
        "1000",
        "--target",
        "0.8",
        "--probe",
        "off",
        "--select-method",
        "loss",
        "--fraction",
        "0.25",
        "--k",
        "2",
        "--out",
        str(tmp_path / "plan"),
        "--json",
        *extra,
    ]


def test_plan_runs_every_step_and_reports_them(tiny_model_dir, tmp_path, capsys, monkeypatch):
    args = _args(tiny_model_dir, tmp_path, "--scaling-runs", str(RUNS), "--compute-tokens", "24000")
    code, out, err = run_main(args, capsys)
    assert code == 0, err
    plan = json.loads(out)
    folder = tmp_path / "plan"
    for name in ("estimate", "select", "weigh"):
        assert (folder / name / "config.json").exists()
        # the command that made the step's folder: the plan
        assert (folder / name / "command.txt").read_text().startswith("dataplan plan --model")
    assert (folder / "report.html").exists() and (folder / "scaling-plan.json").exists()
    compute = [s for s in plan["sections"] if s["kind"].startswith("scaling")]
    assert [len(s["figures"]) for s in compute] == [1, 1]  # the fit and the plan, drawn
    assert json.loads((folder / "plan.json").read_text())["steps"] == plan["steps"]
    answers = {a["key"]: a for a in plan["answers"]}
    assert all(a["answer"] is not None for a in answers.values()), answers
    assert answers["data"]["answer"]["text"].startswith("≈ ")  # n* for the target
    assert "by loss" in answers["examples"]["answer"]["text"]
    select = next(s for s in plan["steps"] if s["step"] == "select")
    assert select["balance_by"] in ("label", "answer-length")
    # a rerun reuses every step: no model computation at all
    for target in (
        "dataplan.compute.generation.greedy_answers",
        "dataplan.compute.gradients.gradient_gram",
        "dataplan.compute.ica.ica_scores",
        "dataplan.compute.example_stats.answer_losses",
    ):
        monkeypatch.setattr(target, lambda *a, t=target, **k: pytest.fail(f"recomputed {t}"))
    code, out2, err = run_main(args, capsys)
    assert code == 0, err
    assert json.loads(out2)["answers"] == plan["answers"]
    # `dataplan report` on the plan's folder: the same page
    page = tmp_path / "again" / "report.html"
    code, out3, err = run_main(["report", str(folder), "--out", str(page), "--json"], capsys)
    assert code == 0, err
    assert json.loads(out3)["answers"] == plan["answers"]


def test_plan_skips_say_why(tiny_model_dir, tmp_path, capsys):
    args = _args(tiny_model_dir, tmp_path, "--skip", "estimate,select")
    code, out, err = run_main(args, capsys)
    assert code == 0, err
    plan = json.loads(out)
    skipped = {s["step"]: s["skipped"] for s in plan["steps"] if "skipped" in s}
    assert skipped["estimate"] == skipped["select"] == "skipped (--skip)"
    assert "scaling runs" in skipped["scaling"]
    # a budget without runs: what measuring a law would take, and the command
    code, out, err = run_main([*args, "--compute-tokens", "24000"], capsys)
    assert code == 0, err
    reason = next(s["skipped"] for s in json.loads(out)["steps"] if s["step"] == "scaling")
    assert "16 fine-tunes of 24000 tokens each (16× the budget)" in reason
    assert "dataplan scaling runs --model" in reason and "--compute-tokens 24000" in reason
    assert [a["key"] for a in plan["answers"] if a["answer"] is None] == [
        "data",
        "examples",
        "compute",
        "trust",
    ]
    # `dataplan report` on the folder reads the steps plan.json says ran, not stray folders
    stray = tmp_path / "plan" / "select"
    shutil.copytree(tmp_path / "plan" / "weigh", stray)
    page = tmp_path / "again" / "report.html"
    code, out, err = run_main(
        ["report", str(tmp_path / "plan"), "--out", str(page), "--json"], capsys
    )
    assert code == 0, err
    assert [s["kind"] for s in json.loads(out)["sections"]] == ["weigh"]


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (["--skip", "everything"], "unknown step 'everything'"),
        (["--balance-by", "colour"], "--balance-by"),
        (["--fraction", "2"], "--fraction"),
        (["--probe-seeds", "1"], "--probe-seeds must be at least 2"),
        (["--probe-price", "-1"], "--probe-price must be a positive number"),
    ],
)
def test_plan_bad_options_exit_2_before_any_work(tiny_model_dir, tmp_path, capsys, extra, fragment):
    code, _, err = run_main(_args(tiny_model_dir, tmp_path, *extra), capsys)
    assert code == 2 and fragment in err
    assert not (tmp_path / "plan").exists()


def test_plan_selects_by_the_evidence(tiny_model_dir, tmp_path, capsys):
    """Default: a balanced random draw; --label-noise: G-SNR's shrinkage form (docs/select.md)."""
    args = [a for a in _args(tiny_model_dir, tmp_path, "--skip", "estimate,weigh")]
    i = args.index("--select-method")
    del args[i : i + 2]
    code, out, err = run_main(args, capsys)
    assert code == 0, err
    plan = json.loads(out)
    assert (tmp_path / "plan" / "select" / "result-random.json").exists()
    examples = next(a for a in plan["answers"] if a["key"] == "examples")
    assert examples["answer"]["text"].startswith("a random 6 of 24, balanced by")
    from dataplan.workflows.plan import PlanConfig

    noisy = PlanConfig(data="x.jsonl", out="o", label_noise=True, progress=False)
    assert noisy.selection_method == "gsnr" and noisy.select_config(None).snr_form == "shrinkage"


@pytest.mark.parametrize(
    ("holdout", "fragment"),
    [
        ("", "no examples found"),
        ('{"prompt": "q", "answer": "a"}\n', "--k 2 is larger than the holdout of 1"),
        (
            '{"prompt": "q", "answer": "a"}\n{"question": "q", "answer": "b"}\n',
            'bad-holdout.jsonl:2: field "prompt"',
        ),
    ],
)
def test_plan_bad_holdout_exit_2_before_any_work(
    tiny_model_dir, tmp_path, capsys, holdout, fragment
):
    args = _args(tiny_model_dir, tmp_path)
    bad = tmp_path / "bad-holdout.jsonl"
    bad.write_text(holdout)
    args[args.index("--holdout") + 1] = str(bad)
    code, _, err = run_main(args, capsys)
    assert code == 2 and fragment in err and str(bad) in err, err
    assert not (tmp_path / "plan").exists()  # refused before the estimate ran


def test_plan_holdout_repeating_a_pool_prompt_fails_before_any_work(
    tiny_model_dir, tmp_path, capsys
):
    """An example whose prompt the holdout repeats has one demonstration fewer (never its own):
    with k = 2 and a two-example holdout, the plan refuses before the estimate runs."""
    args = _args(tiny_model_dir, tmp_path)
    pool = Path(args[args.index("--data") + 1])
    first = json.loads(pool.read_text().splitlines()[0])
    bad = tmp_path / "bad-holdout.jsonl"
    rows = [{"prompt": first["prompt"], "answer": "a"}, {"prompt": "other", "answer": "b"}]
    bad.write_text("".join(json.dumps(r) + "\n" for r in rows))
    args[args.index("--holdout") + 1] = str(bad)
    code, _, err = run_main(args, capsys)
    assert code == 2 and "fewer than --k 2 demonstrations" in err and str(bad) in err, err
    assert not (tmp_path / "plan").exists()
