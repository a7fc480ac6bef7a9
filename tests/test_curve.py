"""`dataplan curve` on a tiny random model: training, evaluation, cache and resume, outputs."""

from __future__ import annotations

import json

import pytest

from dataplan.compute.option_scoring import option_predictions, sequence_logprobs
from dataplan.data.formatting import PromptFormatter
from dataplan.data.loading import Example
from dataplan.errors import ConfigError
from dataplan.evaluation.metrics import majority_baseline, majority_share, token_f1
from dataplan.training import TrainSettings, train
from dataplan.workflows.curve import CurveConfig, measure_curve, training_subset

WORDS = ["red", "blue", "green", "cat"]


def _task_file(path, n=40, choices=True):
    with path.open("w") as fh:
        for i in range(n):
            rec = {"id": f"e{i}", "prompt": f"Colour {i}?", "answer": WORDS[i % 4]}
            if choices:
                rec["choices"] = WORDS
            fh.write(json.dumps(rec) + "\n")
    return path


def test_token_f1_and_majorities():
    assert token_f1("The red cat", "red cat") == 1.0
    assert token_f1("red dog", "red cat") == pytest.approx(0.5)
    assert token_f1("", "") == 1.0 and token_f1("x", "") == 0.0
    assert majority_share(["a", "A.", "b", "a"]) == 0.75
    assert majority_baseline(["x", "x", "y"], ["x", "y", "y", "x"]) == ("x", 0.5)


def test_option_scoring_matches_manual_logprob(char_tokenizer, tiny_llama):
    import torch

    fmt = PromptFormatter(char_tokenizer)
    ex = Example(id="1", prompt="pick", answer="ab", choices=("ab", "b", "abc"))
    enc = fmt.encode("pick", "abc")
    ((logp, count),) = sequence_logprobs(tiny_llama, [enc], char_tokenizer.pad_token_id)
    ids = torch.tensor([enc.input_ids(with_end=True)])
    with torch.no_grad():
        lp = torch.log_softmax(tiny_llama(input_ids=ids).logits[0, :-1], -1)
    start = len(enc.prompt_ids) - 1
    manual = sum(lp[t, ids[0, t + 1]].item() for t in range(start, ids.shape[1] - 1))
    assert logp == pytest.approx(manual, abs=1e-4) and count == 4
    pred = option_predictions(tiny_llama, fmt, [ex, ex], char_tokenizer.pad_token_id)
    assert pred[0] == pred[1] and pred[0] in ex.choices


def test_training_lowers_loss_and_keeps_end_token(char_tokenizer, tiny_llama):
    fmt = PromptFormatter(char_tokenizer)
    examples = [Example(id=str(i), prompt=f"Colour {i}?", answer=WORDS[i % 2]) for i in range(8)]
    enc = [fmt.encode(e.prompt, e.answer) for e in examples]
    assert enc[0].labels(with_end=True)[-1] == char_tokenizer.eos_token_id
    settings = TrainSettings(learning_rate=5e-3, batch_size=4, min_steps=30, max_steps=30, lora_r=4)
    result = train(tiny_llama, examples, fmt, settings, seed=0)
    model, log = result.model, result.log()
    assert log["steps"] == 30
    losses = [loss for _, loss in log["loss_curve"]]
    assert losses[-1] < losses[0]
    model.unload()


def test_steps_rule_and_settings_validation():
    s = TrainSettings(batch_size=8, epochs=3, min_steps=20, max_steps=300)
    assert (s.steps_for(16), s.steps_for(256), s.steps_for(2000)) == (20, 96, 300)
    with pytest.raises(ConfigError):
        TrainSettings(method="qlora")
    with pytest.raises(ConfigError):
        TrainSettings(min_steps=10, max_steps=5)


