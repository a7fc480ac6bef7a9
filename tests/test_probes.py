"""Probes on the training core: the trajectory measured at the requested depths equals the model
saved at those steps, seeds are reproducible, and the caller's model is left unchanged."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import make_tiny_llama
from dataplan.data.formatting import PromptFormatter, encode_examples
from dataplan.data.loading import Example
from dataplan.training import TrainSettings, train
from dataplan.training.probes import probe_trajectory

SETTINGS = TrainSettings(batch_size=4, learning_rate=5e-3)


def _examples(n: int, offset: int = 0) -> list[Example]:
    return [
        Example(
            id=f"e{i}",
            prompt=f"{i} is odd or even?",
            answer="odd" if i % 2 else "even",
            choices=("odd", "even"),
        )
        for i in range(offset, offset + n)
    ]


def test_the_trajectory_is_the_model_at_each_depth(char_tokenizer, tmp_path):
    from peft import PeftModel

    from dataplan.compute.example_stats import answer_losses

    fmt = PromptFormatter(char_tokenizer, use_chat_template=False)
    model = make_tiny_llama(len(char_tokenizer))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    train_set, validation = _examples(8), _examples(4, offset=100)
    trajectory = probe_trajectory(
        model, train_set, validation, fmt, [2, 4], seed=3, settings=SETTINGS
    )
    assert [p.depth for p in trajectory.points] == [0, 2, 4]
    assert all(p.val_accuracy is not None and 0 <= p.val_accuracy <= 1 for p in trajectory.points)
    # The caller's model is unchanged and carries no adapter.
    assert not any("lora" in k for k in model.state_dict())
    assert all(np.array_equal(before[k], v) for k, v in model.state_dict().items())
    # Reference: the same run (seed, schedule) saving its adapter at step 2, scored afterwards.
    result = train(
        model,
        train_set,
        fmt,
        TrainSettings(batch_size=4, learning_rate=5e-3, min_steps=4, max_steps=4),
        seed=3,
        steps=4,
        checkpoints={2: tmp_path / "step2"},
    )
    result.model.unload()
    at2 = PeftModel.from_pretrained(model, str(tmp_path / "step2")).eval()
    pad = char_tokenizer.pad_token_id
    expected = float(np.mean(answer_losses(at2, encode_examples(fmt, validation), pad)))
    assert trajectory.points[1].val_loss == pytest.approx(expected, rel=1e-5)
    at2.unload()
    zero = float(np.mean(answer_losses(model, encode_examples(fmt, train_set), pad)))
    assert trajectory.points[0].train_loss == pytest.approx(zero, rel=1e-6)
    features = trajectory.features(4)
    assert features["train_loss_drop"] == pytest.approx(
        trajectory.points[0].train_loss - trajectory.points[2].train_loss
    )
    with pytest.raises(KeyError):
        trajectory.features(3)


def test_probes_are_reproducible_per_seed(char_tokenizer):
    from dataplan.training.probes import ProbeTrajectory

    fmt = PromptFormatter(char_tokenizer, use_chat_template=False)
    model = make_tiny_llama(len(char_tokenizer))
    args = (model, _examples(8), _examples(4, offset=100), fmt, [1, 3])
    a = probe_trajectory(*args, seed=0, settings=SETTINGS)
    b = probe_trajectory(*args, seed=0, settings=SETTINGS)
    c = probe_trajectory(*args, seed=1, settings=SETTINGS)
    assert a == b
    assert a.points[-1].train_loss != c.points[-1].train_loss
    assert ProbeTrajectory.from_dict(a.as_dict()) == a


def test_probe_arguments_are_checked(char_tokenizer):
    fmt = PromptFormatter(char_tokenizer, use_chat_template=False)
    model = make_tiny_llama(len(char_tokenizer))
    with pytest.raises(ValueError, match="increasing"):
        probe_trajectory(model, _examples(4), _examples(2, 50), fmt, [4, 2], seed=0)
    with pytest.raises(ValueError, match="validation"):
        probe_trajectory(model, _examples(4), [], fmt, [2], seed=0)
    with pytest.raises(ValueError, match="LoRA"):
        probe_trajectory(
            model,
            _examples(4),
            _examples(2, 50),
            fmt,
            [2],
            seed=0,
            settings=TrainSettings(method="full"),
        )


def _write_labelled(path, n: int) -> None:
    import json

    rows = [
        {
            "id": f"x{i}",
            "prompt": f"{i} is odd or even?",
            "answer": "odd" if i % 2 else "even",
            "choices": ["odd", "even"],
        }
        for i in range(n)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _probe_args(tiny_model_dir, data, run_dir, *extra):
    return [
        "probe",
        "--model",
        str(tiny_model_dir),
        "--data",
        str(data),
        "--steps",
        "1,2",
        "--seeds",
        "2",
        "--validation",
        "3",
        "--batch-size",
        "4",
        "--lora-r",
        "2",
        "--run-dir",
        str(run_dir),
        "--json",
        *extra,
    ]


def test_probe_command_writes_and_resumes_seed_by_seed(tiny_model_dir, tmp_path, capsys):
    import csv
    import json

    from test_cli import run_main

    data = tmp_path / "labelled.jsonl"
    _write_labelled(data, 10)
    run_dir = tmp_path / "run"
    code, out, err = run_main(_probe_args(tiny_model_dir, data, run_dir), capsys)
    assert code == 0, err
    summary = json.loads(out)
    assert summary["examples"] == {"train": 7, "validation": 3}
    rows = list(csv.DictReader((run_dir / "probes.csv").open()))
    assert [(r["seed"], r["c"]) for r in rows] == [("0", "1"), ("0", "2"), ("1", "1"), ("1", "2")]
    assert set(rows[0]) >= {"train_loss_drop", "val_loss", "val_loss_drop", "val_accuracy"}
    assert (run_dir / "probes.png").stat().st_size > 1000
    cached = {p.name: p.stat().st_mtime_ns for p in (run_dir / "probes").glob("*.json")}
    assert len(cached) == 2
    # More seeds: the two finished ones are reused, one more runs.
    code, out, err = run_main(
        [*_probe_args(tiny_model_dir, data, run_dir)[:-1], "--seeds", "3", "--json"], capsys
    )
    assert code == 0, err
    again = {p.name: p.stat().st_mtime_ns for p in (run_dir / "probes").glob("*.json")}
    assert len(again) == 3 and all(again[k] == v for k, v in cached.items())
    assert json.loads(out)["by_depth"][0]["val_loss"]["std"] is not None
    # Other settings in the same folder are refused, not mixed.
    code, out, err = run_main(
        [*_probe_args(tiny_model_dir, data, run_dir)[:-1], "--steps", "1,3", "--json"], capsys
    )
    assert code == 2 and "different settings (steps" in err, err


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (["--task", "sports_understanding"], "exactly one of --task, --data or --estimate-dir"),
        (["--steps", "4,2"], "--steps must be increasing"),
        (["--seeds", "1"], "--seeds must be at least 2"),
        (["--validation", "9"], "too few to hold out --validation 9"),
        (["--method", "full"], "LoRA"),
    ],
)
def test_probe_command_refuses_bad_options(tiny_model_dir, tmp_path, capsys, extra, fragment):
    from test_cli import run_main

    data = tmp_path / "labelled.jsonl"
    _write_labelled(data, 10)
    args = _probe_args(tiny_model_dir, data, tmp_path / "run")
    if extra[0] in ("--steps", "--seeds", "--validation"):  # replace the given value
        i = args.index(extra[0])
        args[i + 1] = extra[1]
    else:
        args = [*args[:-1], *extra, "--json"]
    code, out, err = run_main(args, capsys)
    assert code == 2 and out == "", err
    assert fragment in err, err
    assert not (tmp_path / "run" / "probes").exists()  # nothing half-written


def test_probe_with_a_calibration_forecasts_and_decomposes(tiny_model_dir, tmp_path, capsys):
    import csv
    import json

    from dataplan.io import write_json
    from dataplan.maths.probe_calibration import ProbeCalibration, fit_probe_calibration
    from test_cli import run_main

    rng = np.random.default_rng(0)
    truth = rng.uniform(size=8)
    features = truth[:, None, None] + rng.normal(size=(8, 3, 2)) * np.array([0.3, 0.1])
    cal = fit_probe_calibration(features, 0.3 + 0.5 * truth, [1, 2])
    write_json(tmp_path / "cal.json", cal.as_dict())
    data = tmp_path / "labelled.jsonl"
    _write_labelled(data, 10)
    run_dir = tmp_path / "run"
    args = _probe_args(tiny_model_dir, data, run_dir)[:-1]
    code, out, err = run_main(
        [*args, "--calibration", str(tmp_path / "cal.json"), "--price", "1e-3", "--json"], capsys
    )
    assert code == 0, err
    forecast = json.loads(out)["forecast"]
    rows = list(csv.DictReader((run_dir / "probes.csv").open()))
    loaded = ProbeCalibration.from_dict(json.loads((tmp_path / "cal.json").read_text()))
    for d in forecast["by_depth"]:
        mine = [float(r["val_loss_drop"]) for r in rows if int(r["c"]) == d["c"]]
        expected = np.mean([loaded.predict(d["c"], x)[0] for x in mine])
        assert d["auc"] == pytest.approx(expected)
        lo, hi = d["interval"]
        assert lo < d["auc"] < hi
    dec = forecast["decomposition"]
    assert dec["L_int"] == pytest.approx(cal.intrinsic) and dec["L_int_given"]
    assert dec["regime"] in ("Static-Sufficient", "Dynamic-Critical", "Noise-Dominant")
    assert (run_dir / "decay.png").exists()
    # The task on the phase diagram: its own probes' α at the calibration's L_int.
    point = forecast["phase_point"]
    assert point["source"] == "its own probes" and point["alpha"] == dec["alpha"]
    assert point["intrinsic"] == pytest.approx(cal.intrinsic)
    assert (run_dir / "phase-diagram.png").stat().st_size > 1000
    from dataplan.reporting.readers import read_run

    (section,) = read_run(run_dir)
    assert section.figures[-1].caption.endswith("(placed by its own probes)")
    # The table form runs too, from the same probes; with --target it gives n* at each depth.
    target = ["--target", "0.8", "--n-max", "1000"]
    code, out, err = run_main([*args, "--calibration", str(tmp_path / "cal.json"), *target], capsys)
    assert code == 0 and "forecast of AUC'" in out and "n*" in out, err
    code, out, err = run_main(
        [*args, "--calibration", str(tmp_path / "cal.json"), *target, "--json"], capsys
    )
    assert code == 0, err
    from dataplan.maths.forecast import budget_for_target

    for d, before in zip(
        json.loads(out)["forecast"]["by_depth"], forecast["by_depth"], strict=True
    ):
        assert d["auc"] == pytest.approx(before["auc"])  # the cached probes, not new ones
        assert d["n_star"] == pytest.approx(budget_for_target(d["auc"], 0.8, 1000))
        lo, hi = d["interval"]
        assert d["n_star_interval"] == pytest.approx(
            [budget_for_target(hi, 0.8, 1000), budget_for_target(lo, 0.8, 1000)]
        )
    code, _, err = run_main(
        [*args, "--calibration", str(tmp_path / "cal.json"), "--target", "0.8"], capsys
    )
    assert code == 2 and "--target needs --n-max" in err, err
    code, _, err = run_main(
        [*args, "--calibration", str(tmp_path / "cal.json"), "--n-max", "9"], capsys
    )
    assert code == 2 and "give --target" in err, err
    # A depth the calibration lacks, or a broken file, exits 2.
    other = _probe_args(tiny_model_dir, data, tmp_path / "r2")[:-1]
    other[other.index("--steps") + 1] = "1,3"
    code, _, err = run_main([*other, "--calibration", str(tmp_path / "cal.json"), "--json"], capsys)
    assert code == 2 and "--steps 3 not in the calibration" in err, err
    (tmp_path / "broken.json").write_text("{}")
    code, _, err = run_main(
        [*args, "--calibration", str(tmp_path / "broken.json"), "--json"], capsys
    )
    assert code == 2 and "not a probe calibration" in err, err
