"""Hubness measures against a dense float64 reference, the random-retrieval chance values
against a simulation, and the real COCO-500 file."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import skew

import _references as ref
from modgap.compute import limit_threads
from modgap.errors import ModgapError
from modgap.measures.hubness import hubness, k_occurrence, random_retrieval_hubness

BLOCKS, THREADS = ref.BLOCKS, ref.THREADS
torch_threads = limit_threads
_unit = ref.unit32


def _duplicated(n_i=150, n_t=260, d=128, seed=2):
    """Images with a common direction (so hubs form), the second half copying the first;
    texts near random images, a few copied: exact ties in both directions."""
    rng = np.random.default_rng(seed)
    common = rng.standard_normal(d)
    X = rng.standard_normal((n_i, d)) + 0.7 * common * rng.random((n_i, 1))
    Y = X[rng.integers(0, n_i, n_t)] + 1.5 * rng.standard_normal((n_t, d))
    X, Y = _unit(X), _unit(Y)
    X[n_i // 2 :] = X[: n_i - n_i // 2]
    Y[-20:] = Y[:20]
    return X, Y


def _reference_counts(Q, C, k):
    """N_k from every row of the full float64 cosine matrix (ties: lower candidate index)."""
    top = ref.exact_topk_rows(ref.unit(Q) @ ref.unit(C).T, k)
    return np.bincount(top.ravel(), minlength=len(C))


@pytest.mark.parametrize("threads", THREADS)
@pytest.mark.parametrize("block_size", BLOCKS)
def test_k_occurrence_matches_dense_reference_with_duplicates(block_size, threads):
    X, Y = _duplicated()
    with torch_threads(threads):
        got = hubness(X, Y, k=9, block_size=block_size, return_counts=True)
    np.testing.assert_array_equal(got["k_occurrence_t2i"], _reference_counts(Y, X, 9))
    np.testing.assert_array_equal(got["k_occurrence_i2t"], _reference_counts(X, Y, 9))
    # every image has a copy, so with an odd k the k-th place of every text query falls on
    # a tied pair: the lower index takes it, the copy never counts more, and often less
    n_t2i = got["k_occurrence_t2i"]
    assert (n_t2i[75:] <= n_t2i[:75]).all() and (n_t2i[75:] < n_t2i[:75]).any()
    assert n_t2i.sum() == 9 * len(Y)


def test_summaries_follow_their_definitions():
    X, Y = _duplicated()
    got = hubness(X, Y, k=5, hub_fraction=0.05, return_counts=True)
    for name, n_c, n_q in (("t2i", len(X), len(Y)), ("i2t", len(Y), len(X))):
        n = got[f"k_occurrence_{name}"]
        assert n.sum() == 5 * n_q
        assert got[f"hubness_skew_{name}"] == pytest.approx(skew(n.astype(float)), rel=1e-12)
        assert got[f"antihub_share_{name}"] == np.mean(n == 0)
        h = int(np.ceil(0.05 * n_c))
        assert got[f"hub_occupancy_{name}"] == np.sort(n)[-h:].sum() / (5 * n_q)
        assert got[f"hubness_max_{name}"] == n.max()
        chance = random_retrieval_hubness(n_q, n_c, 5, 0.05)
        p = 5 / n_c
        assert got[f"hubness_skew_{name}_chance"] == pytest.approx(
            (1 - 2 * p) / np.sqrt(n_q * p * (1 - p))
        )
        assert got[f"antihub_share_{name}_chance"] == pytest.approx((1 - p) ** n_q)
        assert got[f"hub_occupancy_{name}_chance"] == chance["hub_occupancy"]
        # this data is built with hubs: every number reads above chance
        assert got[f"hubness_skew_{name}"] > got[f"hubness_skew_{name}_chance"]
        assert got[f"hub_occupancy_{name}"] > got[f"hub_occupancy_{name}_chance"]
        assert got[f"hubness_max_{name}"] > got[f"hubness_max_{name}_chance"]


@pytest.mark.parametrize(("n_q", "n_c", "k"), [(200, 150, 5), (60, 400, 10)])
def test_chance_values_match_simulated_random_retrieval(n_q, n_c, k):
    rng = np.random.default_rng(n_q)
    reps = 400
    h = int(np.ceil(0.01 * n_c))
    occ, top, anti, sk = [], [], [], []
    for _ in range(reps):
        picks = np.argpartition(rng.random((n_q, n_c)), k, axis=1)[:, :k]  # uniform k-subsets
        n = np.bincount(picks.ravel(), minlength=n_c)
        occ.append(np.sort(n)[-h:].sum() / (k * n_q))
        top.append(n.max())
        anti.append(np.mean(n == 0))
        sk.append(skew(n))
    chance = random_retrieval_hubness(n_q, n_c, k)
    assert chance["hubs"] == h
    se = lambda v: 4 * np.std(v) / np.sqrt(reps) + 1e-12  # noqa: E731
    assert abs(np.mean(occ) - chance["hub_occupancy"]) < se(occ)
    assert abs(np.mean(top) - chance["max"]) < se(top)
    assert abs(np.mean(anti) - chance["antihub_share"]) < se(anti) + 1e-3
    # the sample skewness of n_c counts is close to the binomial one (a little below)
    assert abs(np.mean(sk) - chance["skew"]) < 0.15 * chance["skew"] + se(sk)


def test_one_hub_takes_every_slot():
    rng = np.random.default_rng(0)
    X = _unit(rng.standard_normal((50, 16)))
    X[0] = _unit(np.ones((1, 16)))[0]
    Y = _unit(np.ones((80, 16)) + 0.01 * rng.standard_normal((80, 16)))
    got = hubness(X, Y, k=1, return_counts=True)
    assert got["k_occurrence_t2i"][0] == 80
    assert got["antihub_share_t2i"] == 49 / 50
    assert got["hub_occupancy_t2i"] == 1.0
    assert got["hubness_max_t2i"] == 80


def test_even_retrieval_has_the_ideal_values():
    """Each text is a copy of one image, each image has one: N_1 = 1 everywhere."""
    rng = np.random.default_rng(1)
    X = _unit(rng.standard_normal((120, 24)))
    got = hubness(X, X[rng.permutation(120)], k=1)
    assert got["hubness_skew_t2i"] == 0.0 and got["antihub_share_t2i"] == 0.0
    assert got["hub_occupancy_t2i"] == 2 / 120  # h = ceil(1.2) = 2 candidates, one slot each


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), k=st.integers(1, 6))
def test_counts_follow_permutations(seed, k):
    """Reordering the queries changes nothing; reordering the candidates permutes N_k
    (continuous random data: no ties, so the index tie rule plays no part)."""
    rng = np.random.default_rng(seed)
    Q = _unit(rng.standard_normal((40, 8)))
    C = _unit(rng.standard_normal((30, 8)))
    n = k_occurrence(Q, C, k)
    np.testing.assert_array_equal(k_occurrence(Q[rng.permutation(40)], C, k), n)
    perm = rng.permutation(30)
    np.testing.assert_array_equal(k_occurrence(Q, C[perm], k), n[perm])
    a = hubness(C, Q, k=k)
    b = hubness(C[perm], Q[rng.permutation(40)], k=k)
    for key in ("hubness_skew_t2i", "antihub_share_i2t", "hub_occupancy_t2i"):
        assert a[key] == pytest.approx(b[key], abs=1e-12)


def test_bad_inputs_give_clear_errors():
    X, Y = _duplicated(n_i=20, n_t=30, d=8)
    with pytest.raises(ModgapError, match="1 <= k < the 20 candidates, got k=20"):
        hubness(X, Y, k=20)
    with pytest.raises(ModgapError, match="got k=0"):
        k_occurrence(Y, X, 0)
    with pytest.raises(ModgapError, match=r"hub_fraction must be in \(0, 1\]"):
        hubness(X, Y, hub_fraction=0)
    with pytest.raises(ModgapError, match="has 4 dimensions but 8 were expected"):
        hubness(X, Y[:, :4])
    with pytest.raises(ModgapError, match="block_size must be positive"):
        hubness(X, Y, k=3, block_size=0)


def test_coco500_clip_has_hubs(coco500_path):
    """Real CLIP ViT-B/16: both directions far more skewed than random retrieval."""
    d = np.load(coco500_path)
    got = hubness(d["image_emb"], d["text_emb"], k=10)
    assert got["hubness_skew_t2i"] == pytest.approx(2.356, abs=1e-3)
    assert got["hubness_skew_i2t"] == pytest.approx(1.646, abs=1e-3)
    for name in ("t2i", "i2t"):
        assert got[f"hubness_skew_{name}"] > 5 * got[f"hubness_skew_{name}_chance"]
        assert got[f"hub_occupancy_{name}"] > 2 * got[f"hub_occupancy_{name}_chance"]
