"""`dataplan report`: one self-contained page from real run folders — tiny-model runs of weigh,
train and select made here, and the committed study folders (calibrate, curve, scaling fit) —
checked as text and, where Chromium is installed (.ci/run installs it), in a real browser."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
from pathlib import Path

import pytest

from test_cli import run_main
from test_weigh import _files

ROOT = Path(__file__).resolve().parent.parent
STUDY = ROOT / "studies" / "smollm2-135m-instruct"
QUESTIONS = (
    "How much data does this task need?",
    "Which examples should we train on?",
    "How should we weight them?",
    "What does a compute budget buy?",
    "How far can we trust the forecast?",
)


class _NoCapsys:
    """run_main's capsys outside a test function (a module-scoped fixture has none)."""

    def readouterr(self) -> tuple[str, str]:
        return "", ""


@pytest.fixture(scope="module")
def run_folders(tiny_model_dir, tmp_path_factory):
    """Run folders of every kind the report reads: tiny-model weigh, train and select runs made
    through the CLI, and copies of the committed calibration study, curve and scaling fit."""
    tmp = tmp_path_factory.mktemp("runs")
    data, holdout = _files(tmp)
    model = ["--model", str(tiny_model_dir)]
    commands = [
        ["weigh", *model, "--data", str(data), "--holdout", str(holdout), "--k", "2",
         "--out", str(tmp / "w.parquet"), "--run-dir", str(tmp / "weigh")],
        ["train", *model, "--data", str(data), "--holdout", str(holdout), "--weighting", "ica",
         "--k", "2", "--min-steps", "2", "--max-steps", "2", "--batch-size", "4", "--lora-r", "2",
         "--out", str(tmp / "adapter")],
        ["select", *model, "--data", str(data), "--method", "loss", "--k", "4",
         "--out", str(tmp / "subset.jsonl"), "--run-dir", str(tmp / "select")],
    ]  # fmt: skip
    for args in commands:  # output is not read: a failure shows in pytest's captured stderr
        code, _, _ = run_main([*args, "--quiet"], _NoCapsys())
        assert code == 0, args[0]
    shutil.copytree(
        STUDY / "study", tmp / "calibrate", ignore=shutil.ignore_patterns("curves", "estimates")
    )
    shutil.copytree(STUDY / "seeds" / "arithmetic_2_digit_addition", tmp / "curve")
    fit = ROOT / "studies/scaling-smollm2/fit-arithmetic_2_digit_addition.json"
    shutil.copy(fit, tmp / "fit.json")
    shutil.copy(fit.with_suffix(".png"), tmp / "fit.png")  # the plot beside it
    return {
        "weigh": tmp / "weigh",
        "train": tmp / "adapter-run",
        "select": tmp / "select",
        "calibrate": tmp / "calibrate",
        "curve": tmp / "curve",
        "scaling fit": tmp / "fit.json",
    }


def _build(run_folders, tmp_path, capsys, *names):
    out = tmp_path / "page" / "report.html"
    paths = [str(run_folders[n]) for n in names]
    code, stdout, err = run_main(["report", *paths, "--out", str(out), "--json"], capsys)
    assert code == 0, err
    return out, json.loads(stdout)


def test_report_answers_each_question_from_the_right_run(run_folders, tmp_path, capsys):
    out, plan = _build(run_folders, tmp_path, capsys, *run_folders)
    answers = {a["key"]: a for a in plan["answers"]}
    assert [a["question"] for a in plan["answers"]] == list(QUESTIONS)
    assert answers["data"]["from"] == str(run_folders["curve"])
    assert answers["examples"]["answer"]["text"].startswith("the 4 best of 12 by loss")
    assert answers["weights"]["from"] == str(run_folders["train"])  # train before weigh
    assert "ica weights" in answers["weights"]["answer"]["text"]
    assert answers["compute"]["answer"]["text"].startswith("P = ")
    assert "MAE of AUC′ 0.135" in answers["trust"]["answer"]["text"]  # the committed study
    # the command behind each tiny-model run is the one that made it
    train = next(s for s in plan["sections"] if s["kind"] == "train")
    assert (
        train["command"].startswith("dataplan train --model")
        and "--weighting ica" in train["command"]
    )
    assert json.loads((out.parent / "plan.json").read_text())["answers"] == plan["answers"]
    select = next(s for s in plan["sections"] if s["kind"] == "select")
    captions = [f["caption"] for f in select["figures"]]
    assert captions[0].startswith("share of each label") and captions[1].startswith("scores")


