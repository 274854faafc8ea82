"""Sharded accumulation (random shard sizes, merged in random order) equals the one-shot
measures."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from conftest import gapped_pairs
from modgap.errors import InputError
from modgap.measures import accumulators as acc
from modgap.measures import (
    alignment,
    centroid_gap,
    frechet_distance,
    per_dimension_gap,
    relative_modality_gap,
)

pytestmark = pytest.mark.usefixtures("single_thread")


def _cuts(n, rng, k):
    """``k`` shard boundaries over ``n`` rows, empty shards allowed."""
    return np.sort(np.r_[0, rng.integers(0, n + 1, size=k - 1), n])


def _merge_randomly(parts, rng):
    """Merge accumulators pairwise in a random tree, as a distributed reduce would."""
    parts = list(parts)
    while len(parts) > 1:
        i, j = sorted(rng.choice(len(parts), size=2, replace=False))
        b = parts.pop(j)
        parts[i] = parts[i].merge(b)
    return parts[0]


@pytest.mark.parametrize("seed", range(4))
def test_unpaired_accumulators_equal_one_shot(seed):
    rng = np.random.default_rng(seed)
    X, Y = gapped_pairs(300, 12, seed=seed)
    Y = Y[: 200 + seed * 20]  # different counts: these measures need no pairs
    one_shot = {
        "centroid": centroid_gap(X, Y, return_vector=True),
        "per_dim": per_dimension_gap(X, Y),
        "frechet": frechet_distance(X, Y),
    }
    k = int(rng.integers(2, 9))
    cx, cy = _cuts(len(X), rng, k), _cuts(len(Y), rng, k)
    shards = {name: [] for name in one_shot}
    for i in range(k):
        xb, yb = X[cx[i] : cx[i + 1]], Y[cy[i] : cy[i + 1]]
        shards["centroid"].append(acc.CentroidGapAccumulator().update(xb, yb))
        shards["per_dim"].append(acc.PerDimensionGapAccumulator().update(xb, yb))
        shards["frechet"].append(acc.FrechetAccumulator().update(xb, None).update(None, yb))
    got = {name: _merge_randomly(parts, rng).result() for name, parts in shards.items()}

    for key in ("centroid_gap", "centroid_cosine", "image_centroid_norm", "text_centroid_norm"):
        assert got["centroid"][key] == pytest.approx(one_shot["centroid"][key], rel=1e-12)
    np.testing.assert_allclose(got["centroid"]["gap_vector"], one_shot["centroid"]["gap_vector"])
    for key in ("dims_50", "dims_90", "top_dims"):
        assert got["per_dim"][key] == one_shot["per_dim"][key]
    np.testing.assert_allclose(got["per_dim"]["gap_sq"], one_shot["per_dim"]["gap_sq"])
    assert got["frechet"] == pytest.approx(one_shot["frechet"], rel=1e-9)


def test_moments_chan_merge_is_stable_far_from_zero():
    # a large common offset: naive sum-of-squares would lose the variance to cancellation
    rng = np.random.default_rng(0)
    A = 1e6 + rng.standard_normal((1000, 3))
    mo = acc.Moments(covariance=True)
    for lo in range(0, 1000, 137):
        mo.merge(acc.Moments(covariance=True).update(A[lo : lo + 137]))
    np.testing.assert_allclose(mo.mean, A.mean(0), rtol=1e-14)
    np.testing.assert_allclose(mo.cov(), np.cov(A, rowvar=False), rtol=1e-6)


@pytest.mark.parametrize("seed", range(3))
def test_paired_accumulators_equal_one_shot(seed):
    rng = np.random.default_rng(10 + seed)
    n_img = 80
    X, Y = gapped_pairs(240, 10, seed=seed)
    X = X[:n_img]
    t2i = rng.integers(0, n_img, size=240)  # several captions per image
    rmg_ref = relative_modality_gap(X, Y, t2i)
    align_ref = alignment(X, Y, t2i)

    # RMG shards: images split at random cuts, every caption goes with its image
    cuts = _cuts(n_img, rng, int(rng.integers(2, 7)))
    rmg_parts = []
    for lo, hi in itertools.pairwise(cuts):
        texts = np.flatnonzero((t2i >= lo) & (t2i < hi))
        rmg_parts.append(acc.RMGAccumulator().update(X[lo:hi], Y[texts], t2i[texts] - lo))
    assert _merge_randomly(rmg_parts, rng).result() == pytest.approx(rmg_ref, rel=1e-12)

    # alignment shards: matched rows, cut anywhere
    Xp = X[t2i]
    cuts = _cuts(240, rng, int(rng.integers(2, 9)))
    parts = [
        acc.AlignmentAccumulator().update(Xp[a:b], Y[a:b]) for a, b in itertools.pairwise(cuts)
    ]
    assert _merge_randomly(parts, rng).result() == pytest.approx(align_ref, rel=1e-12)


def test_accumulator_errors():
    with pytest.raises(InputError, match="no image rows were accumulated"):
        acc.CentroidGapAccumulator().update(None, np.ones((2, 3))).result()
    with pytest.raises(InputError, match="no pairs were accumulated"):
        acc.AlignmentAccumulator().result()
    with pytest.raises(InputError, match="no pairs were accumulated"):
        acc.RMGAccumulator().result()
    with pytest.raises(InputError, match="at least 2 rows of each modality"):
        acc.FrechetAccumulator().update(np.ones((1, 3)), np.ones((4, 3))).result()
    with pytest.raises(InputError, match="3 images but 2 texts"):
        acc.AlignmentAccumulator().update(np.ones((3, 3)), np.ones((2, 3)))
    frechet = acc.FrechetAccumulator().update(np.ones((2, 3)), None)
    with pytest.raises(InputError, match="image rows have 3 dimensions but text rows 4"):
        frechet.update(None, np.ones((2, 4)))
    a = acc.CentroidGapAccumulator().update(np.ones((2, 3)), np.ones((2, 3)))
    with pytest.raises(InputError, match="cannot merge moments of width 4 into width 3"):
        a.merge(acc.CentroidGapAccumulator().update(np.ones((2, 4)), np.ones((2, 4))))


@pytest.mark.parametrize("ridge", [0.0, 0.1])
def test_frechet_terms_sum_to_the_distance_with_a_ridge(ridge):
    X, Y = gapped_pairs(n=50, d=6, seed=9)
    a = acc.FrechetAccumulator(ridge=ridge).update(X, Y)
    t = a.terms()
    assert t["centroid"] + t["covariance"] == pytest.approx(a.result(), rel=1e-12)
    assert a.result() == pytest.approx(frechet_distance(X, Y, ridge=ridge), rel=1e-9)
    whole = frechet_distance(X, Y, ridge=ridge, terms=True)
    assert whole["covariance"] == pytest.approx(t["covariance"], rel=1e-9)


# -- exact sums: the same bits for any split -------------------------------------------------
def test_exact_sum_is_the_correctly_rounded_sum_and_split_invariant():
    from fractions import Fraction

    from hypothesis import given, settings
    from hypothesis import strategies as st

    from modgap.measures._exact import ExactSum, exact_mean

    rng = np.random.default_rng(3)
    X = rng.standard_normal((3000, 5))
    X = (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32)
    X[::11, 0] *= np.float32(1e-30)  # tiny entries far below the others
    want = exact_mean(X)
    # a plain reference: exact rational mean of the float32 values, rounded once (the 2^-64
    # grid of the kernel is far below a float64 unit of these means)
    ref = np.array([float(sum(map(Fraction, X[:, j].tolist())) / X.shape[0]) for j in range(5)])
    np.testing.assert_array_equal(want, ref)

    @settings(max_examples=30, deadline=None)
    @given(st.lists(st.integers(1, 2999), max_size=12, unique=True), st.randoms())
    def split(cuts, rnd):
        edges = [0, *sorted(cuts), X.shape[0]]
        parts = [ExactSum(5).add(X[a:b]) for a, b in itertools.pairwise(edges)]
        rnd.shuffle(parts)
        total = ExactSum(5)
        for p in parts:
            total.merge(p)
        np.testing.assert_array_equal(total.mean(X.shape[0]), want)

    split()


def test_exact_moments_mean_does_not_depend_on_blocks():
    rng = np.random.default_rng(4)
    X = rng.standard_normal((1000, 8))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    one = acc.Moments(covariance=True, exact=True).update(X)
    many = acc.Moments(covariance=True, exact=True)
    for a in range(0, 1000, 37):
        many.update(X[a : a + 37])
    np.testing.assert_array_equal(one.mean, many.mean)
    np.testing.assert_allclose(one.scatter, many.scatter, rtol=1e-12)  # Chan merge: round-off
    with pytest.raises(ValueError, match="at most 2"):
        acc.Moments(exact=True).update(X * 3)
