"""Scaling-law fits: recovery of known parameters, degenerate inputs, form comparison."""

from __future__ import annotations

import numpy as np
import pytest

from dataplan.maths.scaling import ScalingInputError, ScalingLaw, compare_forms


def synthetic_runs(form="volume", noise=0.005, seed=0, model_sizes=(1.35e8,)):
    rng = np.random.default_rng(seed)
    n = np.repeat([32, 64, 128, 256, 512, 1024], 4 * len(model_sizes))
    mean_tokens = rng.choice([40.0, 80.0, 120.0, 200.0], size=n.size)
    m = np.tile(np.repeat(model_sizes, 4), 6)
    v = n * mean_tokens
    if form == "volume":
        perf = 0.02 * v**0.25 * (m / 1e8) ** 0.1 + 0.05
    else:  # examples only
        perf = 0.05 * n**0.3 + 0.1
    perf = perf + rng.normal(0, noise, size=n.size)
    return {"n_examples": n, "mean_tokens": mean_tokens, "model_params": m, "performance": perf}


def test_recovers_known_volume_law_with_single_model_size():
    runs = synthetic_runs()
    law = ScalingLaw("volume", n_bootstrap=60, seed=1).fit(runs)
    p = law.params_
    assert p["beta"] == pytest.approx(0.25, abs=0.03)
    assert p["gamma"] == 0.0 and "γ is not identifiable" in law.notes_[0]
    truth = 0.02 * (1.35e8 / 1e8) ** 0.1
    assert p["A"] == pytest.approx(truth, rel=0.35)
    assert p["E"] == pytest.approx(0.05, abs=0.02)
    lo, hi = law.intervals_["beta"]
    assert lo < 0.25 < hi
    assert law.heldout_["rmse"] < 0.02


def test_recovers_gamma_with_several_model_sizes():
    runs = synthetic_runs(model_sizes=(1.35e8, 3.6e8, 1.7e9), noise=0.002)
    law = ScalingLaw("volume", n_bootstrap=0).fit(runs)
    assert law.params_["gamma"] == pytest.approx(0.1, abs=0.03)
    assert law.params_["beta"] == pytest.approx(0.25, abs=0.03)


def test_prediction_matches_truth_and_roundtrips():
    runs = synthetic_runs(noise=0.001)
    law = ScalingLaw("volume", n_bootstrap=40).fit(runs)
    query = {"n_examples": [100, 2000], "mean_tokens": [50, 100], "model_params": [1.35e8, 1.35e8]}
    truth = 0.02 * (np.array([5000, 200000]) ** 0.25) * 1.35**0.1 + 0.05
    mean, (lo, hi) = law.predict(query, interval=True)
    np.testing.assert_allclose(mean, truth, rtol=0.05)
    assert np.all(lo <= mean) and np.all(mean <= hi)
    again = ScalingLaw.from_dict(law.to_dict())
    np.testing.assert_allclose(again.predict(query), mean)


def test_compare_forms_prefers_the_true_form():
    rows = compare_forms(synthetic_runs(noise=0.002), n_bootstrap=0)
    assert rows[0]["form"] == "volume"
    by = {r["form"]: r for r in rows}
    assert by["volume"]["heldout_rmse"] < by["examples"]["heldout_rmse"]
    rows = compare_forms(synthetic_runs("examples", noise=0.002), n_bootstrap=0)
    assert rows[0]["form"] in ("examples", "chinchilla")


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (
            lambda r: r.update(
                n_examples=np.full_like(r["n_examples"], 64),
                mean_tokens=np.full_like(r["mean_tokens"], 50.0),
            ),
            "same volume",
        ),
        (lambda r: r["mean_tokens"].__setitem__(3, 0.0), "mean_tokens must be positive"),
        (lambda r: r["performance"].__setitem__(2, np.nan), "performance has nan at run 2"),
        (lambda r: [r.__setitem__(k, v[:3]) for k, v in list(r.items())], "3 runs cannot fit"),
        (lambda r: r.pop("model_params"), "missing column"),
        (lambda r: r["n_examples"].__setitem__(0, np.inf), "n_examples has inf at run 0"),
        (
            lambda r: r.update(
                n_examples=np.where(r["n_examples"] < 200, 64, 512),
                mean_tokens=np.full_like(r["mean_tokens"], 50.0),
            ),
            "only 2 distinct values of volume",
        ),
    ],
)
def test_degenerate_inputs_raise(mutate, message):
    runs = {k: np.array(v, dtype=float) for k, v in synthetic_runs().items()}
    mutate(runs)
    with pytest.raises(ScalingInputError, match=message):
        ScalingLaw("volume", n_bootstrap=0).fit(runs)


