"""`dataplan select`: every method end to end on a tiny model, errors, resume, a planted-noise toy."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from dataplan.errors import ConfigError
from dataplan.io import read_parquet
from dataplan.workflows.select import SelectConfig, select
from test_cli import run_main

KEYS = "abcdefgh"
MAPPING = dict(zip(KEYS, "PQRSTUVW", strict=True))


def _write_pool(path, n=40, noisy=(), seed=0):
    """Toy task: prompt 'x=<key>', answer a fixed letter per key; ``noisy`` rows get a wrong one."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        key = KEYS[i % len(KEYS)]
        answer = MAPPING[key]
        if i in noisy:
            answer = rng.choice([v for v in MAPPING.values() if v != answer])
        rows.append({"id": f"ex{i}", "prompt": f"x={key}", "answer": str(answer)})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return rows


def _cfg(tmp_path, model_dir, method, **kw):
    base = dict(
        method=method,
        data=str(tmp_path / "pool.jsonl"),
        model=str(model_dir),
        fraction=0.25,
        out=str(tmp_path / f"{method}.jsonl"),
        scores_out=str(tmp_path / f"{method}.parquet"),
        run_dir=str(tmp_path / "run"),
        progress=False,
        epochs=1.0,
        stats_batch_size=4,
        shard_size=16,
    )
    base.update(kw)
    return SelectConfig(**base)


@pytest.mark.parametrize("method", ["gsnr", "gradnorm", "gradsim", "ifd", "loss", "random"])
def test_every_method_writes_subset_and_scores(tmp_path, tiny_model_dir, method):
    _write_pool(tmp_path / "pool.jsonl", n=24)
    _write_pool(tmp_path / "target.jsonl", n=4, seed=1)
    extra = {"target": str(tmp_path / "target.jsonl")} if method == "gradsim" else {}
    result = select(_cfg(tmp_path, tiny_model_dir, method, **extra))
    assert result.k == 6 and len(result.selected) == 6
    subset = [json.loads(line) for line in (tmp_path / f"{method}.jsonl").read_text().splitlines()]
    table = read_parquet(tmp_path / f"{method}.parquet")
    assert sorted(table["rank"]) == list(range(24))
    assert table["id"] == [f"ex{i}" for i in range(24)]
    scores = np.asarray(table["score"])
    assert np.all(np.isfinite(scores))
    # The subset is the six best, best first, in the input's field names.
    best = sorted(range(24), key=lambda i: table["rank"][i])[:6]
    assert [r["id"] for r in subset] == [table["id"][i] for i in best]
    assert set(subset[0]) == {"id", "prompt", "answer"}
    if method not in ("ifd",):  # IFD ranks IFD >= 1 last whatever its value
        assert scores[best[-1]] >= np.max(np.delete(scores, best))
    assert scores.std() > 0


def test_ifd_is_ratio_of_conditioned_and_unconditioned_perplexity(tmp_path, tiny_model_dir):
    import torch
    import torch.nn.functional as F

    from dataplan.data.formatting import PromptFormatter
    from dataplan.models.loading import load_model

    rows = _write_pool(tmp_path / "pool.jsonl", n=16)
    select(_cfg(tmp_path, tiny_model_dir, "ifd"))
    table = read_parquet(tmp_path / "ifd.parquet")
    expected = np.exp(np.asarray(table["loss"]) - np.asarray(table["loss_unconditioned"]))
    np.testing.assert_allclose(table["score"], expected, rtol=1e-12)
    # Both losses by hand for the first example: answer tokens after the prompt, and after
    # the template around an empty prompt.
    loaded = load_model(str(tiny_model_dir), device="cpu")
    fmt = PromptFormatter(loaded.tokenizer)
    answer = fmt.answer_ids(rows[0]["answer"])
    for context, column in (
        (fmt.prompt_ids(rows[0]["prompt"]), "loss"),
        (fmt.prompt_ids(""), "loss_unconditioned"),
    ):
        ids = torch.as_tensor([[*context, *answer]])
        with torch.no_grad():
            logits = loaded.model(input_ids=ids).logits[0, len(context) - 1 : -1]
        by_hand = F.cross_entropy(logits, torch.as_tensor(answer)).item()
        assert table[column][0] == pytest.approx(by_hand, rel=1e-5)
    assert table["loss"][0] != pytest.approx(table["loss_unconditioned"][0], rel=1e-3)
    ranks = np.asarray(table["rank"])
    above = expected >= 1
    if above.any() and (~above).any():
        assert ranks[above].min() > ranks[~above].max()
    below = np.flatnonzero(~above)
    assert np.all(np.diff(expected[below][np.argsort(ranks[below])]) <= 0)  # highest IFD < 1 first
    over = np.flatnonzero(above)
    assert np.all(np.diff(expected[over][np.argsort(ranks[over])]) >= 0)  # then closest to 1