def test_report_page_is_self_contained(run_folders, tmp_path, capsys):
    out, plan = _build(run_folders, tmp_path, capsys, *run_folders)
    html = out.read_text(encoding="utf-8")
    assert "<script" not in html.lower()
    assert not re.search(r"""(src|href)=["'](?!data:|#)""", html)  # no file or network refs
    figures = sum(len(s["figures"]) for s in plan["sections"])
    assert figures >= 6 and html.count('src="data:image/png;base64,') == figures
    for question in QUESTIONS:
        assert question in html
    assert "caution: the calibration&#39;s slope is not positive" in html  # escaped text


def test_unanswered_questions_say_so(run_folders, tmp_path, capsys):
    _, plan = _build(run_folders, tmp_path, capsys, "weigh")
    missing = [a["key"] for a in plan["answers"] if a["answer"] is None]
    assert missing == ["data", "examples", "compute", "trust"]


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (lambda p: p.mkdir(), "not the output of a dataplan command"),
        (lambda p: None, "no such run folder"),
        (lambda p: (p.mkdir(), (p / "study.json").write_text("{oops")), "not valid JSON"),
        (lambda p: (p.mkdir(), (p / "study.json").write_text("[]")), "cannot read"),
    ],
)
def test_bad_run_folder_exit_2(tmp_path, capsys, make, fragment):
    folder = tmp_path / "run"
    make(folder)
    code, _, err = run_main(["report", str(folder), "--out", str(tmp_path / "r.html")], capsys)
    assert code == 2 and fragment in err and str(folder) in err
    assert not (tmp_path / "r.html").exists()


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def plan_page(tiny_model_dir, tmp_path_factory):
    """The demo-sized page `dataplan plan` writes: a tiny-model plan with every step — the
    estimate probing to depth 2 under a probe calibration, the selection, ICA weights and a
    scaling plan from the committed scaling runs."""
    from dataplan.io import write_json
    from test_estimate_probe import _calibration
    from test_plan import RUNS, _args

    tmp = tmp_path_factory.mktemp("plan")
    write_json(tmp / "probe-cal.json", _calibration().as_dict())
    args = _args(tiny_model_dir, tmp, "--scaling-runs", str(RUNS), "--compute-tokens", "24000")
    args[args.index("--probe") + 1] = "1,2"
    args[args.index("--n-labeled") + 1] = "12"  # 8 validate the probes, 4 train them
    args[args.index("--low-fraction") + 1] = "0.5"
    args += ["--probe-calibration", str(tmp / "probe-cal.json"), "--probe-seeds", "2"]
    code, _, _ = run_main([*args, "--quiet"], _NoCapsys())
    assert code == 0  # a failure shows in pytest's captured stderr
    return tmp / "plan" / "report.html"


def _require_chromium() -> None:
    """Skip where Chromium is missing — except under .ci/run, which installs it and sets
    DATAPLAN_REQUIRE_BROWSER=1: there a missing browser fails the test."""
    import os

    if CHROMIUM is None or importlib.util.find_spec("playwright") is None:
        if os.environ.get("DATAPLAN_REQUIRE_BROWSER") == "1":
            pytest.fail("Chromium and playwright are required (DATAPLAN_REQUIRE_BROWSER=1)")
        pytest.skip("Chromium or playwright is not installed (.ci/run installs them)")


