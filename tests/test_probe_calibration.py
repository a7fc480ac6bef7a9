"""The probe calibration across tasks: per-depth least squares, leave-one-task-out residuals
against a slow loop, the seed variance's decay recovered, coverage, and bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dataplan.maths.probe_calibration import (
    ProbeCalibration,
    ProbeCalibrationError,
    fit_probe_calibration,
)

DEPTHS = np.array([8.0, 16.0, 32.0, 64.0])


def _synthetic(tasks=20, seeds=4, K=0.5, alpha=1.0, noise=0.02, seed=0):
    """Features: the task's true learnability plus seed noise of variance K c^(−α); AUC is
    linear in the true learnability plus a task-level error of sd ``noise``."""
    rng = np.random.default_rng(seed)
    truth = rng.uniform(0.0, 1.0, size=tasks)
    auc = 0.3 + 0.5 * truth + rng.normal(size=tasks) * noise
    sd = np.sqrt(K * DEPTHS**-alpha)
    features = truth[:, None, None] + rng.normal(size=(tasks, seeds, len(DEPTHS))) * sd
    return features, auc, truth


def test_loo_residuals_match_a_slow_loop_and_static_joins():
    features, auc, truth = _synthetic()
    cos_low = truth * 0.2 + np.random.default_rng(1).normal(size=len(auc)) * 0.05
    for static in (None, cos_low):
        cal = fit_probe_calibration(features, auc, DEPTHS, static=static)
        for j, fit in enumerate(cal.depths):
            x = features[:, :, j].mean(axis=1)
            for t in range(len(auc)):
                keep = np.arange(len(auc)) != t
                cols = [np.ones(keep.sum()), x[keep]] + ([] if static is None else [static[keep]])
                coef = np.linalg.lstsq(np.column_stack(cols), auc[keep], rcond=None)[0]
                row = [1.0, x[t]] + ([] if static is None else [static[t]])
                assert fit.loo_residuals[t] == pytest.approx(auc[t] - np.dot(coef, row), abs=1e-10)
            assert fit.loo_mae == pytest.approx(np.mean(np.abs(fit.loo_residuals)))
            assert 0.0 <= fit.coverage <= 1.0
        assert cal.with_static is (static is not None)


def test_deeper_probes_forecast_better_and_the_decay_is_recovered():
    features, auc, _ = _synthetic(tasks=40, seeds=8, K=0.5, alpha=1.0, noise=0.01)
    cal = fit_probe_calibration(features, auc, DEPTHS)
    maes = [d.loo_mae for d in cal.depths]
    assert maes[-1] < maes[0]  # the forecast sharpens as the probes deepen
    assert cal.depths[-1].coef[1] == pytest.approx(0.5, abs=0.1)
    # V_opt(c) = β_1² K c^(−α): the decay rate comes back.
    assert cal.decay is not None and cal.decay.alpha == pytest.approx(1.0, abs=0.3)
    # The intrinsic limit is the task-level error left at the deepest depth (sd 0.01 plus
    # the regression's own noise), small beside the shallow seed variance.
    assert cal.intrinsic < cal.depths[0].seed_variance
    assert 0.5 <= cal.depths[-1].coverage <= 1.0


def test_round_trip_and_predict():
    features, auc, _ = _synthetic()
    cal = fit_probe_calibration(features, auc, DEPTHS, feature="val_loss_drop")
    again = ProbeCalibration.from_dict(cal.as_dict())
    assert again.as_dict() == cal.as_dict()
    mean, var = cal.predict(32.0, 0.5)
    d = cal.at(32.0)
    assert mean == pytest.approx(d.coef[0] + d.coef[1] * 0.5)
    assert var == cal.variance(32.0) == cal.variance(32.0, cal.n_seeds)
    assert var == max(d.residual_variance, d.seed_variance / cal.n_seeds)
    # Another seed count: the calibration's seed noise out, this one's in.
    for depth in DEPTHS:
        d = cal.at(depth)
        beyond = max(0.0, d.residual_variance - d.seed_variance / cal.n_seeds)
        for seeds in (1, 2, cal.n_seeds, 10):
            assert cal.variance(depth, seeds) == pytest.approx(beyond + d.seed_variance / seeds)
        assert cal.variance(depth, 1) > cal.variance(depth, 2) > cal.variance(depth, 10) > 0
    with pytest.raises(KeyError, match="calibrated depths"):
        cal.at(12.0)
    with_static = fit_probe_calibration(
        features, auc, DEPTHS, static=auc * 0 + 0.1 * np.arange(len(auc))
    )
    with pytest.raises(ValueError, match="CoS-Low"):
        with_static.predict(8.0, 0.5)


def test_bad_calibration_input_is_refused():
    features, auc, _ = _synthetic(tasks=5)
    with pytest.raises(ProbeCalibrationError, match="tasks"):
        fit_probe_calibration(features[:3], auc[:3], DEPTHS)
    with pytest.raises(ProbeCalibrationError, match="2 probe seeds"):
        fit_probe_calibration(features[:, :1], auc, DEPTHS)
    with pytest.raises(ProbeCalibrationError, match="finite"):
        bad = features.copy()
        bad[0, 0, 0] = math.nan
        fit_probe_calibration(bad, auc, DEPTHS)
    with pytest.raises(ProbeCalibrationError, match="tasks, seeds, depths"):
        fit_probe_calibration(features[:, :, :2], auc, DEPTHS)


def test_task_decompositions_place_each_task():
    from dataplan.maths.probe import RegimeThresholds
    from dataplan.maths.probe_calibration import task_decompositions

    features, auc, _ = _synthetic(tasks=12, seeds=30, K=0.5, alpha=1.0, noise=0.02)
    cal = fit_probe_calibration(features, auc, DEPTHS)
    points = task_decompositions(cal, features)
    assert len(points) == 12
    for t, p in enumerate(points):
        # The definition, recomputed.
        d = cal.depths[-1]
        v = np.var(d.coef[0] + d.coef[1] * features[t, :, -1], ddof=1)
        assert p["intrinsic"] == pytest.approx(max(0.0, d.loo_residuals[t] ** 2 - v / 30))
        assert p["alpha"] == pytest.approx(1.0, abs=0.6)  # 30 seeds: a rough per-task rate
        assert p["regime"] in ("Static-Sufficient", "Dynamic-Critical", "Noise-Dominant")
    strict = task_decompositions(cal, features, RegimeThresholds(noise_sd=1e-6))
    for p in strict:
        assert (p["regime"] == "Noise-Dominant") == (math.sqrt(p["intrinsic"]) >= 1e-6)
    with pytest.raises(ProbeCalibrationError, match="match"):
        task_decompositions(cal, features[:3])


def test_four_tasks_give_the_probe_calibration_without_the_cos_low_one(tmp_path):
    """The probe-alone fit needs 4 tasks, the probe + CoS-Low one 5: with 4 kept tasks the
    study still writes probe-calibration.json (with how its probes were made) and says why the
    joint one is missing."""
    import json

    from dataplan.workflows.calibrate import ProbeStudy, probe_summary

    rng = np.random.default_rng(3)
    rows = []
    for t in range(4):
        auc = 0.3 + 0.1 * t
        probe_rows = [
            {"seed": s, "c": c, "val_loss_drop": auc + rng.normal(scale=0.1 / c)}
            for s in range(3)
            for c in (1, 2)
        ]
        rows.append(
            {"task": f"t{t}", "auc": auc, "cos_low": 0.5 - 0.05 * t, "probe": {"rows": probe_rows}}
        )
    study = ProbeStudy(steps=(1, 2), seeds=3, validation=4)
    summary = probe_summary(study, rows, tmp_path, "joint", {"lora_r": 8})
    assert summary is not None and "at least 5" in summary["probe_and_cos_low_error"]
    assert [d["probe_and_cos_low_loo_mae"] for d in summary["by_depth"]] == [None, None]
    saved = json.loads((tmp_path / "probe-calibration.json").read_text())
    assert saved["n_tasks"] == 4 and saved["probe"] == {"validation": 4, "train": {"lora_r": 8}}
    assert not (tmp_path / "probe-cos-low-calibration.json").exists()


def test_how_the_probes_were_made_is_checked_and_compared(tmp_path, caplog):
    """A calibration's record of its probes must be usable training settings; probes made with
    another hold-out or other settings than the calibration's are warned about."""
    import json
    import logging
    from dataclasses import replace

    from dataplan.errors import InputError
    from dataplan.workflows.probe import ProbeConfig, load_probe_calibration

    features, auc, _ = _synthetic()
    cal = fit_probe_calibration(features, auc, DEPTHS)
    path = tmp_path / "cal.json"
    path.write_text(
        json.dumps(replace(cal, probe={"validation": 8, "train": {"nope": 1}}).as_dict())
    )
    with pytest.raises(InputError, match=r"probe\.train is not a set of training settings"):
        load_probe_calibration(path)
    made = {
        "validation": 4,
        "train": {"lora_r": 8, "epochs": 9.0},
    }  # epochs: not how a probe trains
    path.write_text(json.dumps(replace(cal, probe={**made, "train": {"lora_r": 8}}).as_dict()))
    with caplog.at_level(logging.WARNING, logger="dataplan.workflows.probe"):
        ProbeConfig(
            data="x.jsonl", calibration=str(path), steps=tuple(int(d) for d in DEPTHS)
        ).probe_calibration()
    assert "other validation and train than the calibration's" in caplog.text
    caplog.clear()
    from dataplan.training.settings import TrainSettings

    alike = ProbeConfig(
        data="x.jsonl",
        calibration=str(path),
        steps=tuple(int(d) for d in DEPTHS),
        validation=4,
        train=TrainSettings(lora_r=8, epochs=9.0),
    )
    with caplog.at_level(logging.WARNING, logger="dataplan.workflows.probe"):
        alike.probe_calibration()
    assert caplog.text == ""


def test_a_damaged_calibration_file_is_an_input_error(tmp_path):
    """A depth of 8.5 steps, or a task point without its L_int, fails on loading — not later,
    after the probes have trained."""
    import json

    from dataplan.errors import InputError
    from dataplan.workflows.probe import load_probe_calibration

    features, auc, _ = _synthetic()
    good = fit_probe_calibration(features, auc, DEPTHS).as_dict()
    for damage in ("depth", "task"):
        d = json.loads(json.dumps(good))
        if damage == "depth":
            d["depths"][0]["depth"] = 8.5
        else:
            d["tasks"] = [{"task": "t", "alpha": 0.5}]
        path = tmp_path / f"{damage}.json"
        path.write_text(json.dumps(d))
        with pytest.raises(InputError, match="not a probe calibration"):
            load_probe_calibration(path)
