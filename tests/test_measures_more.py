"""Separability, Fréchet, alignment/uniformity and cosine statistics against references."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.linalg import sqrtm
from scipy.special import logsumexp

import _references as ref
from conftest import gapped_pairs
from modgap.errors import InputError
from modgap.measures import (
    alignment,
    cosine_stats,
    cross_uniformity,
    frechet_distance,
    linear_separability,
    uniformity,
)
from modgap.measures.alignment import uniformity_block_sum
from modgap.measures.frechet import frechet_from_moments

pytestmark = pytest.mark.usefixtures("single_thread")


_unit = ref.unit


# -- linear separability ------------------------------------------------------------------------
def test_separability_of_separated_modalities_is_one():
    X, Y = gapped_pairs(150, 16, gap=1.5, noise=0.3, seed=0)
    assert linear_separability(X, Y) == 1.0


def test_separability_of_one_distribution_is_chance():
    rng = np.random.default_rng(1)
    X, Y = rng.standard_normal((800, 8)), rng.standard_normal((800, 8))
    assert linear_separability(X, Y) == pytest.approx(0.5, abs=0.07)


def test_separability_matches_sklearn_on_same_split():
    # the probe is a plain LogisticRegression: refitting it on the rows the function holds
    # out gives the same accuracy
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score

    from modgap.measures._common import canonical_order
    from modgap.measures.separability import _stratified_split

    X, Y = gapped_pairs(120, 8, gap=0.5, noise=1.0, seed=2)
    Xu, Yu = _unit(X), _unit(Y)
    rng = np.random.default_rng(5)
    parts = [Xu[canonical_order(Xu, Yu)], Yu[canonical_order(Yu, Xu)]]
    test = np.concatenate([_stratified_split(120, 0.3, rng) for _ in parts])
    Z, t = np.vstack(parts), np.r_[np.zeros(120), np.ones(120)]
    clf = LogisticRegression(tol=1e-8, max_iter=5000, class_weight="balanced")
    clf.fit(Z[~test], t[~test])
    expected = balanced_accuracy_score(t[test], clf.predict(Z[test]))
    assert 0.55 < expected < 0.95  # a case where the value is informative
    assert linear_separability(X, Y, seed=5) == pytest.approx(expected)


def test_separability_is_balanced_accuracy_on_unbalanced_sets():
    # 848 images against 10 prompts of the same distribution: plain accuracy of a probe that
    # always says "image" would be 0.988; balanced accuracy stays at chance
    rng = np.random.default_rng(4)
    X, Y = rng.standard_normal((848, 8)), rng.standard_normal((10, 8))
    assert linear_separability(X, Y, seed=1) == pytest.approx(0.5, abs=0.25)
    Xs, Ys = gapped_pairs(848, 8, gap=1.5, noise=0.3, seed=0)
    assert linear_separability(Xs, Ys[:10], seed=1) > 0.9


def test_separability_cap_and_seed():
    X, Y = gapped_pairs(300, 8, gap=0.3, noise=1.0, seed=3)
    full = linear_separability(X, Y, max_per_modality=None)
    assert linear_separability(X, Y, max_per_modality=300) == full
    capped = linear_separability(X, Y, max_per_modality=60, seed=1)
    # 60 per modality, 30% held out: 18 + 18 test rows, so the accuracy is a multiple of 1/36
    assert capped * 36 == pytest.approx(round(capped * 36))
    assert linear_separability(X, Y, max_per_modality=60, seed=1) == capped


def test_separability_bad_input():
    X, Y = gapped_pairs(10, 4)
    with pytest.raises(InputError, match=r"test_fraction must be in \(0, 1\), got 1.5"):
        linear_separability(X, Y, test_fraction=1.5)
    with pytest.raises(InputError, match="'image_emb' needs at least 2 row"):
        linear_separability(X[:1], Y)


# -- Fréchet distance ---------------------------------------------------------------------------
def _frechet_reference(X, Y, ridge=0.0):
    X, Y = _unit(X), _unit(Y)
    A = np.cov(X, rowvar=False) + ridge * np.eye(X.shape[1])
    B = np.cov(Y, rowvar=False) + ridge * np.eye(X.shape[1])
    diff = X.mean(0) - Y.mean(0)
    return float(diff @ diff + np.trace(A + B - 2 * sqrtm(A @ B).real))


@pytest.mark.parametrize(("n", "d"), [(200, 8), (30, 50)])  # full rank and rank-deficient
def test_frechet_matches_sqrtm_reference(n, d):
    X, Y = gapped_pairs(n, d, seed=n)
    assert frechet_distance(X, Y) == pytest.approx(_frechet_reference(X, Y), rel=1e-6, abs=1e-8)


def test_frechet_known_gaussian_value():
    # diagonal covariances: FD = ||mu_x - mu_y||^2 + sum_k (sigma_x,k - sigma_y,k)^2
    mu_x, mu_y = np.array([1.0, 0, 0]), np.array([0, 2.0, 0])
    cx, cy = np.diag([4.0, 1.0, 9.0]), np.diag([1.0, 1.0, 1.0])
    expected = 5.0 + (2 - 1) ** 2 + 0 + (3 - 1) ** 2
    assert frechet_from_moments(mu_x, cx, mu_y, cy, ridge=0) == pytest.approx(expected)


def test_frechet_is_exact_for_rank_deficient_covariances():
    # each modality spans a dimension the other does not: exact FD = 1 + 1 (sum of
    # (sqrt a - sqrt b)^2); a ridge of 1e-6 would read 2 - 4e-3 (the bias removed)
    cx, cy = np.diag([0.0, 1.0, 0.0]), np.diag([1.0, 0.0, 0.0])
    zero = np.zeros(3)
    assert frechet_from_moments(zero, cx, zero, cy) == pytest.approx(2.0, abs=1e-12)
    assert frechet_from_moments(zero, cx, zero, cy, ridge=1e-6) == pytest.approx(2 - 4e-3, abs=1e-5)
    # data: 10 texts in 512-d (rank 9) against images of full rank: the terms add up
    rng = np.random.default_rng(0)
    X, Y = _unit(rng.standard_normal((600, 24))), _unit(rng.standard_normal((10, 24)))
    t = frechet_distance(X, Y, terms=True)
    assert t["frechet_distance"] == pytest.approx(t["centroid"] + t["covariance"])
    ref = float(np.sum((X.mean(0) - Y.mean(0)) ** 2))
    assert t["centroid"] == pytest.approx(ref)
    assert t["covariance"] > 0


def test_frechet_same_set_is_zero():
    X, _ = gapped_pairs(100, 8)
    assert frechet_distance(X, X[::-1].copy()) == pytest.approx(0.0, abs=1e-9)


def test_frechet_needs_two_rows():
    X, Y = gapped_pairs(5, 4)
    with pytest.raises(InputError, match="'text_emb' needs at least 2 row"):
        frechet_distance(X, Y[:1])


# -- alignment / uniformity ---------------------------------------------------------------------
def test_alignment_matches_loop():
    X, Y = gapped_pairs(30, 6, seed=4)
    t2i = np.random.default_rng(0).integers(0, 10, size=30)
    Xs = X[:10]
    ref = np.mean([np.sum((_unit(Xs)[t2i[j]] - _unit(Y)[j]) ** 2) for j in range(30)])
    assert alignment(Xs, Y, t2i) == pytest.approx(ref, rel=1e-12)
    assert alignment(X, X) == 0.0


def _uniformity_reference(A, B=None):
    A = _unit(A)
    if B is None:
        iu = np.triu_indices(len(A), 1)
        sq = ((A[:, None] - A[None]) ** 2).sum(-1)[iu]
    else:
        sq = ((A[:, None] - _unit(B)[None]) ** 2).sum(-1).ravel()
    return float(logsumexp(-2 * sq) - np.log(sq.size))


def test_uniformity_matches_pairwise_reference():
    X, Y = gapped_pairs(70, 5, seed=6)
    assert uniformity(X) == pytest.approx(_uniformity_reference(X), rel=1e-12)
    assert cross_uniformity(X, Y[:40]) == pytest.approx(_uniformity_reference(X, Y[:40]), rel=1e-12)


def test_uniformity_block_sum_is_the_kernel_with_its_mask_and_buffer():
    import torch

    X, Y = gapped_pairs(12, 5, seed=3)
    Q, P = _unit(X), _unit(Y)[:9]
    ref = np.exp(-2 * ((Q[:, None] - P[None]) ** 2).sum(-1))
    mask = np.zeros(ref.shape, dtype=bool)
    mask[np.arange(9), np.arange(9)] = True
    buf = torch.full((200,), np.nan, dtype=torch.float64)  # stale contents must not leak in
    for m, out in ((None, None), (mask, buf)):
        got = uniformity_block_sum(
            torch.from_numpy(Q),
            torch.from_numpy(P),
            None if m is None else torch.from_numpy(m),
            out,
        ).numpy()
        want = np.where(mask, 0.0, ref).sum(1) if m is not None else ref.sum(1)
        np.testing.assert_allclose(got, want, rtol=1e-13)


@pytest.mark.parametrize("block_size", [1, 7, 50])  # incl. sizes not dividing n
def test_uniformity_blocks(block_size):
    X, Y = gapped_pairs(50, 5, seed=7)
    ref = (_uniformity_reference(X), _uniformity_reference(X, Y))
    assert uniformity(X, block_size=block_size) == pytest.approx(ref[0], rel=1e-12)
    assert cross_uniformity(X, Y, block_size=block_size) == pytest.approx(ref[1], rel=1e-12)


def test_uniformity_known_values():
    # a collapsed set has every distance 0: log mean exp(0) = 0; two antipodal points: -8
    assert uniformity(np.ones((5, 3))) == pytest.approx(0.0, abs=1e-6)
    assert uniformity(np.array([[1.0, 0], [-1.0, 0]])) == pytest.approx(-8.0, rel=1e-6)


def test_uniformity_cap_uses_a_seeded_subset_independent_of_row_order():
    X, _ = gapped_pairs(300, 6, seed=8)
    a = uniformity(X, max_samples=50, seed=3)
    perm = np.random.default_rng(0).permutation(300)
    assert uniformity(X[perm], max_samples=50, seed=3) == pytest.approx(a, rel=1e-6)
    assert a == pytest.approx(uniformity(X), abs=0.3)  # an estimate of the full value
    assert uniformity(X, max_samples=50, seed=4) != a


# -- matched / unmatched cosine -----------------------------------------------------------------
def test_cosine_stats_match_dense_reference():
    X, Y = gapped_pairs(45, 6, seed=9)
    X = X[:15]
    t2i = np.random.default_rng(1).integers(0, 15, size=45)
    out = cosine_stats(X, Y, t2i)
    S = _unit(Y) @ _unit(X).T
    mask = np.zeros_like(S, dtype=bool)
    mask[np.arange(45), t2i] = True
    for name, vals in (("matched", S[mask]), ("unmatched", S[~mask])):
        got = out[name]
        assert got["count"] == vals.size
        assert got["mean"] == pytest.approx(vals.mean(), rel=1e-10)
        assert got["std"] == pytest.approx(vals.std(), rel=1e-8)
        q = np.quantile(vals, [0.05, 0.25, 0.5, 0.75, 0.95])
        np.testing.assert_allclose(
            [got[k] for k in ("q05", "q25", "q50", "q75", "q95")], q, rtol=1e-10
        )


def test_cosine_stats_sampled_quantiles_estimate_the_exact_ones():
    X, Y = gapped_pairs(200, 8, seed=10)
    exact = cosine_stats(X, Y)["unmatched"]
    sampled = cosine_stats(X, Y, max_unmatched=5000, seed=2)["unmatched"]
    assert sampled["mean"] == pytest.approx(exact["mean"], rel=1e-10)  # always exact
    assert sampled["std"] == pytest.approx(exact["std"], rel=1e-8)
    for k in ("q05", "q50", "q95"):
        assert sampled[k] == pytest.approx(exact[k], abs=0.03)


def test_cosine_stats_without_unmatched_pairs():
    X = np.array([[1.0, 0.0]])
    Y = np.array([[1.0, 1.0], [0.0, 1.0]])
    out = cosine_stats(X, Y, text_to_image=[0, 0])
    assert out["unmatched"]["count"] == 0 and np.isnan(out["unmatched"]["mean"])
    assert out["matched"]["mean"] == pytest.approx((np.sqrt(0.5) + 0) / 2)