def test_subsets_are_nested_and_seeded():
    pool = [Example(id=str(i), prompt="p", answer="a") for i in range(50)]
    small, big = training_subset(pool, 8, 0), training_subset(pool, 16, 0)
    assert [e.id for e in small] == [e.id for e in big[:8]]
    assert [e.id for e in training_subset(pool, 8, 1)] != [e.id for e in small]


def test_curve_end_to_end_with_cache_resume(tiny_model_dir, tmp_path, monkeypatch):
    data = _task_file(tmp_path / "task.jsonl")
    settings = TrainSettings(learning_rate=5e-3, batch_size=4, min_steps=4, max_steps=4, lora_r=4)
    cfg = dict(
        model=str(tiny_model_dir),
        data=str(data),
        budgets=(0, 4, 8),
        seeds=(0, 1),
        train=settings,
        max_test=8,
        max_new_tokens=3,
        out_dir=str(tmp_path / "out"),
        cache=str(tmp_path / "cache"),
        progress=False,
    )
    summary = measure_curve(CurveConfig(**cfg))
    assert summary["n_test"] == 8 and summary["n_pool"] == 20 and summary["n_max"] == 8
    assert set(summary["auc"]) == {"exact_match", "token_f1", "loglik_accuracy"}
    assert all(0.0 <= v <= 1.0 for v in summary["auc"].values())
    assert len(list((tmp_path / "cache").glob("*.json"))) == 5  # n=0 once, 2 budgets x 2 seeds
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert set(results) == {"0", "4", "8"} and "loglik_accuracy" in results["4"]
    assert (tmp_path / "out" / "curve.png").exists()

    def boom(*a, **k):
        raise AssertionError("recomputed a cached point")

    monkeypatch.setattr("dataplan.workflows.curve.run_point", boom)
    again = measure_curve(CurveConfig(**cfg))
    assert again["curve"] == summary["curve"]


def test_curve_rejects_budget_beyond_pool(tmp_path):
    data = _task_file(tmp_path / "task.jsonl", n=20)
    with pytest.raises(ConfigError, match="exceeds the training pool of 10"):
        measure_curve(CurveConfig(model="m", data=str(data), budgets=(0, 16), progress=False))


def test_leave_one_out_scores_by_hand():
    import numpy as np

    from dataplan.maths.forecast import leave_one_out_scores

    x = np.array([0.1, 0.4, 0.5, 0.9, 0.7])
    y = 0.5 * x + 0.2 + np.array([0.01, -0.02, 0.0, 0.015, -0.01])
    res = leave_one_out_scores(x, y)
    keep = np.arange(5) != 2
    slope, intercept = np.polyfit(x[keep], y[keep], 1)
    assert res["predictions"][2] == pytest.approx(slope * x[2] + intercept)
    assert res["spearman"] == pytest.approx(1.0) and res["mae"] < 0.03
    assert res["in_sample_spearman"] == pytest.approx(1.0)  # y rises with x, noise too small


def test_leave_one_out_correlation_is_negative_without_signal():
    """The documented trap: x unrelated to y (in-sample ρ = 0 exactly here) still gives a
    strongly negative leave-one-out Spearman, which is why the in-sample ρ is reported too."""
    import numpy as np

    from dataplan.maths.forecast import leave_one_out_scores

    x = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    y = np.array([0.3, 0.5, 0.1, 0.1, 0.5, 0.3])  # symmetric: no monotone relation to x
    res = leave_one_out_scores(x, y)
    assert res["in_sample_spearman"] == pytest.approx(0.0, abs=1e-12)
    assert res["in_sample_p"] > 0.9
    assert res["spearman"] < -0.5