def test_colliding_checkpoints_are_refused(tmp_path, tiny_model_dir):
    _write_pool(tmp_path / "pool.jsonl", n=8)  # 1 step per epoch at batch 8
    with pytest.raises(ConfigError, match="fall on steps"):
        select(_cfg(tmp_path, tiny_model_dir, "gsnr", checkpoints=(0.75, 1.0)))


def test_seeded_and_resumable(tmp_path, tiny_model_dir, monkeypatch):
    _write_pool(tmp_path / "pool.jsonl", n=20)
    first = select(_cfg(tmp_path, tiny_model_dir, "gsnr"))
    import dataplan.compute.example_stats as stats
    import dataplan.training as training

    def boom(*a, **kw):
        raise AssertionError("recomputed although cached")

    monkeypatch.setattr(stats, "gradient_stats", boom)
    monkeypatch.setattr(training, "train", boom)
    again = select(_cfg(tmp_path, tiny_model_dir, "gsnr", k=3, fraction=None))
    np.testing.assert_array_equal(first.scores, again.scores)
    assert [e.id for e in again.selected] == [e.id for e in first.selected[:3]]
    # gradnorm with the same ensemble settings reuses the trained adapters and gsnr's cached
    # late-checkpoint norms: neither training nor gradient statistics run again.
    norms = select(_cfg(tmp_path, tiny_model_dir, "gradnorm", members=3))
    table = read_parquet(tmp_path / "run" / "scores-gsnr.parquet")
    np.testing.assert_allclose(norms.scores, table["grad_norm_late"], rtol=1e-12)


def test_gradsim_pass_serves_gsnr_and_gradnorm(tmp_path, tiny_model_dir, monkeypatch):
    """Statistics are cached per adapter: gradsim's pass (every member and checkpoint, with
    inner products) leaves nothing for gsnr to compute, and its norms are the ones gsnr would
    have computed itself."""
    _write_pool(tmp_path / "pool.jsonl", n=20)
    _write_pool(tmp_path / "target.jsonl", n=4, seed=1)
    target = str(tmp_path / "target.jsonl")
    select(_cfg(tmp_path, tiny_model_dir, "gradsim", members=3, target=target))
    import dataplan.compute.example_stats as stats

    def boom(*a, **kw):
        raise AssertionError("recomputed although cached")

    monkeypatch.setattr(stats, "gradient_stats", boom)
    shared = select(_cfg(tmp_path, tiny_model_dir, "gsnr"))
    monkeypatch.undo()
    alone = select(_cfg(tmp_path, tiny_model_dir, "gsnr", run_dir=str(tmp_path / "alone")))
    np.testing.assert_allclose(shared.scores, alone.scores, rtol=1e-5)
    sim_table = read_parquet(tmp_path / "gradsim.parquet")
    np.testing.assert_allclose(sim_table["grad_norm_late"], shared.columns["grad_norm_late"])
    # Re-ranking the cached pool with another k runs no backward pass, not even the target's.
    monkeypatch.setattr(stats, "gradient_stats", boom)
    monkeypatch.setattr(stats, "mean_gradient", boom)
    again = select(
        _cfg(tmp_path, tiny_model_dir, "gradsim", members=3, target=target, k=2, fraction=None)
    )
    np.testing.assert_allclose(again.scores, sim_table["score"], rtol=1e-12)


def test_other_seed_other_ensemble(tmp_path, tiny_model_dir):
    _write_pool(tmp_path / "pool.jsonl", n=20)
    a = select(_cfg(tmp_path, tiny_model_dir, "gsnr", run_dir=str(tmp_path / "a")))
    b = select(_cfg(tmp_path, tiny_model_dir, "gsnr", run_dir=str(tmp_path / "b"), seed=1))
    assert not np.allclose(a.scores, b.scores)


