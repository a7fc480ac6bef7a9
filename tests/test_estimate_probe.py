"""`estimate --probe`: auto's decision from the probe calibration, and the static and probe
forecasts combined by inverse variance, end to end on a tiny model."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from dataplan.errors import ConfigError, InputError
from dataplan.io import write_json
from dataplan.maths.forecast import budget_for_target
from dataplan.maths.probe_calibration import ProbeCalibration, fit_probe_calibration
from dataplan.workflows.estimate_probe import choose_depth, parse_probe
from dataplan.workflows.probe import phase_point


def _calibration(depths=(1, 2), K=0.3, noise=0.02, seed=0) -> ProbeCalibration:
    rng = np.random.default_rng(seed)
    truth = rng.uniform(size=10)
    sd = np.sqrt(K * np.asarray(depths, dtype=float) ** -1.0)
    features = truth[:, None, None] + rng.normal(size=(10, 4, len(depths))) * sd
    return fit_probe_calibration(features, 0.3 + 0.5 * truth + rng.normal(size=10) * noise, depths)


def test_parse_probe():
    assert parse_probe("auto") == "auto" and parse_probe("OFF") == "off"
    assert parse_probe("16,32") == (16, 32)
    for bad in ("32,16", "0", "x", ""):
        with pytest.raises(ConfigError, match="--probe"):
            parse_probe(bad)


def test_auto_decides_from_the_calibration():
    cal = _calibration(depths=(8, 16, 32, 64))
    assert cal.decay is not None
    depth, reason, facts = choose_depth(cal, price=None)
    c_eq = (cal.decay.K / cal.intrinsic) ** (1 / cal.decay.alpha)
    expected = next((d for d in (8, 16, 32, 64) if d >= c_eq), 64)
    assert depth == expected and facts["c_eq"] == pytest.approx(c_eq)
    # With a price: the smallest calibrated depth at or beyond c*.
    from dataplan.maths.probe import optimal_depth

    for price in (1e-2, 1e-4, 1e-7):
        depth, reason, facts = choose_depth(cal, price=price)
        c_star = optimal_depth(cal.decay.alpha, cal.decay.K, price)
        if c_star < 1:
            assert depth is None and "less than one step" in reason
        else:
            assert depth == next((d for d in (8, 16, 32, 64) if d >= c_star), 64)
    # Noise-Dominant: no probe.
    noisy = _calibration(depths=(8, 16, 32, 64), noise=0.5)
    depth, reason, facts = choose_depth(noisy, price=None)
    assert math.sqrt(noisy.intrinsic) >= 0.1  # the task-level noise makes it so
    assert facts["regime"] == "Noise-Dominant" and depth is None and "Noise-Dominant" in reason


def _pool(path, n=40):
    rng = np.random.default_rng(0)
    words = ["red", "blue", "green", "cat"]
    with path.open("w") as fh:
        for i in range(n):
            rec = {
                "id": f"ex{i}",
                "prompt": f"Say {' '.join(rng.choice(words, size=1 + i % 3))}",
                "answer": str(rng.choice(words)),
                "choices": words,
            }
            fh.write(json.dumps(rec) + "\n")
    return path


def test_phase_point_prefers_the_tasks_own_probes():
    cal = _calibration(depths=(8, 16, 32, 64))
    assert cal.decay is not None
    own = {"alpha": 0.7, "K": 0.1, "L_int": 0.004, "c_star": 12.0, "regime": "Dynamic-Critical"}
    point = phase_point({"decomposition": own, "regime": "Static-Sufficient"}, cal)
    assert point == {
        "intrinsic": 0.004,
        "alpha": 0.7,
        "regime": "Dynamic-Critical",
        "source": "its own probes",
    }
    # not probed (or one depth: no decay of its own): the calibration's point and auto's regime
    point = phase_point({"regime": "Static-Sufficient"}, cal)
    assert point is not None and point["source"].startswith("the calibration")
    assert point["alpha"] == cal.decay.alpha and point["intrinsic"] == cal.intrinsic
    assert point["regime"] == "Static-Sufficient"
    assert phase_point({}, replace(cal, decay=None)) is None
    # --probe STEPS records no decision: the regime is the calibration's own
    from dataplan.workflows.probe import calibration_regime

    assert phase_point({}, cal)["regime"] == calibration_regime(cal) is not None


def test_probe_calibration_carries_its_tasks():
    tasks = ({"task": "a", "intrinsic": 0.01, "alpha": 0.5, "regime": "Dynamic-Critical"},)
    cal = replace(_calibration(), tasks=tasks)
    back = ProbeCalibration.from_dict(json.loads(json.dumps(cal.as_dict())))
    assert back.tasks == tasks
    old = cal.as_dict()
    del old["tasks"]  # a file written before tasks were recorded
    assert ProbeCalibration.from_dict(old).tasks == ()


def test_estimate_probe_combines_static_and_probe(tiny_model_dir, tmp_path, capsys):
    from dataplan.maths.forecast import Calibration
    from dataplan.reporting.readers import read_run
    from test_cli import run_main

    tasks = (
        {"task": "t1", "intrinsic": 0.002, "alpha": 0.4, "regime": "Dynamic-Critical"},
        {"task": "t2", "intrinsic": 0.02, "alpha": 1.5, "regime": "Noise-Dominant"},
    )
    cal = replace(_calibration(), tasks=tasks)
    write_json(tmp_path / "probe-cal.json", cal.as_dict())
    static = Calibration(name="tiny", coef=0.5, intercept=0.3, n_max=1000, residual_std=0.1)
    write_json(tmp_path / "cal.json", static.to_dict())
    data = _pool(tmp_path / "pool.jsonl")
    args = [
        "estimate",
        "--model",
        str(tiny_model_dir),
        "--data",
        str(data),
        "--n-labeled",
        "8",
        "--low-fraction",
        "0.25",
        "--max-new-tokens",
        "3",
        "--lora-r",
        "4",
        "--calibration",
        str(tmp_path / "cal.json"),
        "--target",
        "0.8",
        "--probe",
        "1,2",
        "--probe-calibration",
        str(tmp_path / "probe-cal.json"),
        "--probe-seeds",
        "2",
        "--probe-validation",
        "2",
        "--run-dir",
        str(tmp_path / "run"),
        "--json",
    ]
    code, out, err = run_main(args, capsys)
    assert code == 0, err
    d = json.loads(out)
    probe = d["probe"]
    assert probe["depth"] == 2 and probe["seeds"] == 2 and probe["probe_steps_trained"] == 4
    s, p = probe["static"], probe["probe"]
    assert s["auc"] == pytest.approx(d["forecast"]["auc"]) and s["sd"] == pytest.approx(0.1)
    assert p["sd"] == pytest.approx(math.sqrt(cal.variance(2, 2)))  # the probes' 2 seeds
    w_s, w_p = 1 / s["sd"] ** 2, 1 / p["sd"] ** 2
    c = probe["combined"]
    assert c["auc"] == pytest.approx((w_s * s["auc"] + w_p * p["auc"]) / (w_s + w_p))
    assert c["sd"] == pytest.approx((w_s + w_p) ** -0.5)
    assert c["n_star"] == pytest.approx(budget_for_target(c["auc"], 0.8, 1000))
    # The probe forecast is the calibration applied to this run's probes.
    import csv

    made = Path(probe["probe_run"])  # the probes' own folder, named by their settings
    assert made.parent == tmp_path / "run" and made.name.startswith("probes-")
    text = (made / "probes.csv").read_text()
    rows = list(csv.DictReader(text.splitlines()))
    feats = [float(r["val_loss_drop"]) for r in rows if r["c"] == "2"]
    assert p["auc"] == pytest.approx(np.mean([cal.predict(2, x)[0] for x in feats]))
    # The table form names what was spent and what it bought.
    code, out, err = run_main(args[:-1], capsys)
    assert code == 0 and "probe spent" in out and "AUC' combined" in out, err
    # The task among the calibration tasks on the phase diagram, and in the report.
    point = probe["phase_point"]
    assert point["intrinsic"] == pytest.approx(cal.intrinsic)  # one task has no L_int of its own
    if "decomposition" in probe:  # its two depths' seed variance fell: its own α
        assert point["source"] == "its own probes"
        assert point["alpha"] == probe["decomposition"]["alpha"]
    else:
        assert point["source"].startswith("the calibration") and cal.decay is not None
        assert point["alpha"] == cal.decay.alpha and point["regime"] is not None
    assert (tmp_path / "run" / "phase-diagram.png").stat().st_size > 1000
    (section,) = read_run(tmp_path / "run")
    caption = [f.caption for f in section.figures][-1]
    assert caption.startswith("the task on the phase diagram") and point["source"] in caption
    assert any(k == "phase diagram" and point["source"] in v for k, v in section.facts)


def test_estimate_probe_auto_without_a_calibration_says_so(tiny_model_dir, tmp_path):
    from dataplan.workflows.estimate import EstimateConfig, estimate

    data = _pool(tmp_path / "pool.jsonl")
    cfg = EstimateConfig(
        model=str(tiny_model_dir),
        data=str(data),
        run_dir=str(tmp_path / "run"),
        n_labeled=8,
        low_fraction=0.25,
        max_new_tokens=3,
        lora_r=4,
        probe="auto",
        progress=False,
    )
    res = estimate(cfg)
    assert res.probe is not None and "no probe calibration" in res.probe["skipped"]
    steps = EstimateConfig(
        model=str(tiny_model_dir),
        data=str(data),
        n_labeled=8,
        low_fraction=0.25,
        probe="16",
        run_dir=str(tmp_path / "r2"),
    )
    with pytest.raises(ConfigError, match="--probe-calibration"):
        estimate(steps)
    assert not (tmp_path / "r2").exists()  # refused before any work


def test_a_shipped_probe_calibration_is_found_by_name(tiny_model_dir, tmp_path, monkeypatch):
    """Without --probe-calibration, estimate uses the probe calibration shipped under the CoS-Low
    calibration's name; `probe --calibration NAME` reads it too."""
    import dataplan.calibrations as registry
    from dataplan.maths.forecast import Calibration
    from dataplan.workflows.estimate import EstimateConfig, estimate
    from dataplan.workflows.probe import load_probe_calibration

    cal = _calibration()
    text = json.dumps(cal.as_dict())
    monkeypatch.setattr(registry, "shipped_probe_calibrations", lambda: ["tiny"])
    monkeypatch.setattr(
        registry, "shipped_probe_calibration_text", lambda name: text if name == "tiny" else None
    )
    assert load_probe_calibration("tiny") == cal
    with pytest.raises(InputError, match="shipped: tiny"):
        load_probe_calibration("other")
    static = Calibration(name="tiny", coef=0.5, intercept=0.3, n_max=1000, residual_std=0.1)
    write_json(tmp_path / "cal.json", static.to_dict())
    cfg = EstimateConfig(
        model=str(tiny_model_dir),
        data=str(_pool(tmp_path / "pool.jsonl")),
        run_dir=str(tmp_path / "run"),
        n_labeled=8,
        low_fraction=0.25,
        max_new_tokens=3,
        lora_r=4,
        calibration=str(tmp_path / "cal.json"),
        probe="1",
        probe_seeds=2,
        probe_validation=2,
        progress=False,
    )
    res = estimate(cfg)
    assert res.probe is not None and res.probe["depth"] == 1 and "skipped" not in res.probe
    assert cfg.probe_calibration == "tiny"


