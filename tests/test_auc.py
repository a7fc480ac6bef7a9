"""The AUC reproduces every AUC the CoS-Low authors published (golden values)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from dataplan.maths.auc import auc_from_results, clean_curve, data_efficiency_auc, select_metric

FIXTURES = Path(__file__).parent / "fixtures" / "dataefficiency"
MODELS = ("llama", "mistral", "qwen")


def _golden_cases():
    cases = []
    for model in MODELS:
        published = json.loads(
            (FIXTURES / "auc_res" / f"{model}_auc_logscale_by_task_5000.json").read_text()
        )
        for task, row in published.items():
            path = FIXTURES / "finetune_results" / f"{model}_{task}_full_result_v2.json"
            if path.exists():
                cases.append(pytest.param(path, row, id=f"{model}-{task}"))
    return cases


GOLDEN = _golden_cases()


def test_all_hundred_published_aucs_are_present():
    assert len(GOLDEN) == 100


@pytest.mark.parametrize(("path", "row"), GOLDEN)
def test_reproduces_published_auc(path, row):
    results = json.loads(path.read_text())
    got = auc_from_results(results, human_score=row["human_eval"])
    assert got == pytest.approx(row["extrapolation_auc"], abs=1e-12)


def test_missing_grid_budget_carries_previous_value_forward():
    ns, values = clean_curve({0: 0.1, 50: 0.5, 200: 0.7, 5000: 0.9})
    assert list(ns) == [0, 50, 100, 200, 500, 1000, 2500, 5000]
    np.testing.assert_allclose(values, [0.1, 0.5, 0.5, 0.7, 0.7, 0.7, 0.7, 0.9])


def test_few_shot_and_out_of_range_points_are_ignored():
    base = {0: 0.2, 50: 0.4, 100: 0.5, 200: 0.6, 500: 0.7, 1000: 0.8, 2500: 0.9, 5000: 1.0}
    noisy = {**base, 4: 0.99, 32: 0.99, 10000: 0.0}
    assert data_efficiency_auc(noisy) == data_efficiency_auc(base)


def test_instant_learner_has_auc_near_one_and_flat_curve_zero():
    instant = {n: 1.0 for n in (50, 100, 200, 500, 1000, 2500, 5000)} | {0: 0.0}
    # From x=0 to x=log2(50)/log2(5000) the trapezoid rises linearly: AUC = 1 - x50 / 2.
    x50 = np.log2(50) / np.log2(5000)
    assert data_efficiency_auc(instant) == pytest.approx(1 - x50 / 2)
    assert data_efficiency_auc({0: 0.5, 50: 0.5, 5000: 0.5}) == 0.0


def test_human_score_above_best_lowers_auc():
    curve = {0: 0.0, 50: 0.5, 5000: 0.8}
    assert data_efficiency_auc(curve, human_score=1.0) < data_efficiency_auc(curve)


def test_metric_selection_rules():
    results = {"0": {"exact_string_match_accuracy": 0.1}, "50": {"accuracy": 0.5}}
    assert select_metric(results) == {0: 0.1, 50: 0.5}
    gen = {"0": {"f1": 0.2, "exact_string_match_accuracy": 0.0}}
    assert select_metric(gen) == {0: 0.2}
    with pytest.raises(KeyError):
        select_metric(results, "bleu")


def test_custom_grid():
    curve = {0: 0.0, 16: 0.5, 32: 0.5, 64: 1.0}
    x16, x32 = np.log2(16) / 6, np.log2(32) / 6
    expected = 0.5 * x16 * 0.5 + (x32 - x16) * 0.5 + (1 - x32) * 0.75
    assert data_efficiency_auc(curve, grid=(16, 32, 64)) == pytest.approx(expected)
