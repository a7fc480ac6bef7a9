"""Pool-wide passes under torchrun: shards as store entries, the same numbers on 1 or 2 ranks.

The unit tests run in this process; the torchrun tests start two CPU processes on gloo
(``python -m torch.distributed.run --standalone --nproc-per-node 2``) and compare every number
with a one-process run of the same command.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from conftest import run_torchrun
from dataplan.compute.distributed import sharded_pass
from dataplan.io import read_parquet
from dataplan.store import ResultStore, ShardCache


def test_a_shard_keeps_arrays_and_text_columns(tmp_path):
    shards = [range(0, 3), range(3, 5)]
    cache = ShardCache(ResultStore(tmp_path), "pass", shards)
    texts = ["", "héllo\nworld", "日本"]
    cache.put(0, {"x": np.arange(3.0), "n": np.array([1, 2, 3]), "text": texts})
    got = cache.get(0)
    assert got is not None and got["text"] == texts
    np.testing.assert_array_equal(got["x"], np.arange(3.0))
    assert got["n"].dtype == np.int64
    assert cache.get(1) is None
    # A shard of the pool cut otherwise is not this shard.
    other = ShardCache(ResultStore(tmp_path), "pass", [range(1, 4), range(4, 5)])
    assert other.get(0) is None


def test_a_sharded_pass_computes_only_missing_shards_in_order(tmp_path):
    store = ResultStore(tmp_path)
    calls: list[int] = []

    def work(i: int, r: range) -> dict:
        calls.append(i)
        return {"sq": np.array([j * j for j in r]), "name": [f"e{j}" for j in r]}

    out = sharded_pass(7, work, store=store, name="p", shard_size=3)
    assert calls == [0, 1, 2]
    np.testing.assert_array_equal(out["sq"], np.arange(7) ** 2)
    assert out["name"] == [f"e{j}" for j in range(7)]
    (tmp_path / "p-3-00001.safetensors").unlink()  # a shard lost (a killed rank's)
    calls.clear()
    again = sharded_pass(7, work, store=store, name="p", shard_size=3)
    assert calls == [1]
    np.testing.assert_array_equal(again["sq"], out["sq"])
    assert sharded_pass(0, work, store=store, name="p", shard_size=3) == {}


def _torchrun(args: list[str], cwd: Path, nproc: int = 2) -> subprocess.CompletedProcess:
    return run_torchrun(args, cwd, nproc)


def _in_process(args: list[str], cwd: Path, capsys) -> str:
    """The one-process reference run of the same command, in ``cwd``; its stdout."""
    from test_cli import run_main

    here = Path.cwd()
    os.chdir(cwd)
    try:
        code, out, err = run_main(args, capsys)
    finally:
        os.chdir(here)
    assert code == 0, err
    return out


WORDS = ["red", "blue", "green", "cat"]


def _labelled(path: Path, n: int) -> Path:
    rng = np.random.default_rng(1)
    with path.open("w") as fh:
        for i in range(n):
            prompt = f"Say {' '.join(rng.choice(WORDS, size=1 + i % 4))}"
            fh.write(json.dumps({"id": f"e{i}", "prompt": prompt, "answer": WORDS[i % 4]}) + "\n")
    return path


def test_estimate_under_torchrun_equals_one_process(tiny_model_dir, tmp_path, capsys):
    _labelled(tmp_path / "pool.jsonl", 30)

    def args(run: str) -> list[str]:
        return [
            "estimate",
            "--model",
            str(tiny_model_dir),
            "--data",
            "pool.jsonl",
            "--n-labeled",
            "6",
            "--low-fraction",
            "0.25",
            "--max-new-tokens",
            "3",
            "--lora-r",
            "4",
            "--adapter-seeds",
            "0,1,2",
            "--random-baseline",
            "--shard-size",
            "8",  # 4 shards of the pool: 2 per rank
            "--run-dir",
            run,
            "--json",
        ]

    proc = _torchrun(args("two"), tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = json.loads(proc.stdout)  # exactly one JSON object: rank 0 prints
    out = _in_process(args("one"), tmp_path, capsys)
    one = json.loads(out)
    shards = sorted(p.name for p in (tmp_path / "two" / "shards").iterdir())
    assert shards == [f"confidence-8-{i:05d}.safetensors" for i in range(4)]
    assert two["chosen_ids"] == one["chosen_ids"]
    assert two["cos_low_per_seed"] == pytest.approx(one["cos_low_per_seed"], rel=1e-5, abs=1e-7)
    assert two["baselines"]["cos_random"] == pytest.approx(one["baselines"]["cos_random"], 1e-5)
    c1 = read_parquet(tmp_path / "one" / "confidences.parquet")
    c2 = read_parquet(tmp_path / "two" / "confidences.parquet")
    assert c1["generated"] == c2["generated"] and c1["id"] == c2["id"]
    np.testing.assert_allclose(c2["confidence"], c1["confidence"], rtol=1e-5)
    grams = sorted(p.name for p in (tmp_path / "two").glob("gradients-*.safetensors"))
    assert len(grams) == 4  # three adapter seeds and the random baseline, each once
    seconds = json.loads((tmp_path / "two" / "compute_seconds.json").read_text())
    assert {g.removesuffix(".safetensors") for g in grams} <= set(seconds)


def test_weigh_under_torchrun_equals_one_process(tiny_model_dir, tmp_path, capsys):
    _labelled(tmp_path / "data.jsonl", 20)
    _labelled(tmp_path / "holdout.jsonl", 4)

    def args(tag: str) -> list[str]:
        return [
            "weigh",
            "--model",
            str(tiny_model_dir),
            "--data",
            "data.jsonl",
            "--holdout",
            "holdout.jsonl",
            "--k",
            "2",
            "--shard-size",
            "6",
            "--run-dir",
            f"run-{tag}",
            "--out",
            f"w-{tag}.parquet",
            "--json",
        ]

    proc = _torchrun(args("two"), tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    json.loads(proc.stdout)
    _in_process(args("one"), tmp_path, capsys)
    one, two = read_parquet(tmp_path / "w-one.parquet"), read_parquet(tmp_path / "w-two.parquet")
    assert one["id"] == two["id"] and one["demonstrations"] == two["demonstrations"]
    np.testing.assert_allclose(two["score"], one["score"], rtol=1e-5, atol=1e-7)
    shards = sorted(p.name for p in (tmp_path / "run-two" / "shards").iterdir())
    assert shards == [f"ica-6-{i:05d}.safetensors" for i in range(4)]


def test_train_ica_under_torchrun_scores_in_blocks_and_equals_one_process(
    tiny_model_dir, tmp_path, capsys
):
    """Each rank scores a block of the examples and gathers the rest: the weights before
    training are those of one process; a refresh gathers again on every rank."""
    _labelled(tmp_path / "data.jsonl", 18)
    _labelled(tmp_path / "holdout.jsonl", 4)

    def args(tag: str) -> list[str]:
        return [
            "train",
            "--model",
            str(tiny_model_dir),
            "--data",
            "data.jsonl",
            "--holdout",
            "holdout.jsonl",
            "--weighting",
            "ica",
            "--k",
            "2",
            "--refresh",
            "2",
            "--batch-size",
            "3",
            "--min-steps",
            "2",
            "--max-steps",
            "2",
            "--lora-r",
            "2",
            "--out",
            f"adapter-{tag}",
            "--json",
        ]

    proc = _torchrun(args("two"), tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = json.loads(proc.stdout)
    assert two["world_size"] == 2 and [w["step"] for w in two["weights"]] == [0, 1]
    _in_process(args("one"), tmp_path, capsys)
    one_w = read_parquet(tmp_path / "adapter-one-run" / "weights.parquet")
    two_w = read_parquet(tmp_path / "adapter-two-run" / "weights.parquet")
    assert one_w["id"] == two_w["id"]
    # float32 scores of other batches (blocks pad differently), then min-max normalised
    np.testing.assert_allclose(two_w["weight_step0"], one_w["weight_step0"], atol=1e-4)
    assert len(two_w["weight_step1"]) == 18


def test_gather_rows_alone_is_one_call():
    from dataplan.compute.distributed import gather_rows

    calls: list[range] = []

    def work(rows: range) -> np.ndarray:
        calls.append(rows)
        return np.array([j * 2.0 for j in rows])

    np.testing.assert_array_equal(gather_rows(5, work), [0, 2, 4, 6, 8])
    assert calls == [range(0, 5)]
    assert gather_rows(0, work).shape == (0,)


def test_curve_under_torchrun_trains_ddp_and_deals_out_evaluation(tiny_model_dir, tmp_path, capsys):
    """Two ranks: the zero-shot point (evaluation only) equals one process's; a trained point is
    DDP (an effective batch of 2 × 4, half the steps) and keyed by its world size."""
    rows = [
        {"id": f"e{i}", "prompt": f"Colour {i}?", "answer": WORDS[i % 4], "choices": list(WORDS)}
        for i in range(40)
    ]
    (tmp_path / "task.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    def args(tag: str) -> list[str]:
        return [
            "curve",
            "--model",
            str(tiny_model_dir),
            "--data",
            "task.jsonl",
            "--budgets",
            "0,16",
            "--seeds",
            "0",
            "--batch-size",
            "4",
            "--epochs",
            "2",
            "--min-steps",
            "1",
            "--lora-r",
            "4",
            "--max-test",
            "12",
            "--eval-batch-size",
            "4",  # 3 evaluation batches dealt to 2 ranks
            "--max-new-tokens",
            "3",
            "--cache",
            f"cache-{tag}",
            "--out-dir",
            f"out-{tag}",
            "--json",
        ]

    proc = _torchrun(args("two"), tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    json.loads(proc.stdout)  # one JSON object, from rank 0
    _in_process(args("one"), tmp_path, capsys)
    one = {p["budget"]: p for p in json.loads((tmp_path / "out-one" / "points.json").read_text())}
    two = {p["budget"]: p for p in json.loads((tmp_path / "out-two" / "points.json").read_text())}
    for key in ("exact_match", "token_f1", "loglik_accuracy", "examples"):
        assert two[0][key] == one[0][key], key
    assert two[16]["world_size"] == 2 and two[16]["effective_batch"] == 8
    assert two[16]["train"]["steps"] == 4 and one[16]["train"]["steps"] == 8  # 2 epochs of 16
    assert "world_size" not in one[16]
    keys = {p["budget"]: p["settings"] for p in two.values()}
    assert keys[16]["world_size"] == 2 and "world_size" not in keys[0]


def test_scaling_runs_under_torchrun_count_the_effective_batch(tiny_model_dir, tmp_path):
    rows = [
        {"prompt": "x" * (1 + i % 9), "answer": "ab"[i % 2], "choices": ["a", "b"]}
        for i in range(40)
    ]
    (tmp_path / "task.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = [
        "scaling",
        "runs",
        "--model",
        str(tiny_model_dir),
        "--data",
        "task.jsonl",
        "--sizes",  # torchrun's parser would take --n for one of its own
        "4,8",
        "--strategies",
        "shortest",
        "--compute-tokens",
        "400",
        "--batch-size",
        "4",
        "--max-test",
        "4",
        "--cache",
        "cache",
        "--out",
        "runs.csv",
        "--quiet",
    ]
    proc = _torchrun(args, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    import csv

    runs = list(csv.DictReader((tmp_path / "runs.csv").open()))
    assert [int(r["n_examples"]) for r in runs] == [4, 8]
    for r in runs:  # compute-bounded: tokens seen ≈ the budget with a batch of 2 × min(4, n)
        assert 400 <= float(r["tokens_seen"]) < 400 + 2 * 4 * float(r["mean_tokens"])
    cached = [json.loads(p.read_text()) for p in sorted((tmp_path / "cache").glob("*.json"))]
    assert len(cached) == 2 and all(c["settings"]["world_size"] == 2 for c in cached)


def test_train_and_probe_under_torchrun(tiny_model_dir, tmp_path):
    """`train` (RHO weights: the reference adapter trains DDP too) and `probe` on 2 ranks: one
    adapter / one run folder written, keyed and reported with the world size."""
    _labelled(tmp_path / "data.jsonl", 24)
    _labelled(tmp_path / "holdout.jsonl", 4)
    train = [
        "train",
        "--model",
        str(tiny_model_dir),
        "--data",
        "data.jsonl",
        "--holdout",
        "holdout.jsonl",
        "--weighting",
        "rho",
        "--batch-size",
        "4",
        "--min-steps",
        "1",
        "--epochs",
        "1",
        "--lora-r",
        "2",
        "--out",
        "adapter",
        "--json",
    ]
    proc = _torchrun(train, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)
    assert summary["world_size"] == 2 and summary["effective_batch"] == 8
    assert summary["steps"] == 3  # one epoch of 24 at 2 × 4
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()
    config = json.loads((tmp_path / "adapter-run" / "config.json").read_text())
    assert config["world_size"] == 2  # a run folder of another world size is another run
    probe = [
        "probe",
        "--model",
        str(tiny_model_dir),
        "--data",
        "data.jsonl",
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
        "--run-dir",
        "probe",
        "--json",
    ]
    proc = _torchrun(probe, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    assert [(r["seed"], r["c"]) for r in result["rows"]] == [(0, 1), (0, 2), (1, 1), (1, 2)]
    assert len(list((tmp_path / "probe" / "probes").glob("*.json"))) == 2


def test_coslow_under_torchrun_shares_the_gradient_pass(tiny_model_dir, tmp_path, capsys):
    _labelled(tmp_path / "l.jsonl", 7)
    args = [
        "coslow",
        "--model",
        str(tiny_model_dir),
        "--labeled",
        "l.jsonl",
        "--lora-r",
        "4",
        "--batch-size",
        "2",  # 4 batches: 2 per rank
        "--json",
    ]
    proc = _torchrun(args, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = json.loads(proc.stdout)  # exactly one JSON object: rank 0 prints
    one = json.loads(_in_process(args, tmp_path, capsys))
    assert two["coslow"] == pytest.approx(one["coslow"], rel=1e-6)
    np.testing.assert_allclose(two["cosines"], one["cosines"], rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(two["grad_norms"], one["grad_norms"], rtol=1e-6)
    proc = _torchrun([*args, "--max-memory", "1GB"], tmp_path)  # budgeted batches too
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout)["coslow"] == pytest.approx(one["coslow"], rel=1e-6)
