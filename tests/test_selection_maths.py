"""Selection scores and ranking (dataplan.maths.selection) against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from dataplan.maths import selection as sel


def test_gsnr_default_by_hand():
    early = np.array([[4.0, 2.0, 0.0], [6.0, 2.0, 0.0]])  # members x examples
    late = np.array([[1.0, 2.0, 0.0], [3.0, 2.0, 0.0]])
    got = sel.gsnr_default(early, late, eps=0.01)
    # Example 0: ḡe = 5, ḡl = 2, shrink 0.6; std(1, 3) = 1, spread 1/2 -> 0.6 / 0.51.
    assert got[0] == pytest.approx(0.6 / 0.51)
    # Example 1: no shrink -> 0. Example 2: zero gradient -> 0 (nothing to learn).
    assert got[1] == 0.0 and got[2] == 0.0
    with pytest.raises(ValueError, match="at least 2"):
        sel.gsnr_default(early[:1], late[:1])
    with pytest.raises(ValueError, match="differ in shape"):
        sel.gsnr_default(early, late[:, :2])


def test_gsnr_shrinkage_by_hand():
    early = np.array([[4.0, 2.0, 0.0, 1.0], [6.0, 2.0, 0.0, 1.0]])  # members x examples
    late = np.array([[1.0, 2.0, 0.0, 3.0], [3.0, 2.0, 0.0, 1.0]])
    got = sel.gsnr_shrinkage(early, late)
    # (5 - 2) / 5; no shrink; zero gradient; a gradient that grew (1 -> 2) is negative.
    np.testing.assert_allclose(got, [0.6, 0.0, 0.0, -1.0])
    # One member is enough (no spread is involved), and the default form divides this by it.
    np.testing.assert_allclose(sel.gsnr_shrinkage(early[:1], late[:1]), [0.75, 0, 0, -2.0])
    spread = late[:, :2].std(axis=0) / late[:, :2].mean(axis=0)
    np.testing.assert_allclose(
        sel.gsnr_default(early[:, :2], late[:, :2], eps=0.01), got[:2] / (spread + 0.01)
    )
    with pytest.raises(ValueError, match="differ in shape"):
        sel.gsnr_shrinkage(early, late[:, :2])


def test_gsnr_classic_matches_explicit_vectors():
    rng = np.random.default_rng(0)
    g = rng.normal(size=(3, 5, 7))  # members x examples x parameters
    g[:, 1] += 5.0  # example 1: the members agree more (a large shared component)
    mean = g.mean(axis=0)
    expected = (mean**2).sum(-1) / ((g - mean) ** 2).sum(-1).mean(axis=0)
    got = sel.gsnr_classic((g**2).sum(-1).sum(0), (g.sum(0) ** 2).sum(-1), members=3)
    np.testing.assert_allclose(got, expected, rtol=1e-10)
    assert got.argmax() == 1
    # Identical members: dispersion at the relative floor, not a division by zero.
    same = np.repeat(g[:1], 3, axis=0)
    finite = sel.gsnr_classic((same**2).sum(-1).sum(0), (same.sum(0) ** 2).sum(-1), members=3)
    assert np.all(np.isfinite(finite)) and np.all(finite > 1e6)
    assert sel.gsnr_classic(np.zeros(2), np.zeros(2), members=2).tolist() == [0.0, 0.0]


def test_ifd_and_cosines():
    np.testing.assert_allclose(sel.ifd([1.0, 2.0], [2.0, 1.0]), [np.exp(-1), np.exp(1)])
    cos = sel.cosine_scores(
        np.array([[2.0, 0.0, 1.0]]), np.array([[1.0, 0.0, 2.0]]), np.array([[2.0]])
    )
    np.testing.assert_allclose(cos, [[1.0, 0.0, 0.25]])


def test_subset_size_rounds_half_up_and_validates():
    assert sel.subset_size(5, fraction=0.5) == 3
    assert sel.subset_size(7, fraction=0.5) == 4
    assert sel.subset_size(100, fraction=0.001) == 1
    assert sel.subset_size(10, k=10) == 10
    for kw in ({"fraction": 0.0}, {"fraction": 1.5}, {"fraction": float("nan")}, {"k": 11}):
        with pytest.raises(ValueError):
            sel.subset_size(10, **kw)


def test_rank_scores_ties_nan_and_demotion():
    scores = np.array([0.5, np.nan, 1.2, 0.9, 0.9])
    rank = sel.rank_scores(scores, seed=0)
    assert rank[2] == 0 and rank[0] == 3 and rank[1] == 4  # NaN last
    assert {rank[3], rank[4]} == {1, 2}  # the tie is broken by the seed
    tied = [tuple(sel.rank_scores(np.zeros(6), seed=s)) for s in range(5)]
    assert len(set(tied)) > 1 and tied[0] == tuple(sel.rank_scores(np.zeros(6), seed=0))
    low = sel.rank_scores(scores, descending=False, seed=0)
    assert low[0] == 0 and low[1] == 4
    # IFD-style demotion: demoted after every other score, NaN after the demoted.
    demoted = sel.rank_scores(scores, seed=0, demote=scores >= 1.0)
    assert demoted.tolist()[2] == 3 and demoted.tolist()[1] == 4
    assert sorted(demoted.tolist()) == list(range(5))


def test_balance_ranks_keeps_each_label_share_in_every_prefix():
    rng = np.random.default_rng(0)
    for _ in range(50):
        sizes = rng.integers(1, 60, size=rng.integers(2, 8))
        groups = np.repeat(np.arange(sizes.size), sizes)
        rng.shuffle(groups)
        n = groups.size
        rank = rng.permutation(n)
        balanced = sel.balance_ranks(rank, groups.astype(str))
        assert sorted(balanced) == list(range(n))
        bound = 0.5 + sizes.size * sizes / (2 * n)  # the docstring's bound, per group
        for k in range(1, n + 1):
            counts = np.bincount(groups[balanced < k], minlength=sizes.size)
            assert np.all(np.abs(counts - k * sizes / n) <= bound + 1e-9)
        for g in range(sizes.size):  # within a label, the original order is kept
            members = np.flatnonzero(groups == g)
            assert np.array_equal(np.argsort(rank[members]), np.argsort(balanced[members]))


def test_length_groups():
    # Few distinct lengths: one group each, in order of length.
    np.testing.assert_array_equal(sel.length_groups(np.array([3, 2, 3, 2, 3])), [1, 0, 1, 0, 1])
    # Many: at most B quantile strata of similar size, equal lengths together, order kept.
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 400, size=1000)
    groups = sel.length_groups(lengths, max_groups=5)
    assert set(groups.tolist()) == set(range(5))
    assert np.all(np.bincount(groups) > 150)
    for length in np.unique(lengths):
        assert np.unique(groups[lengths == length]).size == 1
    order = np.argsort(lengths, kind="stable")
    assert np.all(np.diff(groups[order]) >= 0)
    # Heavy ties: a length shared by 90% of the pool is one stratum, the rest another.
    tied = np.r_[np.full(90, 5), np.arange(10, 20)]
    np.testing.assert_array_equal(sel.length_groups(tied, 5), np.r_[np.zeros(90), np.ones(10)])
    with pytest.raises(ValueError):
        sel.length_groups(tied, 0)


def test_balance_ranks_by_hand():
    # Scores put all "a" first; 2 of 4 are "a", so a balanced top-2 holds one "a" and one "b".
    rank = np.array([0, 1, 2, 3])
    labels = np.array(["a", "a", "b", "b"], dtype=object)
    np.testing.assert_array_equal(sel.balance_ranks(rank, labels), [0, 2, 1, 3])
    # A tier comes first: demoted "b"s stay after every "a" whatever their label share.
    demoted = sel.balance_ranks(rank, labels, tier=np.array([0, 0, 1, 1]))
    np.testing.assert_array_equal(demoted, [0, 1, 2, 3])
    # One label: nothing changes.
    np.testing.assert_array_equal(sel.balance_ranks(np.array([2, 0, 1]), np.zeros(3)), [2, 0, 1])


def test_methods_score_the_cached_statistics():
    """Each registered method turns the shared passes' statistics into its score equation."""
    from types import SimpleNamespace

    from dataplan.selection import METHODS, EnsembleLayout, PoolStatistics

    assert tuple(METHODS) == ("gsnr", "gradnorm", "gradsim", "ifd", "loss", "random")
    layout = EnsembleLayout(members=2, n_checkpoints=2)
    assert layout.early == ["m0-c0", "m1-c0"] and layout.late == ["m0-c1", "m1-c1"]
    assert layout.every == ["m0-c0", "m0-c1", "m1-c0", "m1-c1"]
    cfg = SimpleNamespace(snr_form="default", snr_eps=0.01, seed=0)
    gsnr = METHODS["gsnr"]()
    adapters = gsnr.adapters(cfg, layout)
    assert adapters == layout.early + layout.late and gsnr.sum_groups(cfg, layout) == {}
    early = np.array([[4.0, 2.0, 0.0], [6.0, 2.0, 0.0]])
    late = np.array([[1.0, 2.0, 0.0], [3.0, 2.0, 0.0]])
    stats = PoolStatistics(
        pool=[], layout=layout, adapters=adapters, sq_norms=np.r_[early, late] ** 2
    )
    scores, columns, _ = gsnr.score(cfg, stats)
    np.testing.assert_allclose(scores, sel.gsnr_default(early, late, eps=0.01))
    np.testing.assert_allclose(columns["grad_shrinkage"], sel.gsnr_shrinkage(early, late))
    cfg.snr_form = "classic"
    assert gsnr.adapters(cfg, layout) == layout.late and gsnr.shared_init(cfg)
    assert gsnr.sum_groups(cfg, layout) == {"late": layout.late}
    ifd = METHODS["ifd"]()
    loss = np.array([1.0, 2.0, 3.0])
    bare = np.array([1.5, 2.0, 2.0])
    scores, columns, _ = ifd.score(
        cfg, PoolStatistics([], {"loss": loss, "loss_unconditioned": bare})
    )
    np.testing.assert_allclose(scores, np.exp(loss - bare))
    demoted, note = ifd.demote(scores)
    assert demoted.tolist() == [False, True, True] and note.startswith("2 examples with IFD >= 1")
    assert METHODS["loss"]().demote(scores) is None
