"""Property tests: every measure is invariant under a common rotation of both modalities and
under a permutation of the pairs; the degenerate "both modalities are the same set" cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import gapped_pairs
from modgap.embeddings import EmbeddingSet
from modgap.measures import measure_all, mixed_neighbour_diagnostics

pytestmark = pytest.mark.usefixtures("single_thread")

# Per-dimension statistics describe the coordinate axes, so a rotation changes them by design.
AXIS_KEYS = {"gap_dims_50", "gap_dims_90", "per_dimension"}
# Discrete results compared exactly (a float32 rotation could flip a near-tie; derandomized
# examples make that a reproducible failure rather than a flaky one).
EXACT_KEYS = {"itr", "tir", "tmr", "imr"}

SETTINGS = settings(max_examples=12, deadline=None, derandomize=True)


@st.composite
def embedding_sets(draw):
    seed = draw(st.integers(0, 2**32 - 1))
    n = draw(st.integers(6, 28))
    d = draw(st.integers(3, 8))
    gap = draw(st.floats(0.0, 1.6))
    captions = draw(st.integers(1, 3))
    rng = np.random.default_rng(seed)
    X, Y = gapped_pairs(n * captions, d, gap=gap, noise=0.8, seed=seed)
    if captions == 1:
        t2i = np.arange(n)
    else:
        t2i = np.r_[np.arange(n), rng.integers(0, n, size=n * (captions - 1))]
        X = X[:n]
    return X.astype(np.float64), Y.astype(np.float64), t2i, seed


def _measure(X, Y, t2i):
    return measure_all(EmbeddingSet(X, Y, text_to_image=t2i), seed=3)


def _n_test(n):
    return min(max(1, round(n * 0.3)), n - 1)


def _assert_close(a: dict, b: dict, skip=(), separability_slack=0.0):
    assert a.keys() == b.keys()
    for key in a.keys() - set(skip):
        va, vb = a[key], b[key]
        if isinstance(va, dict):
            _assert_close(va, vb)
        elif isinstance(va, str):  # a reason under "skipped" (hubness on fewer than 50 rows)
            assert va == vb, key
        elif key == "linear_separability":
            assert abs(va - vb) <= separability_slack + 1e-12, key
        elif isinstance(va, list):
            assert va == pytest.approx(vb, rel=2e-4, abs=2e-5), key
        elif key in EXACT_KEYS or isinstance(va, int):
            assert va == vb or (math.isnan(va) and math.isnan(vb)), key
        else:
            assert va == pytest.approx(vb, rel=2e-4, abs=2e-5, nan_ok=True), key


def _rotation(d, seed):
    q, r = np.linalg.qr(np.random.default_rng(seed).standard_normal((d, d)))
    return q * np.sign(np.diag(r))  # Haar-distributed


@SETTINGS
@given(embedding_sets())
def test_measures_invariant_under_common_rotation(case):
    X, Y, t2i, seed = case
    R = _rotation(X.shape[1], seed + 1)
    a, b = _measure(X, Y, t2i), _measure(X @ R, Y @ R, t2i)
    # the probe is rotation-equivariant; allow one held-out point to fall on the other side of
    # the boundary through the solver tolerance
    slack = 1 / (_n_test(len(X)) + _n_test(len(Y)))
    _assert_close(a, b, skip=AXIS_KEYS, separability_slack=slack)


@SETTINGS
@given(embedding_sets(), st.integers(0, 2**32 - 1))
def test_measures_invariant_under_permutation_of_pairs(case, perm_seed):
    X, Y, t2i, _ = case
    rng = np.random.default_rng(perm_seed)
    p_img, p_txt = rng.permutation(len(X)), rng.permutation(len(Y))
    new_index = np.argsort(p_img)  # old image row -> new image row
    a = _measure(X, Y, t2i)
    b = _measure(X[p_img], Y[p_txt], new_index[t2i[p_txt]])
    # subsample and split are drawn in a canonical row order, so the same rows are held out
    slack = 1 / (_n_test(len(X)) + _n_test(len(Y)))
    _assert_close(a, b, separability_slack=slack)


def test_same_set_exact_copy():
    X, _ = gapped_pairs(60, 8, seed=1)
    out = measure_all(EmbeddingSet(X, X.copy()))
    assert out["centroid_gap"] == 0.0
    assert out["centroid_cosine"] == pytest.approx(1.0)
    assert out["frechet_distance"] == pytest.approx(0.0, abs=1e-9)
    assert out["rmg"] == 0.0 and out["alignment"] == 0.0
    # each point's nearest other point is its own copy in the other modality: no query has a
    # same-modality nearest neighbour (documented in mixed_neighbour_diagnostics)
    assert (out["itr"], out["tir"], out["tmr"], out["imr"]) == (0.0, 0.0, 1.0, 1.0)


def test_same_set_shuffled_unpaired():
    X, _ = gapped_pairs(60, 8, seed=2)
    Y = X[np.random.default_rng(0).permutation(60)]
    out = measure_all(EmbeddingSet(X, Y, paired=False))
    assert out["centroid_gap"] == pytest.approx(0.0, abs=1e-7)
    assert out["uniformity_image"] == pytest.approx(out["uniformity_text"], rel=1e-5)
    assert mixed_neighbour_diagnostics(X, Y) == {"itr": 0.0, "tir": 0.0, "tmr": 1.0, "imr": 1.0}
    assert set(out["skipped"]) == {"rmg", "alignment", "cosine"}


def test_same_distribution_independent_samples_mix():
    rng = np.random.default_rng(3)
    X, Y = rng.standard_normal((1200, 6)), rng.standard_normal((1200, 6))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    Y /= np.linalg.norm(Y, axis=1, keepdims=True)
    out = measure_all(EmbeddingSet(X, Y, paired=False), only=["centroid", "neighbours"])
    assert out["centroid_gap"] < 0.05
    assert out["itr"] == pytest.approx(1.0, abs=0.15)
    assert out["tir"] == pytest.approx(1.0, abs=0.15)


@st.composite
def hubness_sets(draw):
    """Sets large enough for hubness (50 rows and more: below, it is skipped)."""
    seed = draw(st.integers(0, 2**32 - 1))
    n = draw(st.integers(50, 90))
    d = draw(st.integers(3, 8))
    gap = draw(st.floats(0.0, 1.6))
    X, Y = gapped_pairs(n, d, gap=gap, noise=0.8, seed=seed)
    return X.astype(np.float64), Y.astype(np.float64), seed


def _hubness(X, Y):
    return measure_all(EmbeddingSet(X, Y), only="hubness", seed=3)


@SETTINGS
@given(hubness_sets(), st.integers(0, 2**32 - 1))
def test_hubness_invariant_under_rotation_and_permutation(case, perm_seed):
    X, Y, seed = case
    a = _hubness(X, Y)
    assert "skipped" not in a and math.isfinite(a["hubness_skew_t2i"])
    R = _rotation(X.shape[1], seed + 1)
    _assert_close(a, _hubness(X @ R, Y @ R))
    rng = np.random.default_rng(perm_seed)
    _assert_close(a, _hubness(X[rng.permutation(len(X))], Y[rng.permutation(len(Y))]))