def test_examples_form_with_all_runs_at_one_n():
    runs = synthetic_runs()
    runs["n_examples"] = np.full_like(runs["n_examples"], 128)
    with pytest.raises(ScalingInputError, match="same n_examples"):
        ScalingLaw("examples", n_bootstrap=0).fit(runs)


def _write_runs(path, runs, strategies=("random", "shortest", "longest", "stratified")):
    import pandas as pd

    frame = pd.DataFrame(runs)
    if "strategy" not in frame:
        frame["strategy"] = [strategies[i % len(strategies)] for i in range(len(frame))]
    frame["task"] = "toy"
    frame["seed"] = 0
    frame.to_csv(path, index=False)
    return path


def test_scaling_cli_fit_and_plan(tmp_path, capsys):
    import json

    from test_cli import run_main

    path = _write_runs(tmp_path / "runs.csv", synthetic_runs())
    code, out, err = run_main(
        [
            "scaling",
            "fit",
            str(path),
            "--form",
            "volume",
            "--bootstrap",
            "40",
            "--out",
            str(tmp_path / "law.json"),
            "--plot",
            str(tmp_path / "fit.png"),
            "--json",
        ],
        capsys,
    )
    assert code == 0, err
    d = json.loads(out)
    assert set(d["params"]) == {"A", "beta", "gamma", "E"} and d["params"]["gamma"] == 0.0
    assert d["intervals"]["beta"][0] < d["params"]["beta"] < d["intervals"]["beta"][1]
    forms = {"volume", "tokens", "examples", "chinchilla", "constant"}
    # the runs hold 4 strategies: every form also with one intercept per strategy
    assert {r["form"] for r in d["comparison"]} == forms | {f"{f}+strategy" for f in forms}
    assert (tmp_path / "fit.png").exists()
    code, out, err = run_main(
        [
            "scaling",
            "plan",
            "--fit",
            str(tmp_path / "law.json"),
            "--compute-tokens",
            "50000",
            "--plot",
            str(tmp_path / "plan.png"),
            "--json",
        ],
        capsys,
    )
    assert code == 0, err
    best = json.loads(out)["best"]
    # β > 0: the best plan spends the budget on unique data (one epoch of nearly C tokens).
    assert 0.9 * 50000 <= best["volume"] <= 50000
    assert best["epochs"] == pytest.approx(50000 / best["volume"])
    assert best["extrapolated"] is False
    assert best["interval"][0] <= best["predicted_performance"] <= best["interval"][1]
    assert (tmp_path / "plan.png").exists()


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (
            "n_examples,mean_tokens,model_params,performance\n64,50,1e8,0.5\n64,50,1e8,0.6\n64,50,1e8,0.55\n64,50,1e8,0.52\n64,50,1e8,0.5\n",
            "same volume",
        ),
        (
            "n_examples,mean_tokens,model_params,performance\n64,-5,1e8,0.5\n",
            "mean_tokens must be positive",
        ),
        (
            "n_examples,mean_tokens,model_params,performance\n64,50,1e8,high\n",
            'runs.csv:2: field "performance": not a number',
        ),
        ("n_examples,mean_tokens,performance\n64,50,0.5\n", 'field "model_params": missing column'),
        (
            "n_examples,mean_tokens,model_params,performance\n64,50,1e8,0.5\n128,50,1e8,0.6\n",
            "cannot fit the 3 free parameters",
        ),
    ],
)
def test_scaling_cli_degenerate_input_exit_2(tmp_path, capsys, content, fragment):
    from test_cli import run_main

    path = tmp_path / "runs.csv"
    path.write_text(content)
    code, out, err = run_main(["scaling", "fit", str(path), "--json"], capsys)
    assert code == 2 and out == ""
    assert fragment in err, err