@pytest.mark.parametrize("page_of", ["run folders", "plan"])
def test_report_in_a_real_browser(page_of, request, tmp_path, capsys):
    _require_chromium()
    from playwright.sync_api import sync_playwright

    if page_of == "plan":
        out = request.getfixturevalue("plan_page")
    else:
        run_folders = request.getfixturevalue("run_folders")
        capsys.readouterr()  # what making the folders printed, here: not the report's JSON
        out, _ = _build(run_folders, tmp_path, capsys, *run_folders)
    args = [
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ]
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)
        page = browser.new_page(viewport={"width": 1100, "height": 1400})
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        failed: list[str] = []
        page.on("requestfailed", lambda r: failed.append(r.url))
        page.goto(out.as_uri())
        page.wait_for_load_state("load")
        images = page.eval_on_selector_all(
            "img", "imgs => imgs.map(i => [i.complete, i.naturalWidth, i.naturalHeight])"
        )
        text = page.inner_text("body")
        answers = page.eval_on_selector_all(
            "table.answers tbody tr",
            "rows => rows.map(r => [r.cells[0].innerText, r.querySelector('td.none') === null,"
            " r.cells[1].innerText.trim()])",
        )
        page_alts = page.eval_on_selector_all("img", "imgs => imgs.map(i => i.alt)")
        shot = page.screenshot(full_page=False)
        browser.close()
    assert errors == [] and failed == []
    assert images and all(done and w > 0 and h > 0 for done, w, h in images)
    assert [q for q, _, _ in answers] == list(QUESTIONS)  # the five questions, in order
    assert all(answered and answer for _, answered, answer in answers), answers  # all answered
    assert "not answered" not in text
    if page_of == "plan":  # the estimate's curve with its band and the phase diagram are drawn
        alts = page_alts
        assert any("phase diagram" in a for a in alts) and any(
            "forecast curve" in a for a in alts
        ), alts
    _assert_not_blank(shot)


def _assert_not_blank(png: bytes) -> None:
    import io

    import numpy as np
    from PIL import Image

    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=float)
    assert pixels.std() > 10  # text, tables and plots, not one colour
    assert (pixels < 128).mean() > 0.01  # some dark ink on the page


def test_a_skipped_probe_is_said_once(tmp_path):
    """When `estimate --probe auto` decides not to probe, the trust answer gives the interval and
    "how sure" the reason — not the same reason twice."""
    from dataplan.reporting.readers import read_estimate

    (tmp_path / "config.json").write_text(json.dumps({"model": "m"}))
    reason = "the calibration's seed variance does not decay with depth"
    result = {
        "forecast": {"auc": 0.3, "auc_interval": [0.1, 0.5], "interval_level": 0.8},
        "probe": {"mode": "auto", "decision": reason, "skipped": reason},
    }
    (tmp_path / "result.json").write_text(json.dumps(result))
    trust = read_estimate(tmp_path).answers["trust"]
    assert reason not in trust.text and trust.text.startswith("forecast interval [0.100, 0.500]")
    assert trust.uncertainty == f"not probed: {reason}"


def test_the_trust_answer_gives_the_calibrations_track_record(tmp_path):
    """Without a probe, "how far to trust" gives the interval and how far the calibration missed
    held-out tasks; with a combined (probed) forecast the static track record is left out."""
    from dataplan.reporting.readers import read_estimate

    (tmp_path / "config.json").write_text(json.dumps({"model": "m"}))
    forecast = {
        "auc": 0.3,
        "auc_interval": [0.1, 0.5],
        "interval_level": 0.8,
        "calibration_loo_mae": 0.1354,
        "calibration_tasks": 13,
    }
    (tmp_path / "result.json").write_text(json.dumps({"forecast": forecast}))
    trust = read_estimate(tmp_path).answers["trust"].text
    assert trust.endswith("leave-one-task-out AUC′ error 0.135 on average over 13 tasks")
    combined = {"auc": 0.35, "interval": [0.2, 0.5]}
    probe = {"mode": "auto", "decision": "probe 16 steps", "combined": combined}
    (tmp_path / "result.json").write_text(json.dumps({"forecast": forecast, "probe": probe}))
    assert "leave-one-task-out" not in read_estimate(tmp_path).answers["trust"].text