def test_calibrate_end_to_end_on_tiny_tasks(tiny_model_dir, tmp_path, capsys):
    from test_cli import run_main

    files = []
    for k in range(3):
        path = tmp_path / f"task{k}.jsonl"
        with path.open("w") as fh:
            for i in range(40):
                fh.write(
                    json.dumps(
                        {
                            "id": f"e{i}",
                            "prompt": f"T{k} item {i}?",
                            "answer": WORDS[(i * (k + 1)) % 4],
                            "choices": WORDS,
                        }
                    )
                    + "\n"
                )
        files.append(str(path))
    code, out, err = run_main(
        [
            "calibrate",
            "--name",
            "tiny",
            "--model",
            str(tiny_model_dir),
            "--data",
            ",".join(files),
            "--budgets",
            "0,4,8",
            "--min-steps",
            "2",
            "--max-steps",
            "3",
            "--max-test",
            "6",
            "--max-pool",
            "20",
            "--n-labeled",
            "2",
            "--min-gain",
            "-1",
            "--out-dir",
            str(tmp_path / "study"),
            "--cache",
            str(tmp_path / "cache"),
            "--json",
        ],
        capsys,
    )
    assert code == 0, err
    d = json.loads(out)
    assert d["n_tasks"] == 3 and d["calibration"]["n_max"] == 8
    assert {"cos_low", "mean_grad_norm", "mean_confidence_pool", "cos_random"} <= set(
        d["leave_one_task_out"]
    )
    assert all(r["auc_metric"] == "loglik_accuracy" for r in d["tasks"])
    study = tmp_path / "study"
    for name in ("calibration.json", "study.json", "table.md", "scatter.png"):
        assert (study / name).exists()
    saved = json.loads((study / "calibration.json").read_text())
    # The held-out Spearman the file carries, recomputed from the table's own rows.
    from dataplan.maths.forecast import leave_one_out_scores

    fit = [r for r in d["tasks"] if r["in_fit"]]
    loo = leave_one_out_scores([r["cos_low"] for r in fit], [r["auc"] for r in fit])
    assert saved["extra"]["loo_spearman"] == pytest.approx(loo["spearman"], nan_ok=True)
    assert saved["coef"] == pytest.approx(d["calibration"]["coef"])
    # The calibration file is accepted by predict.
    code, out, _ = run_main(
        [
            "predict",
            "--cos-low",
            "0.5",
            "--calibration",
            str(study / "calibration.json"),
            "--target",
            "0.5",
            "--json",
        ],
        capsys,
    )
    assert code == 0 and json.loads(out)["calibration"] == "tiny"


def test_option_logprobs_batched_equal_one_by_one(char_tokenizer):
    import torch

    from conftest import make_tiny_llama

    model = make_tiny_llama(len(char_tokenizer), dtype=torch.float64)
    fmt = PromptFormatter(char_tokenizer)
    enc = [
        fmt.encode(p, a)
        for p, a in [("a", "xyz"), ("a much longer prompt", "q"), ("mid size", "hello there")]
    ]
    batched = sequence_logprobs(model, enc, char_tokenizer.pad_token_id, batch_size=3)
    single = [sequence_logprobs(model, [e], char_tokenizer.pad_token_id)[0] for e in enc]
    for (b, nb), (s, ns) in zip(batched, single, strict=True):
        assert nb == ns and b == pytest.approx(s, rel=1e-9)


def test_shared_prompt_scoring_equals_full_sequences(char_tokenizer):
    import torch

    from conftest import make_tiny_llama
    from dataplan.compute.option_scoring import shared_prompt_option_logprobs
    from dataplan.data.formatting import Encoded

    model = make_tiny_llama(len(char_tokenizer), dtype=torch.float64)
    fmt = PromptFormatter(char_tokenizer)
    prompt = fmt.prompt_ids("which colour?")
    options = [[*fmt.answer_ids(c), *fmt.end_ids] for c in ("red", "blue", "a long option", "x")]
    fast = shared_prompt_option_logprobs(model, prompt, options, char_tokenizer.pad_token_id)
    ref = sequence_logprobs(
        model, [Encoded(tuple(prompt), tuple(o[:-1]), tuple(o[-1:])) for o in options], 0
    )
    for (f, nf), (r, nr) in zip(fast, ref, strict=True):
        assert nf == nr and f == pytest.approx(r, rel=1e-9)


