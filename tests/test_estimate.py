"""`dataplan estimate` end to end on a tiny random model: run folder, resume, annotation flow."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dataplan.errors import ConfigError, InputError
from dataplan.workflows.estimate import EstimateConfig, estimate

WORDS = ["red", "blue", "green", "cat", "dog", "sun", "moon", "tree"]


def _pool(path, n=24, labelled=True):
    rng = np.random.default_rng(0)
    with path.open("w") as fh:
        for i in range(n):
            rec = {"id": f"ex{i}", "prompt": f"Say {' '.join(rng.choice(WORDS, size=1 + i % 4))}"}
            if labelled:
                rec["answer"] = str(rng.choice(WORDS))
            fh.write(json.dumps(rec) + "\n")
    return path


def _cfg(model_dir, data, run_dir, **kw):
    base = dict(
        model=str(model_dir),
        data=str(data),
        run_dir=str(run_dir),
        n_labeled=4,
        low_fraction=0.25,
        max_new_tokens=4,
        generation_batch_size=8,
        gradient_batch_size=3,
        lora_r=4,
        lora_alpha=8,
        coef=0.5,
        intercept=0.3,
        n_max=1000,
        target=0.8,
        progress=False,
    )
    base.update(kw)
    return EstimateConfig(**base)


def test_estimate_labelled_pool_writes_run_folder(tiny_model_dir, tmp_path):
    data = _pool(tmp_path / "pool.jsonl")
    cfg = _cfg(tiny_model_dir, data, tmp_path / "run", adapter_seeds=(0, 1))
    res = estimate(cfg)
    assert res.status == "ok" and res.n_pool == 24 and res.n_low == 6
    assert len(res.chosen_ids) == 4 and len(res.cos_low_per_seed) == 2
    assert -1.0 <= res.cos_low <= 1.0
    assert res.baselines["cos_random"] is not None and res.baselines["mean_grad_norm"] > 0
    fc = res.forecast
    assert fc is not None and fc.auc == pytest.approx(0.5 * res.cos_low + 0.3)
    run = tmp_path / "run"
    for name in (
        "config.json",
        "versions.json",
        "confidences.parquet",
        "chosen.jsonl",
        "result.json",
        "curve.png",
    ):
        assert (run / name).exists(), name
    saved = json.loads((run / "result.json").read_text())
    assert saved["cos_low"] == pytest.approx(res.cos_low)
    assert np.array(saved["cosines"]).shape == (4, 4)
    assert saved["versions"]["torch"]
    assert not list(run.glob(".*.tmp"))
    # The chosen examples come from the lowest-confidence share of the pool, by the pool's own
    # confidences (a cut the chosen confidences alone cannot show).
    from dataplan.io import read_parquet

    pool = read_parquet(run / "confidences.parquet")
    n_low = int(np.floor(cfg.low_fraction * len(pool["id"]) + 1e-9))
    cut = np.sort(np.asarray(pool["confidence"]))[n_low - 1]
    confidences = {
        json.loads(line)["id"]: json.loads(line)["confidence"]
        for line in (run / "chosen.jsonl").open()
    }
    assert set(confidences) == set(res.chosen_ids) and len(confidences) == cfg.n_labeled
    assert all(c <= cut for c in confidences.values())
    by_id = dict(zip(pool["id"], pool["confidence"], strict=True))
    assert all(by_id[i] == pytest.approx(c) for i, c in confidences.items())


def test_estimate_resumes_from_cache(tiny_model_dir, tmp_path, monkeypatch):
    data = _pool(tmp_path / "pool.jsonl")
    first = estimate(_cfg(tiny_model_dir, data, tmp_path / "run"))

    def boom(*a, **k):
        raise AssertionError("recomputed a cached step")

    monkeypatch.setattr("dataplan.compute.generation.greedy_answers", boom)
    monkeypatch.setattr("dataplan.workflows.estimate.coslow", boom)
    again = estimate(
        _cfg(tiny_model_dir, data, tmp_path / "run", target=0.5)
    )  # forecast settings may change
    assert again.cos_low == first.cos_low and again.chosen_ids == first.chosen_ids
    assert again.forecast.target == 0.5


def test_estimate_refuses_run_folder_with_other_settings(tiny_model_dir, tmp_path):
    data = _pool(tmp_path / "pool.jsonl")
    estimate(_cfg(tiny_model_dir, data, tmp_path / "run", random_baseline=False))
    with pytest.raises(ConfigError, match="different settings"):
        estimate(_cfg(tiny_model_dir, data, tmp_path / "run", seed=1))


def test_annotation_flow(tiny_model_dir, tmp_path):
    data = _pool(tmp_path / "pool.jsonl", labelled=False)
    with pytest.raises(InputError, match="--annotate-out"):
        estimate(_cfg(tiny_model_dir, data, tmp_path / "run"))
    assert not (tmp_path / "run").exists()
    to_label = tmp_path / "to_label.jsonl"
    first = estimate(_cfg(tiny_model_dir, data, tmp_path / "run", annotate_out=str(to_label)))
    assert first.status == "needs_labels"
    records = [json.loads(line) for line in to_label.open()]
    assert len(records) == 4 and all(r["answer"] is None for r in records)
    with pytest.raises(InputError, match='field "answer": missing answer'):
        estimate(_cfg(tiny_model_dir, data, tmp_path / "run", labeled=str(to_label)))
    labelled = tmp_path / "labelled.jsonl"
    labelled.write_text("".join(json.dumps({**r, "answer": "blue"}) + "\n" for r in records))
    res = estimate(_cfg(tiny_model_dir, data, tmp_path / "run", labeled=str(labelled)))
    assert res.status == "ok" and sorted(res.chosen_ids) == sorted(r["id"] for r in records)
    assert res.baselines["cos_random"] is None  # an unlabelled pool has no random labelled sample


def test_pool_too_small_fails_before_any_work(tiny_model_dir, tmp_path):
    data = _pool(tmp_path / "pool.jsonl", n=12)
    with pytest.raises(
        InputError, match=r"pool\.jsonl: a pool of 12 examples has 3 in its lowest 25%"
    ):
        estimate(_cfg(tiny_model_dir, data, tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def test_no_calibration_reports_coslow_and_says_so(tiny_model_dir, tmp_path):
    data = _pool(tmp_path / "pool.jsonl")
    res = estimate(_cfg(tiny_model_dir, data, tmp_path / "run", coef=None, intercept=None))
    assert res.forecast is None and "no calibration" in res.note
    assert np.isfinite(res.cos_low)
    assert not (tmp_path / "run" / "curve.png").exists()


@pytest.mark.parametrize(
    ("kw", "fragment"),
    [
        ({"task": "demo"}, "exactly one of --data"),
        ({"low_fraction": 0.0}, "--low-fraction"),
        ({"target": 1.0}, "--target is a normalised"),
        ({"coef": 0.5, "intercept": None}, "go together"),
        ({"lora_r": 0}, "LoRA rank"),
    ],
)
def test_config_validation(tmp_path, kw, fragment):
    with pytest.raises(ConfigError, match=fragment):
        _cfg("m", tmp_path / "d.jsonl", tmp_path / "run", **kw)


def test_estimate_frozen_gradient_space(tiny_model_dir, tmp_path):
    data = _pool(tmp_path / "pool.jsonl")
    res = estimate(
        _cfg(tiny_model_dir, data, tmp_path / "run", gradient_space="frozen", adapter_seeds=(0, 1))
    )
    assert len(res.cos_low_per_seed) == 1 and np.isfinite(res.cos_low)
    assert list((tmp_path / "run").glob("gradients-low-*-frozen.safetensors"))


def test_run_folder_keeps_compute_seconds_across_resumes(tmp_path):
    from dataplan.workflows.run_folder import RunFolder

    run = RunFolder(tmp_path / "r", {"a": 1}).open()
    assert run.compute_seconds() == {}
    run.record_seconds("confidence", 12.3456)
    run.record_seconds("gradients-low", 2.0)
    again = RunFolder(tmp_path / "r", {"a": 1}).open()
    assert again.compute_seconds() == {"confidence": 12.346, "gradients-low": 2.0}


def test_run_folder_keeps_the_versions_that_made_it(tmp_path, monkeypatch):
    import json

    import dataplan.workflows.run_folder as rf

    monkeypatch.setattr(rf, "versions", lambda: {"python": "3.11", "torch": "1", "git_commit": "a"})
    rf.RunFolder(tmp_path / "r", {"a": 1}).open()
    monkeypatch.setattr(rf, "versions", lambda: {"python": "3.11", "torch": "1", "git_commit": "b"})
    rf.RunFolder(tmp_path / "r", {"a": 1}).open()
    assert not (tmp_path / "r" / "versions-resumed.json").exists()
    newer = {"python": "3.11", "torch": "1", "trl": "1.16.0", "git_commit": "b"}
    monkeypatch.setattr(rf, "versions", lambda: newer)  # a package recorded since: the same
    rf.RunFolder(tmp_path / "r", {"a": 1}).open()
    assert not (tmp_path / "r" / "versions-resumed.json").exists()
    monkeypatch.setattr(rf, "versions", lambda: {"python": "3.11", "torch": "2", "git_commit": "c"})
    rf.RunFolder(tmp_path / "r", {"a": 1}).open()
    assert json.loads((tmp_path / "r" / "versions.json").read_text())["torch"] == "1"
    assert json.loads((tmp_path / "r" / "versions-resumed.json").read_text())["torch"] == "2"


def test_versions_name_the_libraries_results_depend_on():
    """TRL makes DPO and SimPO, sentence-transformers a named embedder: recorded like torch."""
    from importlib import metadata

    from dataplan.io import versions

    v = versions()
    assert v["trl"] == metadata.version("trl") and v["torch"] == metadata.version("torch")
    assert "sentence-transformers" in v