def test_classic_snr_runs_with_shared_init(tmp_path, tiny_model_dir):
    _write_pool(tmp_path / "pool.jsonl", n=16)
    result = select(_cfg(tmp_path, tiny_model_dir, "gsnr", snr_form="classic"))
    assert np.all(result.scores >= 0) and result.scores.std() > 0
    assert any("share" in n for n in result.notes)


@pytest.fixture(scope="module")
def learnable_model_dir(tmp_path_factory, char_tokenizer):
    """A tiny model whose frozen head can express confident answers (init range 0.5)."""
    from conftest import make_tiny_llama

    path = tmp_path_factory.mktemp("learnable-llama")
    make_tiny_llama(len(char_tokenizer), init_range=0.5).save_pretrained(path)
    char_tokenizer.save_pretrained(path)
    return path


def _auroc(scores: np.ndarray, is_noisy: np.ndarray) -> float:
    """P(a clean example scores higher than a noisy one), ties half: 0.5 is chance."""
    clean, noisy = scores[~is_noisy], scores[is_noisy]
    return float(np.mean([[float(c > z) + 0.5 * float(c == z) for z in noisy] for c in clean]))


def test_planted_noisy_examples_rank_low_with_gsnr(tmp_path, learnable_model_dir):
    """30% of a learnable toy pool carries wrong labels; G-SNR should put them at the bottom.

    A noisy example shares its prompt with clean ones, so it cannot be fitted: its gradient
    stays large while the clean examples' gradients shrink (measured: mean norm 26.7 -> 7.3 for
    clean, 23.0 -> 16.8 for noisy).
    """
    n = 64
    noisy = set(range(0, n, 10)) | set(range(3, n, 10)) | set(range(7, n, 10))  # 30%
    _write_pool(tmp_path / "pool.jsonl", n=n, noisy=noisy)
    cfg = _cfg(
        tmp_path,
        learnable_model_dir,
        "gsnr",
        members=3,
        epochs=4.0,
        learning_rate=1e-2,
        checkpoints=(0.2, 1.0),
        chat_template=False,
    )
    result = select(cfg)
    is_noisy = np.asarray([i in noisy for i in range(n)])
    s = result.scores
    # AUROC of "a clean example scores higher than a noisy one": 0.5 is chance.
    auroc = _auroc(s, is_noisy)
    assert auroc > 0.75, auroc
    kept = result.rank < int(0.3 * n)
    assert is_noisy[kept].mean() < 0.15, is_noisy[kept].mean()
    # The shrinkage form reads the same cached statistics and separates them too.
    shrinkage = select(replace(cfg, snr_form="shrinkage"))
    np.testing.assert_allclose(shrinkage.scores, result.columns["grad_shrinkage"], rtol=1e-12)
    assert _auroc(shrinkage.scores, is_noisy) > 0.75