def test_estimate_probe_auto_probes_when_the_calibration_says_it_pays(
    tiny_model_dir, tmp_path, capsys
):
    """`--probe auto` end to end: the depth auto decides from the calibration is the depth the
    estimate probes to, and the decision is reported with what it spent."""
    from dataplan.maths.forecast import Calibration
    from test_cli import run_main

    cal = _calibration(seed=2)  # a seed variance that decays from depth 1 to 2
    # probes made with 2 validation examples and rank-2 adapters: the estimate's are made alike
    cal = replace(cal, probe={"validation": 2, "train": {"lora_r": 2}})
    depth, reason, facts = choose_depth(cal, price=None)
    assert depth == 2 and facts["regime"] == "Dynamic-Critical"
    write_json(tmp_path / "probe-cal.json", cal.as_dict())
    static = Calibration(name="tiny", coef=0.5, intercept=0.3, n_max=1000, residual_std=0.1)
    write_json(tmp_path / "cal.json", static.to_dict())
    args = ["estimate", "--model", str(tiny_model_dir), "--data", str(_pool(tmp_path / "p.jsonl"))]
    args += ["--n-labeled", "8", "--low-fraction", "0.25", "--max-new-tokens", "3", "--lora-r"]
    args += ["4", "--calibration", str(tmp_path / "cal.json"), "--probe", "auto"]
    args += ["--probe-calibration", str(tmp_path / "probe-cal.json"), "--probe-seeds", "2"]
    args += ["--run-dir", str(tmp_path / "run"), "--json"]
    code, out, err = run_main(args, capsys)
    assert code == 0, err
    probe = json.loads(out)["probe"]
    made = Path(probe["probe_run"])
    assert json.loads((made / "result.json").read_text())["examples"]["validation"] == 2
    assert json.loads((made / "config.json").read_text())["settings"] == {"lora_r": 2}
    assert probe["mode"] == "auto" and probe["decision"] == reason and "skipped" not in probe
    assert probe["depth"] == depth and probe["probe_steps_trained"] == depth * 2
    assert probe["regime"] == "Dynamic-Critical" and "combined" in probe


