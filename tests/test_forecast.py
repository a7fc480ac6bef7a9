"""Forecast maths: the authors' worked example, the curve's area, intervals, calibration fits."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate

from dataplan.calibrations import get_calibration, list_calibrations
from dataplan.errors import ConfigError
from dataplan.maths.forecast import (
    Calibration,
    budget_for_target,
    curve_exponent,
    fit_calibration,
    forecast,
    normalise_target,
    predicted_curve,
)


def test_authors_worked_example():
    cal = Calibration(name="worked", coef=0.54, intercept=0.31)
    assert cal.predict_auc(0.65) == pytest.approx(0.661)
    assert budget_for_target(cal.predict_auc(0.65), 0.9, 5000) == pytest.approx(1028, abs=1.0)


@pytest.mark.parametrize("auc", [0.1, 0.35, 0.5, 0.661, 0.9])
def test_predicted_curve_area_equals_auc(auc):
    p = curve_exponent(auc)
    area, _ = integrate.quad(lambda x: x**p, 0.0, 1.0)
    assert area == pytest.approx(auc, rel=1e-9)


@pytest.mark.parametrize("auc", [0.2, 0.5, 0.8])
@pytest.mark.parametrize("tau", [0.1, 0.5, 0.95])
def test_budget_inverts_curve(auc, tau):
    n_star = budget_for_target(auc, tau, 5000)
    assert predicted_curve(auc, [n_star], 5000)[0] == pytest.approx(tau, rel=1e-9)


def test_budget_decreases_with_auc_and_rejects_bad_target():
    assert budget_for_target(0.7, 0.9) < budget_for_target(0.5, 0.9)
    for bad in (0.0, 1.0, 1.2, -0.1):
        with pytest.raises(ValueError):
            budget_for_target(0.5, bad)


def test_normalise_target():
    assert normalise_target(0.8, 0.2, 1.0) == pytest.approx(0.75)
    with pytest.raises(ValueError):
        normalise_target(0.8, 0.9, 0.9)


def test_published_calibrations_are_built_in():
    names = [c.name for c in list_calibrations()]
    for name in ("llama-3.1-8b-instruct", "mistral-7b-instruct-v0.3", "qwen2.5-14b-instruct"):
        assert name in names
    llama = get_calibration("llama-3.1-8b-instruct")
    assert (llama.coef, llama.intercept, llama.n_max) == (0.545, 0.310, 5000)
    assert get_calibration("mistral-7b-instruct-v0.3").coef == 0.797
    assert get_calibration("qwen2.5-14b-instruct").intercept == 0.305


def test_unknown_calibration_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="unknown calibration"):
        get_calibration("no-such-model")
    bad = tmp_path / "cal.json"
    bad.write_text('{"coef": 1}')
    with pytest.raises(ConfigError, match="not a valid calibration"):
        get_calibration(bad)


def test_calibration_file_round_trip(tmp_path):
    cal = Calibration(name="mine", coef=0.4, intercept=0.2, n_max=1024, loo_residuals=(0.1, -0.1))
    path = tmp_path / "mine.json"
    import json

    path.write_text(json.dumps(cal.to_dict()))
    assert get_calibration(path) == cal


def test_forecast_interval_brackets_point_and_swaps_ends():
    cal = get_calibration("llama-3.1-8b-instruct")
    fc = forecast(0.65, cal, 0.9, level=0.8)
    lo_auc, hi_auc = fc.auc_interval
    assert lo_auc < fc.auc < hi_auc
    lo_n, hi_n = fc.n_star_interval
    assert lo_n < fc.n_star < hi_n
    # sigma = 0.086 * sqrt(pi/2); the 80% normal interval is +-1.2816 sigma.
    sigma = 0.086 * math.sqrt(math.pi / 2)
    assert hi_auc - fc.auc == pytest.approx(1.2815516 * sigma, rel=1e-4)
    assert fc.curve_n[-1] == 5000 and fc.curve[-1] == pytest.approx(1.0)


def test_fit_calibration_recovers_line_and_loo_residuals():
    rng = np.random.default_rng(0)
    x = rng.uniform(0.2, 0.9, size=25)
    y = 0.5 * x + 0.3 + rng.normal(0, 0.02, size=25)
    cal = fit_calibration(x, y, name="toy", n_max=1024)
    assert cal.coef == pytest.approx(0.5, abs=0.05)
    assert cal.intercept == pytest.approx(0.3, abs=0.04)
    # Leave-one-out residual by brute force for one task.
    keep = np.arange(25) != 3
    slope, intercept = np.polyfit(x[keep], y[keep], 1)
    assert cal.loo_residuals[3] == pytest.approx(y[3] - (slope * x[3] + intercept), abs=1e-10)
    assert cal.residual_std == pytest.approx(0.02, rel=0.5)
    iv = cal.auc_interval(0.5, 0.8)
    assert iv[0] < cal.predict_auc(0.5) < iv[1]
    # The track record a forecast carries: mean |LOO residual| and the task count.
    fc = forecast(0.5, cal, 0.9)
    assert fc.calibration_loo_mae == pytest.approx(np.mean(np.abs(cal.loo_residuals)))
    assert fc.calibration_tasks == 25
    assert (
        forecast(0.5, Calibration("bare", coef=0.5, intercept=0.3), 0.9).calibration_loo_mae is None
    )
    with pytest.raises(ValueError):
        fit_calibration([0.5, 0.5, 0.5], [0.1, 0.2, 0.3], name="flat", n_max=10)


def test_calibration_reliability_warning():
    from dataplan.maths.forecast import Calibration, forecast

    good = Calibration("g", coef=0.5, intercept=0.3, extra={"loo_spearman": 0.7})
    assert good.reliability_warning() is None
    assert forecast(0.6, good, 0.9).warning is None
    flat = Calibration("f", coef=-0.1, intercept=0.5)
    assert "non-positive slope" in flat.reliability_warning()
    weak = Calibration("w", coef=0.2, intercept=0.4, n_tasks=12, extra={"loo_spearman": 0.1})
    fc = forecast(0.6, weak, 0.9)
    assert "Spearman 0.10 over 12 tasks" in fc.warning
    assert Calibration.from_dict(weak.to_dict()).extra == {"loo_spearman": 0.1}