def test_subsampling_strategies():
    from dataplan.workflows.scaling_runs import subsample

    lengths = np.array([5, 1, 9, 3, 7, 2, 8, 4, 6, 10])
    assert sorted(lengths[subsample(lengths, 3, "shortest", 0)]) == [1, 2, 3]
    assert sorted(lengths[subsample(lengths, 3, "longest", 0)]) == [8, 9, 10]
    strat = lengths[subsample(lengths, 5, "stratified", 0)]
    assert sorted(strat)[0] <= 2 and sorted(strat)[-1] >= 9  # spans the length range
    r1, r2 = subsample(lengths, 4, "random", 1), subsample(lengths, 4, "random", 1)
    assert list(r1) == list(r2) and len(set(r1)) == 4


def test_scaling_runs_end_to_end(tiny_model_dir, tmp_path, capsys):
    import json

    import pandas as pd

    from test_cli import run_main

    data = tmp_path / "task.jsonl"
    data.write_text(
        "".join(
            json.dumps({"prompt": "x" * (1 + i % 9), "answer": "ab"[i % 2], "choices": ["a", "b"]})
            + "\n"
            for i in range(40)
        )
    )
    out = tmp_path / "runs.csv"
    args = [
        "scaling",
        "runs",
        "--model",
        str(tiny_model_dir),
        "--data",
        str(data),
        "--n",
        "4,6,8",
        "--strategies",
        "shortest,longest",
        "--compute-tokens",
        "200",
        "--max-test",
        "4",
        "--cache",
        str(tmp_path / "cache"),
        "--out",
        str(out),
        "--json",
    ]
    code, _, err = run_main(args, capsys)
    assert code == 0, err
    frame = pd.read_csv(out)
    assert len(frame) == 6 and (frame.pool_size == 20).all()  # a file: half is held out for test
    assert {
        "n_examples",
        "mean_tokens",
        "model_params",
        "performance",
        "strategy",
        "tokens_seen",
        "task",
        "seed",
    } <= set(frame.columns)
    short = frame[frame.strategy == "shortest"].mean_tokens.to_numpy()
    long = frame[frame.strategy == "longest"].mean_tokens.to_numpy()
    assert np.all(short < long)
    assert np.all(np.abs(frame.tokens_seen - 200) < frame.mean_tokens * 8)  # ~C per run
    volume = frame.n_examples * frame.mean_tokens
    np.testing.assert_allclose(frame.epochs, frame.tokens_seen / volume)
    assert (frame.metric == "loglik_accuracy").all()
    code, _, _ = run_main(args, capsys)  # resumes from the cache
    assert code == 0 and len(list((tmp_path / "cache").glob("*.json"))) == 6
    # The runs file feeds `scaling fit` as written (text columns such as metric included).
    code, out_json, err = run_main(
        ["scaling", "fit", str(out), "--form", "examples", "--bootstrap", "10", "--json"], capsys
    )
    assert code == 0, err
    assert "params" in json.loads(out_json)


def test_headline_metric_follows_the_task_kind():
    from dataplan.workflows.scaling_runs import headline

    m = {"exact_match": 0.4, "token_f1": 0.5, "loglik_accuracy": 0.9}
    assert headline(m, "exact_match", "arithmetic") == ("exact_match", 0.4)
    assert headline(m, "exact_match", "classification") == ("loglik_accuracy", 0.9)
    assert headline({**m, "loglik_accuracy": None}, "token_f1", None) == ("token_f1", 0.5)