def test_the_shipped_probe_calibration_is_the_studys():
    """The package's probe calibration for the built-in model is the one the committed study
    fitted (every in-fit task, 3 seeds × 8..64 steps), and docs/probe.md states its decision."""
    from dataplan.calibrations import get_calibration, shipped_probe_calibrations
    from dataplan.workflows.probe import load_probe_calibration

    root = Path(__file__).resolve().parents[1]
    study = root / "studies" / "smollm2-135m-instruct" / "study"
    name = get_calibration("smollm2-135m-instruct").name
    assert name in shipped_probe_calibrations()
    shipped = load_probe_calibration(name)
    fitted = ProbeCalibration.from_dict(
        json.loads((study / "probe-calibration.json").read_text(encoding="utf-8"))
    )
    assert shipped == fitted
    data = json.loads((study / "study.json").read_text(encoding="utf-8"))
    probed = sorted(t["task"] for t in data["tasks"] if t.get("in_fit", True) and t.get("probe"))
    assert len(probed) == len([t for t in data["tasks"] if t.get("in_fit", True)]) == 13
    assert sorted(t["task"] for t in shipped.tasks) == probed
    assert [int(d.depth) for d in shipped.depths] == [8, 16, 32, 64]
    assert shipped.n_seeds == 3 and shipped.probe["validation"] == 8
    _, reason, _ = choose_depth(shipped, None)
    assert reason in (root / "docs" / "probe.md").read_text(encoding="utf-8")
