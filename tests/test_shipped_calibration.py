"""The calibration shipped for the built-in model is exactly what the committed study measured."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dataplan.calibrations import get_calibration
from dataplan.maths.auc import data_efficiency_auc
from dataplan.maths.forecast import fit_calibration
from dataplan.workflows.calibrate import learning_gain

STUDY = Path(__file__).parent.parent / "studies" / "smollm2-135m-instruct" / "study" / "study.json"


@pytest.fixture(scope="module")
def study() -> dict:
    return json.loads(STUDY.read_text(encoding="utf-8"))


def test_every_auc_follows_from_its_curve(study):
    for row in study["tasks"]:
        curve = {int(n): v[row["auc_metric"]] for n, v in row["curve"].items()}
        grid = tuple(sorted(n for n in curve if n > 0))
        assert data_efficiency_auc(curve, grid=grid) == pytest.approx(row["auc"], abs=1e-12)


def test_tasks_in_the_fit_are_those_that_learned(study):
    for row in study["tasks"]:
        assert (learning_gain(row) >= study["min_gain"]) == row["in_fit"], row["task"]


def test_shipped_calibration_refits_from_the_study_table(study):
    shipped = get_calibration("smollm2-135m-instruct")
    rows = [r for r in study["tasks"] if r["in_fit"]]
    refit = fit_calibration(
        [r["cos_low"] for r in rows], [r["auc"] for r in rows], name="x", n_max=shipped.n_max
    )
    assert shipped.coef == pytest.approx(refit.coef, rel=1e-12)
    assert shipped.intercept == pytest.approx(refit.intercept, rel=1e-12)
    assert shipped.n_tasks == len(rows) == study["n_tasks"]
    assert shipped.n_max == max(int(n) for n in rows[0]["curve"])
    assert shipped.extra["loo_spearman"] == study["leave_one_task_out"]["cos_low"]["spearman"]