def test_internal_parametrisation_matches_the_published_forms():
    """Every form is fitted as a finite reparametrisation; its natural() parameters must give
    the published equation's values (float64 reference)."""
    from dataplan.maths.scaling import FORMS

    rng = np.random.default_rng(0)
    x = {
        c: rng.uniform(0.2, 8.0, 30)
        for c in ("volume", "tokens_seen", "n_examples", "mean_tokens", "model_params")
    }
    for name, form in FORMS.items():
        for _ in range(5):
            q = rng.normal(size=len(form.params))
            if name == "chinchilla":
                q[[2, 4]] = np.abs(q[[2, 4]])
                e, a, alpha, b, beta = form.natural(q)
                reference = e - a * x["n_examples"] ** -alpha - b * x["mean_tokens"] ** -beta
            else:
                a, beta, gamma, e = form.natural(q)
                reference = a * x[form.features[0]] ** beta * x["model_params"] ** gamma + e
            np.testing.assert_allclose(form.func(q, x), reference, rtol=1e-10, atol=1e-10)


def test_flat_curve_fits_the_logarithmic_limit_quickly():
    """P = 0.1·ln V + 0.2 is a power law's β → 0 limit: the fit must land there (tiny β, small
    held-out error, a note) instead of sliding off with A → ∞."""
    runs = synthetic_runs()
    v = runs["n_examples"] * runs["mean_tokens"]
    runs["performance"] = 0.1 * np.log(v) + 0.2
    law = ScalingLaw("volume", n_bootstrap=0).fit(runs)
    assert abs(law.params_["beta"]) < 1e-3
    assert law.heldout_["rmse"] < 1e-4
    np.testing.assert_allclose(law.predict(runs), runs["performance"], atol=1e-4)


def test_fit_is_invariant_to_the_performance_scale():
    """The robust loss's scale follows the data: accuracy in % gives the same exponent."""
    runs = synthetic_runs(noise=0.01)
    law = ScalingLaw("volume", n_bootstrap=0).fit(runs)
    percent = dict(runs, performance=100 * runs["performance"])
    law100 = ScalingLaw("volume", n_bootstrap=0).fit(percent)
    assert law100.params_["beta"] == pytest.approx(law.params_["beta"], rel=1e-4)
    assert law100.f_scale_ == pytest.approx(100 * law.f_scale_, rel=1e-4)


def test_point_holdout_keeps_seeds_of_one_design_together():
    runs = synthetic_runs()
    twin = {k: np.concatenate([v, v]) for k, v in runs.items()}
    twin["performance"] = twin["performance"] + np.repeat([0.0, 0.01], runs["performance"].size)
    errors = np.array(ScalingLaw("volume", n_bootstrap=0).fit(twin).heldout_["errors"])
    n = runs["performance"].size
    # Both seeds of a design point are predicted by the same refit at the same features.
    np.testing.assert_allclose(errors[:n] - errors[n:], 0.01, atol=1e-9)
    by_run = np.array(
        ScalingLaw("volume", n_bootstrap=0, holdout="run").fit(twin).heldout_["errors"]
    )
    assert not np.allclose(by_run[:n] - by_run[n:], 0.01, atol=1e-6)


def test_near_constant_tokens_make_only_the_tokens_form_fail():
    """Under a compute budget every run sees ~C tokens: the tokens form is not identifiable,
    the others still fit and compare on the same held-out runs."""
    runs = synthetic_runs()
    runs["tokens_seen"] = 24000 + np.arange(runs["n_examples"].size) % 5
    rows = {r["form"]: r for r in compare_forms(runs, n_bootstrap=0)}
    assert "spans only" in rows["tokens"]["error"]
    assert rows["tokens"]["heldout_rmse"] == np.inf
    fitted = [r for r in rows.values() if "error" not in r]
    assert len(fitted) == 4 and len({r["heldout_n"] for r in fitted}) == 1  # 3 forms + constant
    assert rows["volume"]["heldout_rmse"] < 0.5 * rows["constant"]["heldout_rmse"]
    assert ScalingLaw("volume", n_bootstrap=0).fit(runs).params_["beta"] == pytest.approx(
        0.25, abs=0.03
    )


def test_tokens_form_requires_tokens_seen():
    with pytest.raises(ScalingInputError, match=r"missing column.*tokens_seen"):
        ScalingLaw("tokens", n_bootstrap=0).fit(synthetic_runs())


