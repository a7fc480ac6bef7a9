"""The probe maths: Û(c) = L_int + K c^(−α) recovered, c* against a numerical minimum, the
regime boundaries, inverse-variance combination, and bad probe measurements."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import minimize_scalar

from dataplan.maths.probe import (
    ProbeFitError,
    RegimeThresholds,
    analyse,
    combine,
    fit_decay,
    optimal_depth,
    regime,
    seed_variance,
)

DEPTHS = np.array([8.0, 16.0, 32.0, 64.0, 128.0])


@pytest.mark.parametrize(
    ("L", "K", "alpha"), [(0.002, 0.5, 0.8), (0.0, 0.05, 1.5), (0.01, 2.0, 0.4)]
)
def test_an_exact_decay_is_recovered(L, K, alpha):
    u = L + K * DEPTHS**-alpha
    fit = fit_decay(DEPTHS, u)
    assert fit.intrinsic == pytest.approx(L, rel=2e-3, abs=1e-6)
    assert fit.alpha == pytest.approx(alpha, rel=1e-2)
    assert fit.K == pytest.approx(K, rel=3e-2)  # noqa: SIM300 (K is the paper's name)
    assert fit.log_rmse < 1e-2
    known = fit_decay(DEPTHS, u, intrinsic=L)  # the paper's log-log regression of Û − L_int
    assert (known.K, known.alpha) == pytest.approx((K, alpha), rel=1e-9)
    assert known.intrinsic_given and not fit.intrinsic_given


def test_two_depths_fit_no_plateau_and_say_so():
    fit = fit_decay([10.0, 40.0], [0.1, 0.025])
    assert fit.intrinsic == 0.0 and not fit.intrinsic_identifiable
    assert fit.alpha == pytest.approx(1.0)


def test_the_decay_is_recovered_from_simulated_seeds():
    # Each seed: a constant offset (variance L, never removed) plus a depth-dependent
    # optimisation error of variance K c^(−α).
    L, K, alpha, seeds = 0.004, 0.8, 1.0, 400
    rng = np.random.default_rng(0)
    offset = rng.normal(size=seeds) * math.sqrt(L)
    rows = [
        (c, s, 0.5 + offset[s] + rng.normal() * math.sqrt(K * c**-alpha))
        for s in range(seeds)
        for c in DEPTHS
    ]
    depth, seed, prediction = (list(x) for x in zip(*rows, strict=True))
    result = analyse(depth, seed, prediction, price=1e-5, n_resamples=200)
    assert result.fit.alpha == pytest.approx(alpha, abs=0.25)
    assert result.fit.intrinsic == pytest.approx(L, abs=0.002)
    low, high = result.intervals["alpha"]
    assert low < result.fit.alpha < high
    assert result.c_star == pytest.approx(optimal_depth(result.fit.alpha, result.fit.K, 1e-5))
    assert result.n_bootstrap == 200
    assert sum(result.regime_shares.values()) == pytest.approx(1.0)


@given(
    alpha=st.floats(0.1, 3.0),
    K=st.floats(1e-3, 10.0),
    price=st.floats(1e-6, 1e-2),
    L=st.floats(0.0, 0.1),
)
@settings(max_examples=60, deadline=None)
def test_c_star_is_the_minimum_of_risk_plus_cost(alpha, K, price, L):
    c_star = optimal_depth(alpha, K, price)

    def total(log_c: float) -> float:
        c = math.exp(log_c)
        return L + K * c**-alpha + price * c

    found = minimize_scalar(total, bounds=(-20, 40), method="bounded", options={"xatol": 1e-10})
    assert math.log(c_star) == pytest.approx(found.x, abs=1e-4)


def test_c_star_is_zero_when_probing_cannot_pay():
    assert optimal_depth(0.0, 1.0, 1e-3) == 0.0
    assert optimal_depth(-0.5, 1.0, 1e-3) == 0.0
    assert optimal_depth(1.0, 0.0, 1e-3) == 0.0
    with pytest.raises(ValueError, match="price"):
        optimal_depth(1.0, 1.0, 0.0)


def test_regime_boundaries():
    t = RegimeThresholds(noise_sd=0.1, fast_alpha=1.0)
    assert regime(0.01, 0.3, 1.0, t) == "Noise-Dominant"  # √L_int = 0.1: at the boundary
    assert regime(0.0099, 0.3, 1.0, t) == "Dynamic-Critical"
    assert regime(0.0099, 1.0, 1.0, t) == "Static-Sufficient"  # fast decay
    assert regime(0.0099, 0.99, 1.0, t) == "Dynamic-Critical"
    assert regime(0.005, 0.3, 0.005, t) == "Static-Sufficient"  # static uncertainty dominates
    assert regime(0.005, 0.3, 0.0051, t) == "Dynamic-Critical"
    assert regime(0.02, 2.0, 0.0, t) == "Noise-Dominant"  # noise wins over a fast decay
    with pytest.raises(ValueError):
        RegimeThresholds(noise_sd=0.0)


def test_combination_is_static_when_probes_carry_no_information():
    assert combine(0.6, 0.01, 0.2, math.inf) == (0.6, 0.01)
    assert combine(0.6, math.inf, 0.2, 0.04) == (0.2, 0.04)
    mean, var = combine(0.6, 0.01, 0.2, 0.01)
    assert (mean, var) == pytest.approx((0.4, 0.005))
    assert combine(0.6, 0.0, 0.2, 0.01) == (0.6, 0.0)


@given(
    m1=st.floats(-1, 1),
    v1=st.floats(1e-6, 1.0),
    m2=st.floats(-1, 1),
    v2=st.floats(1e-6, 1.0),
)
def test_combination_is_between_and_sharper(m1, v1, m2, v2):
    mean, var = combine(m1, v1, m2, v2)
    assert min(m1, m2) - 1e-12 <= mean <= max(m1, m2) + 1e-12
    assert var <= min(v1, v2) + 1e-15
    # The float64 closed form of the precision-weighted mean.
    assert mean == pytest.approx((m1 * v2 + m2 * v1) / (v1 + v2), rel=1e-9, abs=1e-12)


def test_seed_variance_averages_tasks():
    rows = [
        ("a", 0, 8, 0.1),
        ("a", 1, 8, 0.3),
        ("a", 0, 16, 0.2),
        ("a", 1, 16, 0.2),
        ("b", 0, 8, 0.5),
        ("b", 1, 8, 0.9),
        ("b", 0, 16, 0.6),
        ("b", 1, 16, 0.8),
    ]
    task, seed, depth, pred = (list(x) for x in zip(*rows, strict=True))
    c, u = seed_variance(depth, seed, pred, task)
    assert list(c) == [8.0, 16.0]
    assert u == pytest.approx([(0.02 + 0.08) / 2, (0.0 + 0.02) / 2])


@pytest.mark.parametrize(
    ("depth", "seed", "prediction", "message"),
    [
        ([8, 16], [0, 0], [0.1, 0.2], "seed"),  # one seed
        ([8, 8], [0, 1], [0.1, 0.2], "one depth"),
        ([8, 16, 8, 16], [0, 0, 1, 1], [0.1, float("nan"), 0.2, 0.3], "finite"),
        ([8, 8, 16, 16], [0, 0, 0, 1], [0.1, 0.2, 0.3, 0.4], "twice"),
        ([0, 16, 0, 16], [0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4], "positive"),
    ],
)
def test_degenerate_probes_are_refused(depth, seed, prediction, message):
    with pytest.raises(ProbeFitError, match=message):
        seed_variance(depth, seed, prediction)


def test_no_decay_left_is_refused():
    with pytest.raises(ProbeFitError, match="nothing left to decay"):
        fit_decay([8.0, 16.0, 32.0], [0.01, 0.01, 0.01], intrinsic=0.02)


def _probe_rows(tasks=("a", "b"), seeds=5, depths=(8, 16, 32, 64), seed=1):
    rng = np.random.default_rng(seed)
    lines = ["task,seed,c,prediction"]
    for t in tasks:
        offset = rng.normal(size=seeds) * 0.03
        for s in range(seeds):
            for c in depths:
                noise = rng.normal() * math.sqrt(0.3 * c**-1.0)
                lines.append(f"{t},{s},{c},{0.5 + offset[s] + noise:.6f}")
    return "\n".join(lines) + "\n"


def test_probe_fit_cli_table_json_and_plot(tmp_path, capsys):
    import json

    from test_cli import run_main

    path = tmp_path / "probes.csv"
    path.write_text(_probe_rows())
    plot = tmp_path / "decay.png"
    code, out, err = run_main(
        ["probe", "fit", str(path), "--price", "1e-4", "--bootstrap", "100", "--plot", str(plot)],
        capsys,
    )
    assert code == 0, err
    assert "alpha" in out and "c*" in out and "regime" in out
    assert plot.stat().st_size > 1000
    code, out, err = run_main(
        ["probe", "fit", str(path), "--price", "1e-4", "--bootstrap", "100", "--json"], capsys
    )
    assert code == 0, err
    d = json.loads(out)
    # The CLI reports exactly the Python analysis of the same rows.
    import pandas as pd

    frame = pd.read_csv(path)
    direct = analyse(
        frame["c"].to_numpy(float),
        [f"{s:g}" for s in frame["seed"].astype(float)],
        frame["prediction"].to_numpy(float),
        list(frame["task"]),
        price=1e-4,
        n_resamples=100,
    )
    assert d["alpha"] == pytest.approx(direct.fit.alpha)
    assert d["K"] == pytest.approx(direct.fit.K)
    assert d["L_int"] == pytest.approx(direct.fit.intrinsic)
    assert d["c_star"] == pytest.approx(direct.c_star)
    assert d["regime"] == direct.regime
    # every quantity's interval, under the quantity's own name, bracketing it
    assert set(d["intervals"]) == {"alpha", "K", "L_int", "c_star"}
    for name in ("alpha", "K", "L_int", "c_star"):
        assert d["intervals"][name] == pytest.approx(list(direct.intervals[name]))
        low, high = d["intervals"][name]
        assert low <= high
    assert sum(d["regime_shares"].values()) == pytest.approx(1.0)
    assert d["regime_shares"] == pytest.approx(direct.regime_shares)
    assert d["tasks"] == ["a", "b"] and d["n_rows"] == 40
    assert d["settings"]["price"] == 1e-4


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("seed,c,prediction\n0,8,0.5\n0,16,0.6\n", "1 seed(s)"),  # one seed
        ("seed,c,prediction\n0,8,0.5\n1,8,0.6\n", "one depth"),  # one c
        (
            "seed,c,prediction\n0,16,0.5\n0,8,0.6\n1,8,0.4\n1,16,0.5\n",
            'probes.csv:3: field "c": seed 0: depth 8 does not increase on 16',
        ),
        ("seed,c,prediction\n0,8,0.5\n0,16,nan\n", 'probes.csv:3: field "prediction"'),
        ("seed,c,prediction\n0,8,0.5\n0,16,high\n", "not a number"),
        ("seed,prediction\n0,0.5\n", 'field "c": missing column'),
        ("seed,c,prediction\n0,-8,0.5\n", "c must be positive"),
    ],
)
def test_probe_fit_cli_degenerate_input_exit_2(tmp_path, capsys, content, fragment):
    from test_cli import run_main

    path = tmp_path / "probes.csv"
    path.write_text(content)
    code, out, err = run_main(["probe", "fit", str(path), "--json"], capsys)
    assert code == 2 and out == ""
    assert fragment in err, err


def test_probe_fit_cli_option_errors(tmp_path, capsys):
    from test_cli import run_main

    path = tmp_path / "probes.csv"
    path.write_text(_probe_rows())
    for args, fragment in (
        (["--price", "0"], "--price must be a positive number"),
        (["--intrinsic", "-1"], "--intrinsic must be a non-negative number"),
        (["--level", "1.5"], "--level must be in (0, 1)"),
        (["--plot", "x.pdf"], "--plot must end in .png"),
    ):
        code, _out, err = run_main(["probe", "fit", str(path), *args], capsys)
        assert code == 2 and fragment in err, (args, err)


def test_probe_fit_keeps_large_seeds_apart(tmp_path):
    """Seeds 1000000 and 1000001 are two seeds (``:g`` text would merge them into 1e+06)."""
    from dataplan.workflows.probe_fit import read_probes

    path = tmp_path / "probes.csv"
    path.write_text("seed,c,prediction\n1000000,8,0.5\n1000001,8,0.6\n1000000,16,0.5\n")
    assert read_probes(path)["seed"] == ["1000000", "1000001", "1000000"]


def test_probe_fit_reads_task_labels_as_written(tmp_path):
    """pandas would read the task labels None and NA as NaN (one task 'nan') and 01 as 1; an
    empty label is refused."""
    from dataplan.errors import InputError
    from dataplan.workflows.probe_fit import read_probes

    path = tmp_path / "probes.csv"
    path.write_text("task,seed,c,prediction\nNone,0,8,0.5\nNA,0,8,0.6\n01,1,8,0.4\n")
    assert read_probes(path)["task"] == ["None", "NA", "01"]
    path.write_text("task,seed,c,prediction\na,0,8,0.5\n,0,8,0.6\n")
    with pytest.raises(InputError, match=r'probes\.csv:3: field "task": missing label'):
        read_probes(path)