def test_balance_by_label_keeps_the_pool_label_mix(tmp_path, monkeypatch):
    """A 3:1 pool whose scores favour the rare label: the balanced subset keeps 3:1, the best of
    each label first, and unscored examples stay last."""
    import dataplan.workflows.select_scoring as scoring

    rows = [{"id": f"p{i}", "prompt": f"x={i}", "answer": "yes"} for i in range(30)]
    rows += [{"id": f"q{i}", "prompt": f"y={i}", "answer": "no"} for i in range(10)]
    (tmp_path / "pool.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    scores = np.r_[np.arange(30) * 0.01, 1.0 + np.arange(10) * 0.01]
    scores[25:30] = np.nan  # the five best "yes" by position have no score

    def fake_scores(cfg, run, pool, target, loaded=None):
        return scores.copy(), {}, {}, []

    monkeypatch.setattr(scoring, "score_pool", fake_scores)
    plain = select(_cfg(tmp_path, "unused", "loss", fraction=None, k=8))
    assert [e.answer for e in plain.selected] == ["no"] * 8
    balanced = select(_cfg(tmp_path, "unused", "loss", fraction=None, k=8, balance_by="label"))
    # Quantiles (j + ½)/n_g: "yes" at 1/60, 3/60, …, "no" at 1/20, 3/20; ties by score rank.
    expected = ["p24", "q9", "p23", "p22", "p21", "q8", "p20", "p19"]
    assert [e.id for e in balanced.selected] == expected
    assert sorted(balanced.rank[25:30]) == list(range(35, 40))  # NaN: still last
    assert any("2 labels, 2–6 kept per label" in n for n in balanced.notes)
    table = read_parquet(tmp_path / "loss.parquet")
    assert sum(table["selected"]) == 8 and table["rank"] == balanced.rank.tolist()


def test_balance_by_label_refuses_free_text_answers(tmp_path, capsys):
    rows = [{"id": f"a{i}", "prompt": f"{i}+1", "answer": str(i + 1)} for i in range(100)]
    (tmp_path / "pool.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "subset.jsonl"
    code, _, err = run_main(
        [
            "select",
            "--data",
            str(tmp_path / "pool.jsonl"),
            "--method",
            "random",
            "--k",
            "10",
            "--balance-by",
            "label",
            "--out",
            str(out),
        ],
        capsys,
    )
    assert code == 2 and "100 distinct values" in err and not out.exists()
    assert "--balance-by answer-length" in err  # what to use instead


def test_balance_by_answer_length_keeps_the_pool_length_mix(tmp_path, monkeypatch):
    """An addition-like pool, 2- and 3-digit answers 1:2, whose scores favour the short ones: the
    length-balanced subset keeps 1:2, each stratum's best first."""
    import dataplan.workflows.select_scoring as scoring

    rows = [{"id": f"s{i}", "prompt": f"{i}+10", "answer": str(i + 10)} for i in range(20)]
    rows += [{"id": f"l{i}", "prompt": f"{i}+100", "answer": str(i + 100)} for i in range(40)]
    (tmp_path / "pool.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    scores = np.r_[2.0 + np.arange(20) * 0.01, np.arange(40) * 0.01]

    def fake_scores(cfg, run, pool, target, loaded=None):
        return scores.copy(), {}, {}, []

    monkeypatch.setattr(scoring, "score_pool", fake_scores)
    plain = select(_cfg(tmp_path, "unused", "loss", fraction=None, k=6))
    assert {len(e.answer) for e in plain.selected} == {2}
    cfg = _cfg(tmp_path, "unused", "loss", fraction=None, k=6, balance_by="answer-length")
    balanced = select(cfg)
    lengths = [len(e.answer) for e in balanced.selected]
    assert sorted(lengths) == [2, 2, 3, 3, 3, 3]
    # Within each stratum the score's order: the best 2-digit (s19, s18) and 3-digit answers.
    assert [e.id for e in balanced.selected if len(e.answer) == 2] == ["s19", "s18"]
    assert [e.id for e in balanced.selected if len(e.answer) == 3] == ["l39", "l38", "l37", "l36"]
    assert any("2 chars: 2 of 20; 3 chars: 4 of 40" in n for n in balanced.notes)
    assert cfg.method_settings()["balance_by"] == "answer-length"


def test_a_new_method_is_one_class_and_one_registry_line(tmp_path, monkeypatch):
    """Adding a method: a SelectionMethod subclass and its registry entry — nothing else."""
    from dataplan.selection import METHODS, PoolStatistics, SelectionMethod

    class Length(SelectionMethod):
        """Toy: longer answers first, no model."""

        name = "length"
        needs_model = False

        def score(self, cfg, stats: PoolStatistics):
            lengths = np.asarray([len(e.answer) for e in stats.pool], dtype=np.float64)
            return lengths, {"answer_length": lengths}, ["scored by answer length"]

    rows = [
        {"id": f"e{i}", "prompt": f"q{i}", "answer": "x" * (1 + (i * 7) % 10)} for i in range(10)
    ]
    (tmp_path / "pool.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    kw = dict(data=str(tmp_path / "pool.jsonl"), k=3, out=str(tmp_path / "s.jsonl"))
    with pytest.raises(ConfigError, match="unknown method 'length'"):
        SelectConfig(method="length", **kw)
    monkeypatch.setitem(METHODS, "length", Length)
    cfg = SelectConfig(method="length", scores_out=str(tmp_path / "s.parquet"), **kw)
    result = select(cfg)  # no --model, no run folder
    assert result.run_dir is None and result.notes == ["scored by answer length"]
    longest = sorted(rows, key=lambda r: -len(r["answer"]))[:3]
    assert [e.id for e in result.selected] == [r["id"] for r in longest]
    subset = [json.loads(line) for line in (tmp_path / "s.jsonl").read_text().splitlines()]
    assert [r["id"] for r in subset] == [r["id"] for r in longest]
    table = read_parquet(tmp_path / "s.parquet")
    assert table["answer_length"] == [float(len(r["answer"])) for r in rows]
    assert cfg.method_settings() == {"method": "length", "seed": 0}


def test_shard_cache_reads_the_run_folder_layout(tmp_path):
    """Shards are shards/<name>-<size>-<i>.safetensors with their bounds: run folders written
    before the result store still resume; a shard cut otherwise counts as missing."""
    from safetensors.numpy import save_file

    from dataplan.store import ResultStore, ShardCache

    shards = [range(0, 4), range(4, 6)]
    v = np.arange(2, dtype=np.float64)
    save_file({"v": v, "_bounds": np.asarray([4, 6])}, str(tmp_path / "sq-abc-4-00001.safetensors"))
    cache = ShardCache(ResultStore(tmp_path), "sq-abc", shards)
    assert cache.get(0) is None
    np.testing.assert_array_equal(cache.get(1)["v"], v)
    assert ShardCache(ResultStore(tmp_path), "sq-abc", [range(0, 4), range(4, 7)]).get(1) is None
    cache.put(0, {"v": v + 1})
    assert (tmp_path / "sq-abc-4-00000.safetensors").exists()
    np.testing.assert_array_equal(cache.get(0)["v"], v + 1)


@pytest.mark.parametrize(
    ("kw", "error"),
    [
        (dict(fraction=0.0), ConfigError),
        (dict(fraction=1.5), ConfigError),
        (dict(fraction=None, k=None), ConfigError),
        (dict(method="gradsim"), ConfigError),
        (dict(method="gsnr", members=1), ConfigError),
        (dict(method="gsnr", snr_form="shrinkage", checkpoints=(1.0,)), ConfigError),
        (dict(method="gsnr", snr_form="nope"), ConfigError),
        (dict(method="nope"), ConfigError),
        (dict(method="gsnr", checkpoints=(1.0, 0.5)), ConfigError),
        (dict(out="subset.txt"), ConfigError),
        (dict(seed=-1), ConfigError),
        (dict(balance_by="labels"), ConfigError),
    ],
)
def test_bad_settings_fail_before_any_model_loads(tmp_path, kw, error):
    base = dict(method="loss", data="pool.jsonl", model="none", fraction=0.1)
    base.update(kw)
    with pytest.raises(error):
        SelectConfig(**base)


def test_cli_errors_exit_2_and_write_nothing(tmp_path, tiny_model_dir, capsys):
    rows = _write_pool(tmp_path / "pool.jsonl", n=8)
    (tmp_path / "empty.jsonl").write_text("\n", encoding="utf-8")
    dup = tmp_path / "dup.jsonl"
    dup.write_text("".join(json.dumps({**r, "id": "same"}) + "\n" for r in rows[:2]))
    out = tmp_path / "subset.jsonl"
    common = ["select", "--model", str(tiny_model_dir), "--out", str(out), "--quiet"]
    cases = [
        (["--data", str(tmp_path / "pool.jsonl"), "--method", "loss", "--k", "9"], "larger than"),
        (["--data", str(tmp_path / "pool.jsonl"), "--method", "loss", "--fraction", "0"], "(0, 1]"),
        (
            ["--data", str(tmp_path / "pool.jsonl"), "--method", "loss", "--fraction", "1.2"],
            "(0, 1]",
        ),
        (["--data", str(dup), "--method", "loss", "--k", "1"], "duplicated id"),
        (
            [
                "--data",
                str(tmp_path / "pool.jsonl"),
                "--method",
                "gradsim",
                "--k",
                "1",
                "--target",
                str(tmp_path / "empty.jsonl"),
            ],
            "no examples",
        ),
        (["--data", str(tmp_path / "pool.jsonl"), "--method", "gradsim", "--k", "1"], "--target"),
    ]
    for args, message in cases:
        code, stdout, err = run_main([*common, *args], capsys)
        assert code == 2, (args, err)
        assert message in err and "Traceback" not in err
        assert stdout == ""
        assert not out.exists()


def test_cli_json_random_needs_no_model(tmp_path, capsys):
    _write_pool(tmp_path / "pool.jsonl", n=10)
    code, stdout, err = run_main(
        [
            "select",
            "--method",
            "random",
            "--data",
            str(tmp_path / "pool.jsonl"),
            "--k",
            "3",
            "--out",
            str(tmp_path / "s.jsonl"),
            "--seed",
            "4",
            "--json",
        ],
        capsys,
    )
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary["k"] == 3 and len(summary["selected_ids"]) == 3
    code, stdout2, _ = run_main(
        [
            "select",
            "--method",
            "random",
            "--data",
            str(tmp_path / "pool.jsonl"),
            "--k",
            "3",
            "--out",
            str(tmp_path / "s2.jsonl"),
            "--seed",
            "4",
            "--json",
        ],
        capsys,
    )
    assert json.loads(stdout2)["selected_ids"] == summary["selected_ids"]


def _torchrun(args, tmp_path, nproc=2):
    from conftest import run_torchrun

    return run_torchrun(args, tmp_path, nproc)


def test_torchrun_shards_scoring_and_matches_one_process(tmp_path, tiny_model_dir):
    """Two torchrun processes split the shards; scores equal the single-process ones."""
    _write_pool(tmp_path / "pool.jsonl", n=20)
    one = select(_cfg(tmp_path, tiny_model_dir, "ifd", run_dir=str(tmp_path / "one")))
    common = [
        "select",
        "--data",
        "pool.jsonl",
        "--model",
        str(tiny_model_dir),
        "--fraction",
        "0.25",
        "--stats-batch-size",
        "4",
        "--shard-size",
        "6",
        "--run-dir",
        "two",
        "--json",
    ]
    proc = _torchrun(
        [*common, "--method", "ifd", "--out", "two.jsonl", "--scores-out", "two.parquet"], tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)  # exactly one JSON object: rank 0 prints, rank 1 is silent
    assert summary["k"] == 5
    table = read_parquet(tmp_path / "two.parquet")
    np.testing.assert_allclose(table["score"], one.scores, rtol=1e-5)
    shards = sorted(p.name for p in (tmp_path / "two" / "shards").iterdir())
    assert len(shards) == 4 and all("-6-" in s for s in shards)  # 6, 6, 6, 2 examples


def test_torchrun_trains_the_ensemble_with_ddp(tmp_path, tiny_model_dir):
    """G-SNR end to end under torchrun: DDP training, rank 0 saves, every rank scores."""
    _write_pool(tmp_path / "pool.jsonl", n=24)
    args = [
        "select",
        "--method",
        "gsnr",
        "--data",
        "pool.jsonl",
        "--model",
        str(tiny_model_dir),
        "--fraction",
        "0.25",
        "--epochs",
        "2",
        "--members",
        "2",
        "--stats-batch-size",
        "4",
        "--run-dir",
        "run",
        "--out",
        "s.jsonl",
        "--scores-out",
        "s.parquet",
        "--json",
    ]
    proc = _torchrun(args, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout)["k"] == 6
    scores = np.asarray(read_parquet(tmp_path / "s.parquet")["score"])
    assert np.all(np.isfinite(scores)) and scores.std() > 0
    # 2 epochs of 24 examples at a global batch of 2 x 8: 3 steps, saved at 1 (25%) and 3.
    steps = sorted(p.name for p in next((tmp_path / "run").glob("ensemble-*")).glob("member-0/*"))
    assert steps == ["step-1", "step-3"]


def test_write_subset_keeps_every_column_in_parquet(tmp_path):
    """The options column is written when any chosen example has options, not only the first."""
    from dataplan.data.loading import Example, Fields
    from dataplan.io import read_parquet
    from dataplan.workflows.select import write_subset

    chosen = [
        Example(id="a", prompt="p?", answer="x"),
        Example(id="b", prompt="q?", answer="y", choices=("y", "z")),
    ]
    write_subset(tmp_path / "s.parquet", chosen, Fields())
    table = read_parquet(tmp_path / "s.parquet")
    assert list(table["id"]) == ["a", "b"] and list(table["choices"])[1] == ["y", "z"]