def test_batched_prompts_option_scoring_equals_full_sequences(char_tokenizer):
    import torch

    from conftest import make_tiny_llama
    from dataplan.compute.option_scoring import batched_option_logprobs
    from dataplan.data.formatting import Encoded

    model = make_tiny_llama(len(char_tokenizer), dtype=torch.float64)
    fmt = PromptFormatter(char_tokenizer)
    prompts = [
        fmt.prompt_ids(p) for p in ("short?", "a considerably longer question here?", "mid one?")
    ]
    options = [
        [[*fmt.answer_ids(c), *fmt.end_ids] for c in choices]
        for choices in (("red", "blue"), ("x", "a long option", "yz"), ("only",))
    ]
    fast = batched_option_logprobs(model, prompts, options, char_tokenizer.pad_token_id)
    for p, opts, got in zip(prompts, options, fast, strict=True):
        enc = [Encoded(tuple(p), tuple(o[:-1]), tuple(o[-1:])) for o in opts]
        ref = sequence_logprobs(model, enc, 0)
        for (f, nf), (r, nr) in zip(got, ref, strict=True):
            assert nf == nr and f == pytest.approx(r, rel=1e-9)


def test_calibrate_leaves_out_tasks_without_learning_gain(tmp_path):
    from dataplan.workflows.calibrate import CalibrateConfig, learning_gain, summarise
    from dataplan.workflows.estimate import EstimateConfig

    def row(task, curve, majority, cos, auc):
        return {
            "task": task,
            "auc": auc,
            "auc_metric": "loglik_accuracy",
            "cos_low": cos,
            "mean_grad_norm": 1.0 + cos,
            "mean_confidence_pool": 0.5,
            "cos_random": cos / 2,
            "majority_accuracy": majority,
            "curve": {
                str(n): {"loglik_accuracy": v} for n, v in zip((0, 16, 64), curve, strict=True)
            },
        }

    rows = [
        row("learns", (0.2, 0.5, 0.8), 0.3, 0.6, 0.5),
        row("learns-too", (0.1, 0.3, 0.6), 0.2, 0.7, 0.45),
        row("learns-three", (0.3, 0.6, 0.7), 0.25, 0.5, 0.6),
        row("collapsed", (0.5, 0.52, 0.51), 0.5, 0.9, 0.75),  # gain 0.02 over majority
    ]
    assert learning_gain(rows[0]) == pytest.approx(0.5)
    assert learning_gain(rows[3]) == pytest.approx(0.02)
    curve = CurveConfig(model="m", task="a", budgets=(0, 16, 64))
    cfg = CalibrateConfig(
        name="t",
        tasks=("a", "b", "c"),
        curve=curve,
        estimate=EstimateConfig(model="m", task="a"),
        out_dir=str(tmp_path),
    )
    result = summarise(cfg, [dict(r) for r in rows], tmp_path)
    assert result["n_tasks"] == 3 and result["n_tasks_left_out"] == 1
    assert [r["in_fit"] for r in result["tasks"]] == [True, True, True, False]
    assert "| collapsed |" in (tmp_path / "table.md").read_text()
    cfg.min_gain = None
    assert summarise(cfg, [dict(r) for r in rows], tmp_path)["n_tasks"] == 4
    cfg.min_gain = 0.45
    with pytest.raises(ConfigError, match="only 1 of 4 tasks"):
        summarise(cfg, [dict(r) for r in rows], tmp_path)


def test_auto_metric_uses_options_for_classification_and_choice_only():
    from dataplan.evaluation import headline_metric as auto_metric

    aucs = {"exact_match": 0.5, "token_f1": 0.5, "loglik_accuracy": 0.7}
    assert auto_metric(aucs, "exact_match", "classification") == "loglik_accuracy"
    assert auto_metric(aucs, "exact_match", "multiple_choice") == "loglik_accuracy"
    assert auto_metric(aucs, "exact_match", "arithmetic") == "exact_match"
    assert auto_metric(aucs, "token_f1", None) == "loglik_accuracy"  # a data file with options
    assert auto_metric({"token_f1": 0.4}, "token_f1", "generation") == "token_f1"


