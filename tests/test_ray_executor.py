"""Sweeps on Ray: each point a Ray task on a local Ray (2 CPUs), results identical to local ones.

Ray is an optional extra (``dataplan[ray]``); these tests are skipped without it.
"""

from __future__ import annotations

import json

import pytest

ray = pytest.importorskip("ray")

WORDS = ["red", "blue", "green", "cat"]


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _task(path, n=40):
    rows = [
        {"id": f"e{i}", "prompt": f"Colour {i}?", "answer": WORDS[i % 4], "choices": WORDS}
        for i in range(n)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _curve_args(model, data, tmp_path, tag, *extra):
    return [
        "curve",
        "--model",
        str(model),
        "--data",
        str(data),
        "--budgets",
        "0,4,8",
        "--seeds",
        "0,1",
        "--batch-size",
        "4",
        "--min-steps",
        "2",
        "--max-steps",
        "2",
        "--lora-r",
        "4",
        "--max-test",
        "6",
        "--max-new-tokens",
        "2",
        "--cache",
        str(tmp_path / f"cache-{tag}"),
        "--out-dir",
        str(tmp_path / f"out-{tag}"),
        "--json",
        *extra,
    ]


def _without_timing(point):
    return {k: v for k, v in point.items() if k not in ("seconds", "train")} | {
        "train": {k: v for k, v in point["train"].items() if k != "seconds"}
        if point.get("train")
        else None
    }


def test_a_curve_on_ray_equals_the_local_curve(tiny_model_dir, tmp_path, capsys, local_ray):
    from test_cli import run_main

    data = _task(tmp_path / "task.jsonl")
    code, out, err = run_main(_curve_args(tiny_model_dir, data, tmp_path, "local"), capsys)
    assert code == 0, err
    code, out_ray, err = run_main(
        _curve_args(tiny_model_dir, data, tmp_path, "ray", "--executor", "ray"), capsys
    )
    assert code == 0, err
    local, on_ray = json.loads(out), json.loads(out_ray)
    assert on_ray["curve"] == local["curve"] and on_ray["auc"] == local["auc"]
    cached = sorted(p.name for p in (tmp_path / "cache-ray").glob("*.json"))
    assert cached == sorted(p.name for p in (tmp_path / "cache-local").glob("*.json"))
    assert len(cached) == 5  # zero-shot once, 2 budgets × 2 seeds, each written by its task
    for name in cached:
        a = json.loads((tmp_path / "cache-local" / name).read_text())
        b = json.loads((tmp_path / "cache-ray" / name).read_text())
        assert _without_timing(a) == _without_timing(b), name
    # A rerun computes nothing: every point was written through the result store.
    mtimes = {p: p.stat().st_mtime_ns for p in (tmp_path / "cache-ray").glob("*.json")}
    code, _, err = run_main(
        _curve_args(tiny_model_dir, data, tmp_path, "ray", "--executor", "ray"), capsys
    )
    assert code == 0, err
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes


def test_probes_and_scaling_runs_on_ray(tiny_model_dir, tmp_path, capsys, local_ray):
    from test_cli import run_main

    data = _task(tmp_path / "task.jsonl", 24)
    probe = [
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
        "4",
        "--batch-size",
        "2",
        "--lora-r",
        "2",
        "--json",
    ]
    code, out, err = run_main([*probe, "--run-dir", str(tmp_path / "p-local")], capsys)
    assert code == 0, err
    code, out_ray, err = run_main(
        [*probe, "--run-dir", str(tmp_path / "p-ray"), "--executor", "ray"], capsys
    )
    assert code == 0, err
    assert json.loads(out_ray)["rows"] == json.loads(out)["rows"]
    runs = [
        "scaling",
        "runs",
        "--model",
        str(tiny_model_dir),
        "--data",
        str(data),
        "--n",
        "4,8",
        "--strategies",
        "shortest",
        "--compute-tokens",
        "100",
        "--batch-size",
        "4",
        "--max-test",
        "4",
        "--quiet",
    ]
    for tag, extra in (("local", []), ("ray", ["--executor", "ray"])):
        code, _, err = run_main(
            [
                *runs,
                "--cache",
                str(tmp_path / f"c-{tag}"),
                "--out",
                str(tmp_path / f"{tag}.csv"),
                *extra,
            ],
            capsys,
        )
        assert code == 0, err
    assert (tmp_path / "ray.csv").read_text() == (tmp_path / "local.csv").read_text()


def test_executor_options_are_checked(tiny_model_dir, tmp_path, capsys):
    from test_cli import run_main

    data = _task(tmp_path / "task.jsonl")
    for extra, fragment in (
        (["--executor", "slurm"], "--executor must be local or ray"),
        (["--ray-address", "auto"], "--ray-address needs --executor ray"),
        (["--executor", "ray", "--cpus-per-point", "0"], "--cpus-per-point"),
    ):
        code, _, err = run_main(_curve_args(tiny_model_dir, data, tmp_path, "x", *extra), capsys)
        assert code == 2 and fragment in err, err


def test_a_worker_refuses_a_point_keyed_for_another_device():
    """A GPU worker must not cache a result under the cpu/float32 key a CPU driver made."""
    from dataplan.errors import ConfigError
    from dataplan.workflows.executor import _check_runtime
    from dataplan.workflows.experiment import ModelSpec

    spec = ModelSpec("m")  # auto: cpu/float32 on this machine
    _check_runtime(spec, {"device": "cpu", "dtype": "float32", "n": 4})
    with pytest.raises(ConfigError, match="give --device and --dtype explicitly"):
        _check_runtime(spec, {"device": "cuda", "dtype": "bfloat16", "n": 4})