def test_plan_flags_extrapolation_and_refuses_bad_laws(tmp_path):
    from dataplan.errors import ConfigError
    from dataplan.workflows.scaling import fit_runs, plan

    path = _write_runs(tmp_path / "runs.csv", synthetic_runs())
    law = fit_runs(path, n_bootstrap=20)
    inside = plan(law, 50000)
    assert inside["best"]["extrapolated"] is False
    far = plan(law, 1e8, max_examples=100000)
    assert far["best"]["extrapolated"] is True
    assert any("extrapolation" in note for note in far["notes"])
    assert far["best"]["n_examples"] > 1024  # beyond the largest N measured
    broken = {k: v for k, v in law.items() if k != "internal_params"}
    with pytest.raises(ConfigError, match="not a law file"):
        plan(broken, 50000)
    with pytest.raises(ConfigError, match="not a law file"):
        plan({k: v for k, v in law.items() if k != "strategies"}, 50000)
    with pytest.raises(ConfigError, match="max-examples must be positive"):
        plan(law, 50000, max_examples=0)
    runs = synthetic_runs()
    runs["tokens_seen"] = runs["n_examples"] * runs["mean_tokens"] * 2
    tokens_law = fit_runs(_write_runs(tmp_path / "t.csv", runs), form="tokens", n_bootstrap=0)
    with pytest.raises(ConfigError, match="tokens form predicts the same"):
        plan(tokens_law, 50000)


def test_scaling_cli_holdout_by_strategy_and_bad_law_file(tmp_path, capsys):
    import json

    from test_cli import run_main

    path = _write_runs(tmp_path / "runs.csv", synthetic_runs())
    code, out, err = run_main(
        ["scaling", "fit", str(path), "--holdout", "strategy", "--bootstrap", "0", "--json"],
        capsys,
    )
    assert code == 0, err
    d = json.loads(out)
    assert d["heldout"]["by"] == "strategy" and d["heldout"]["n"] == len(
        synthetic_runs()["n_examples"]
    )
    (tmp_path / "law.json").write_text(out)  # --json output lacks the internal parameters
    code, out, err = run_main(
        ["scaling", "plan", "--fit", str(tmp_path / "law.json"), "--compute-tokens", "5e4"], capsys
    )
    assert code == 2 and "law.json" in err and "not a law file" in err


OFFSETS = {"longest": -0.03, "random": 0.08, "shortest": -0.07, "stratified": 0.02}  # mean 0


def runs_with_strategy_offsets(noise=0.003, seed=0):
    """The volume law plus a known intercept per strategy (strategies assigned in turn)."""
    runs = synthetic_runs(noise=noise, seed=seed)
    names = ("random", "shortest", "longest", "stratified")
    runs["strategy"] = [names[i % 4] for i in range(len(runs["n_examples"]))]
    runs["performance"] = runs["performance"] + np.array([OFFSETS[s] for s in runs["strategy"]])
    return runs


def test_strategy_effects_recover_the_offsets_and_win_held_out():
    runs = runs_with_strategy_offsets()
    law = ScalingLaw("volume", strategy_effects=True, n_bootstrap=40).fit(runs)
    assert law.strategies_ == sorted(OFFSETS)
    for name, truth in OFFSETS.items():
        assert law.params_[f"delta[{name}]"] == pytest.approx(truth, abs=0.01)
        lo, hi = law.intervals_[f"delta[{name}]"]
        assert lo < law.params_[f"delta[{name}]"] < hi
    assert law.params_["E"] == pytest.approx(0.05, abs=0.02)
    assert law.params_["beta"] == pytest.approx(0.25, abs=0.03)
    query = {
        "n_examples": [100, 100],
        "mean_tokens": [50, 50],
        "model_params": [1.35e8, 1.35e8],
        "strategy": ["random", "shortest"],
    }
    truth = 0.02 * 5000**0.25 * 1.35**0.1 + 0.05 + np.array([0.08, -0.07])
    np.testing.assert_allclose(law.predict(query), truth, atol=0.01)
    again = ScalingLaw.from_dict(law.to_dict())
    np.testing.assert_allclose(again.predict(query), law.predict(query))
    with pytest.raises(ScalingInputError, match="needs the strategy column"):
        law.predict({k: v for k, v in query.items() if k != "strategy"})
    with pytest.raises(ScalingInputError, match="'mixed' was not among the fitted runs"):
        law.predict({**query, "strategy": ["mixed", "random"]})
    by = {r["form"]: r for r in compare_forms(runs, n_bootstrap=0)}
    assert min(by, key=lambda f: by[f]["heldout_rmse"]) in ("volume+strategy", "examples+strategy")
    assert by["volume+strategy"]["heldout_rmse"] < 0.3 * by["volume"]["heldout_rmse"]
    assert by["volume+strategy"]["heldout_rmse"] < by["constant+strategy"]["heldout_rmse"]
    plain = by["volume"]
    assert by["volume+strategy"]["heldout_n"] == plain["heldout_n"] == len(runs["n_examples"])