def test_calibrate_with_probes_fits_the_probe_calibration(
    tiny_model_dir, tmp_path, capsys, monkeypatch
):
    from test_cli import run_main

    files = []
    for k in range(5):
        path = tmp_path / f"task{k}.jsonl"
        with path.open("w") as fh:
            for i in range(80):
                row = {
                    "id": f"e{i}",
                    "prompt": f"T{k} item {i}?",
                    "answer": WORDS[(i * (k + 1)) % 4],
                    "choices": WORDS,
                }
                fh.write(json.dumps(row) + "\n")
        files.append(str(path))
    args = [
        "calibrate",
        "--name",
        "tiny",
        "--model",
        str(tiny_model_dir),
        "--data",
        ",".join(files),
        "--budgets",
        "0,4",
        "--min-steps",
        "2",
        "--max-steps",
        "2",
        "--lora-r",
        "2",
        "--max-test",
        "4",
        "--max-pool",
        "80",
        "--n-labeled",
        "6",
        "--min-gain",
        "-1",
        "--probe-steps",
        "1,2",
        "--probe-seeds",
        "2",
        "--probe-validation",
        "2",
        "--out-dir",
        str(tmp_path / "study"),
        "--cache",
        str(tmp_path / "cache"),
        "--json",
    ]
    code, out, err = run_main(args, capsys)
    assert code == 0, err
    d = json.loads(out)
    probe = d["probe"]
    assert [row["c"] for row in probe["by_depth"]] == [1.0, 2.0]
    assert probe["feature"] == "val_loss_drop" and probe["seeds"] == 2
    saved = json.loads((tmp_path / "study" / "probe-calibration.json").read_text())
    assert saved["n_tasks"] == 5 and saved["n_seeds"] == 2
    assert saved["probe"]["validation"] == 2  # how its probes were made travels with it
    # The probe calibration is the maths applied to the probes the study recorded.
    import numpy as np

    from dataplan.maths.probe_calibration import fit_probe_calibration

    rows = [r for r in d["tasks"] if r["in_fit"]]
    features = np.array(
        [
            [
                [
                    next(
                        x["val_loss_drop"]
                        for x in r["probe"]["rows"]
                        if x["seed"] == s and x["c"] == c
                    )
                    for c in (1, 2)
                ]
                for s in (0, 1)
            ]
            for r in rows
        ]
    )
    direct = fit_probe_calibration(features, [r["auc"] for r in rows], [1, 2])
    assert probe["by_depth"][1]["probe_loo_mae"] == pytest.approx(direct.depths[1].loo_mae)
    assert (tmp_path / "study" / "probes").is_dir()
    # CoS-Low's own 80%-interval coverage beside the probes', each task's variance from the
    # others' leave-one-task-out residuals; the CoS-Low convention recorded with the joint fit
    from dataplan.maths.probe_calibration import interval_coverage, others_variance

    static = np.array([r["predicted_auc_loo"] - r["auc"] for r in rows])
    assert probe["static_coverage"] == pytest.approx(
        interval_coverage(static, others_variance(static), 0.8)
    )
    joint = json.loads((tmp_path / "study" / "probe-cos-low-calibration.json").read_text())
    assert joint["tokenization"] == probe["tokenization"] == "split"
    assert saved["tokenization"] is None  # the probe feature alone takes no CoS-Low
    # the convention, and the tasks whose examples tokenise differently under the other one
    # (none: a character-level tokenizer never merges across the prompt/answer boundary)
    assert d["tokenization"] == {"convention": "split", "tasks_that_differ": []}
    assert all(r["tokenization_differs"] == 0 for r in d["tasks"])
    # The table form, also for a study whose probe + CoS-Low fit could not be made.
    code, out, err = run_main(args[:-1], capsys)
    assert code == 0 and "probe calibration" in out, err
    import copy

    fewer = copy.deepcopy(d)
    fewer["probe"]["probe_and_cos_low_error"] = "4 tasks: a leave-one-task-out fit of 3"
    for row in fewer["probe"]["by_depth"]:
        row["probe_and_cos_low_loo_mae"] = row["probe_and_cos_low_coverage"] = None
    with monkeypatch.context() as patch:
        patch.setattr("dataplan.workflows.calibrate.calibrate", lambda cfg, **_: fewer)
        code, out, err = run_main(args[:-1], capsys)
    assert code == 0 and "no probe + CoS-Low fit: 4 tasks" in " ".join(out.split()), err
    assert [t["task"] for t in probe["tasks"]] == [r["task"] for r in rows]
    # The phase diagram of the study: every task placed (or said to be undetermined).
    code, out, err = run_main(
        ["probe", "diagram", "--study", str(tmp_path / "study"), "--json"], capsys
    )
    assert code == 0, err
    diagram = json.loads(out)
    assert sum(diagram["counts"].values()) == 5
    assert (tmp_path / "study" / "phase-diagram.png").stat().st_size > 1000
    code, out, err = run_main(["probe", "diagram", "--study", str(tmp_path)], capsys)
    assert code == 2 and "not a calibration study folder" in err
    damaged = copy.deepcopy(d)  # a hand-edited study: a task point without its L_int
    damaged["probe"]["tasks"][1] = {"task": "t", "alpha": 0.5}
    (tmp_path / "damaged").mkdir()
    (tmp_path / "damaged" / "study.json").write_text(json.dumps(damaged))
    code, out, err = run_main(["probe", "diagram", "--study", str(tmp_path / "damaged")], capsys)
    assert code == 2 and 'field "probe.tasks[1]": not a probe task point' in err, err
    assert saved["tasks"] == probe["tasks"]  # the calibration carries its tasks' points
    # A bad feature name is refused before anything runs.
    code, _, err = run_main([*args[:-1], "--probe-feature", "nope", "--json"], capsys)
    assert code == 2 and "--probe-feature must be one of" in err
    # Tasks the fit leaves out are not probed: a --min-gain above the lowest gain.
    gains = {r["task"]: r["learning_gain"] for r in d["tasks"]}
    distinct = sorted(set(gains.values()))
    assert len(distinct) >= 2 and distinct[-1] >= 0, gains  # else this check says nothing
    threshold = max((distinct[0] + distinct[1]) / 2, 0.0)  # a negative one turns the filter off
    kept = sorted(t for t, g in gains.items() if g >= threshold)
    again = [*args]
    again[args.index("--min-gain") + 1] = str(threshold)
    again[args.index("--out-dir") + 1] = str(tmp_path / "study2")
    code, out, err = run_main(again, capsys)
    if len(kept) < 3:  # too few left to fit: refused, after probing only the kept ones
        assert code == 2 and f"only {len(kept)} of 5 tasks gain" in err
    else:
        assert code == 0, err
        assert sorted(t["task"] for t in json.loads(out)["probe"]["tasks"]) == kept
    probed = sorted(p.name for p in (tmp_path / "study2" / "probes").iterdir())
    assert probed == kept and 0 < len(kept) < 5


def test_calibration_tasks_must_be_distinct():
    """A task given twice (or a --data file named like a task) would sit in its own
    leave-one-task-out fit."""
    from dataplan.errors import ConfigError
    from dataplan.workflows.calibrate import CalibrateConfig

    with pytest.raises(ConfigError, match=r"must be distinct .* a appear more than once"):
        CalibrateConfig(name="x", tasks=("a", "b"), data=("files/a.jsonl",))