def test_strategy_effects_need_several_strategies():
    runs = synthetic_runs()
    with pytest.raises(ScalingInputError, match="need a strategy column"):
        ScalingLaw("volume", strategy_effects=True, n_bootstrap=0).fit(runs)
    runs["strategy"] = ["random"] * len(runs["n_examples"])
    with pytest.raises(ScalingInputError, match="at least 2 strategies"):
        ScalingLaw("volume", strategy_effects=True, n_bootstrap=0).fit(runs)
    rows = compare_forms(runs, n_bootstrap=0)  # one strategy: no +strategy rows
    assert not any("strategy" in r["form"] for r in rows)


def test_holding_out_a_strategy_ranks_strategy_effects_last():
    rows = compare_forms(runs_with_strategy_offsets(), holdout="strategy", n_bootstrap=0)
    by = {r["form"]: r for r in rows}
    assert "not in the training fold" in by["volume+strategy"]["error"]
    assert np.isfinite(by["volume"]["heldout_rmse"]) and by["volume"]["heldout_n"] > 0
    assert rows[-1]["heldout_rmse"] == np.inf


def test_plan_with_strategy_effects_and_the_hint_to_use_them(tmp_path, capsys):
    import json

    from dataplan.workflows.scaling import fit_runs, plan
    from test_cli import run_main

    runs = runs_with_strategy_offsets()
    path = _write_runs(tmp_path / "runs.csv", runs)
    plain = fit_runs(path, n_bootstrap=0)
    assert any("refit with --strategy-effects" in n for n in plain["notes"])
    assert any("refit with --strategy-effects" in n for n in plan(plain, 50000)["notes"])
    law = fit_runs(path, n_bootstrap=20, strategy_effects=True)
    assert not any("refit with" in n for n in law["notes"])
    best = plan(law, 50000)
    assert best["best"]["strategy"] == "random"  # the largest offset, at similar lengths
    per = {c["strategy"]: c["predicted_performance"] for c in best["per_strategy"]}
    assert per["random"] > per["stratified"] > per["longest"] > per["shortest"]

    code, out, err = run_main(
        ["scaling", "fit", str(path), "--strategy-effects", "--bootstrap", "0", "--json"], capsys
    )
    assert code == 0, err
    d = json.loads(out)
    assert {"A", "beta", "gamma", "E", "delta[random]"} <= set(d["params"])
    assert "E per strategy" in d["equation"]


def test_fit_notes_runs_below_one_epoch(tmp_path):
    from dataplan.workflows.scaling import fit_runs

    runs = synthetic_runs()
    runs["epochs"] = np.where(runs["n_examples"] >= 1024, 0.5, 2.0)
    law = fit_runs(_write_runs(tmp_path / "runs.csv", runs), n_bootstrap=0)
    assert any("4 of 24 runs trained on less than one epoch" in n for n in law["notes"])
    runs["epochs"] = np.full(runs["n_examples"].size, 2.0)
    law = fit_runs(_write_runs(tmp_path / "runs.csv", runs), n_bootstrap=0)
    assert not any("less than one epoch" in n for n in law["notes"])
