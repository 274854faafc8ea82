"""Gap measures against plain reference implementations and known values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import _references as ref
from _references import neighbour_diagnostics
from conftest import gapped_pairs
from modgap.embeddings import EmbeddingSet
from modgap.errors import InputError, ModgapError
from modgap.measures import (
    centroid_gap,
    measure_all,
    mixed_neighbour_diagnostics,
    per_dimension_gap,
    relative_modality_gap,
    rmg_no_information,
)

pytestmark = pytest.mark.usefixtures("single_thread")


_unit = ref.unit


# -- centroid gap -------------------------------------------------------------------------------
def test_centroid_gap_coco500(coco500_path):
    z = np.load(coco500_path)
    assert centroid_gap(z["image_emb"], z["text_emb"])["centroid_gap"] == pytest.approx(
        0.8514, abs=5e-4
    )


def test_centroid_gap_coco500_random_init(coco500_random_path):
    z = np.load(coco500_random_path)
    assert centroid_gap(z["image_emb"], z["text_emb"])["centroid_gap"] == pytest.approx(
        1.136, abs=1e-3
    )


def test_centroid_gap_matches_reference():
    X, Y = gapped_pairs(120, 16, seed=3)
    Y = Y[:77]  # unpaired, different counts
    mx, my = _unit(X).mean(0), _unit(Y).mean(0)
    out = centroid_gap(X, Y, return_vector=True)
    assert out["centroid_gap"] == pytest.approx(np.sqrt(((mx - my) ** 2).sum()), rel=1e-12)
    cos = mx.dot(my) / np.sqrt(mx.dot(mx) * my.dot(my))
    assert out["centroid_cosine"] == pytest.approx(cos, rel=1e-12)
    np.testing.assert_allclose(out["gap_vector"], mx - my, rtol=1e-12)
    assert "gap_vector" not in centroid_gap(X, Y)


def test_centroid_gap_accepts_torch_and_normalises():
    X, Y = gapped_pairs(50, 8, seed=1)
    ref = centroid_gap(X, Y)["centroid_gap"]
    got = centroid_gap(torch.from_numpy(X) * 3.0, torch.from_numpy(Y) * 0.5)["centroid_gap"]
    assert got == pytest.approx(ref, rel=1e-6)


def test_per_dimension_gap_matches_reference():
    X, Y = gapped_pairs(80, 12, seed=11)
    out = per_dimension_gap(X, Y, top=3)
    ref = _unit(X).mean(0) - _unit(Y).mean(0)
    sq = np.sort(ref**2)[::-1]
    share = np.cumsum(sq) / sq.sum()
    assert out["dims_50"] == int(np.argmax(share >= 0.5)) + 1
    assert out["dims_90"] == int(np.argmax(share >= 0.9)) + 1
    assert out["top_dims"] == list(np.argsort(-(ref**2))[:3])
    np.testing.assert_allclose(out["top_share"], sq[:3] / sq.sum())
    np.testing.assert_allclose(out["gap_sq"], ref**2)


def test_per_dimension_gap_known_value():
    X = np.array([[1.0, 0, 0, 0]])
    Y = np.array([[0, 1.0, 0, 0]])
    out = per_dimension_gap(X, Y)
    assert (out["dims_50"], out["dims_90"], out["dim"]) == (1, 2, 4)
    assert out["top_dims"][:2] == [0, 1]
    assert out["top_share"][:2] == [0.5, 0.5]


def test_per_dimension_gap_single_dimension_gap():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((400, 32))
    Y = X.copy()
    X[:, 5] += 40.0  # after normalisation the gap lives almost only in dim 5
    out = per_dimension_gap(X, Y)
    assert out["top_dims"][0] == 5
    assert out["dims_50"] == 1


@pytest.mark.parametrize(
    ("X", "Y", "message"),
    [
        (np.ones((3, 4)), np.ones((3, 5)), "'text_emb' has 5 dimensions"),
        (np.ones((0, 4)), np.ones((3, 4)), "'image_emb' is empty \\(0 rows\\)"),
        (np.ones(4), np.ones((3, 4)), "'image_emb' must be a 2-D"),
        (np.array([[1.0, np.nan]]), np.ones((1, 2)), "'image_emb' has NaN/inf in 1 row"),
        (np.ones((2, 2)), np.zeros((2, 2)), "'text_emb' has 2 all-zero row"),
        (np.array([["a", "b"]]), np.ones((1, 2)), "'image_emb' has non-numeric dtype"),
    ],
)
def test_centroid_gap_bad_input(X, Y, message):
    """The measures refuse bad rows with the wording of every reader (one row preparation)."""
    with pytest.raises(InputError, match=message):
        centroid_gap(X, Y)


# -- RMG ----------------------------------------------------------------------------------------
def _rmg_reference(X, Y, t2i):
    X, Y = _unit(X), _unit(Y)

    def dist(a, b):
        return (1 - a @ b) / 2

    d_m = np.mean([dist(Y[j], X[t2i[j]]) for j in range(len(Y))])
    d_i = np.mean([dist(X[i], X[k]) for i in range(len(X)) for k in range(len(X)) if i != k])
    d_t = np.mean([dist(Y[i], Y[k]) for i in range(len(Y)) for k in range(len(Y)) if i != k])
    return d_m / (d_m + (d_i + d_t) / 2)


def test_rmg_matches_pairwise_reference_one_caption():
    X, Y = gapped_pairs(40, 8, seed=2)
    assert relative_modality_gap(X, Y) == pytest.approx(
        _rmg_reference(X, Y, np.arange(40)), rel=1e-10
    )


def test_rmg_matches_pairwise_reference_several_captions():
    rng = np.random.default_rng(5)
    X, Y = gapped_pairs(60, 8, seed=4)
    X = X[:20]
    t2i = rng.integers(0, 20, size=60)
    assert relative_modality_gap(X, Y, t2i) == pytest.approx(_rmg_reference(X, Y, t2i), rel=1e-10)


def _rmg_paper(X, Y):
    """Schrodi et al.'s relative modality gap as the paper writes it, N pairs, cosine
    dissimilarity 1 - cos: mean matched dissimilarity over itself plus the mean of the
    within-modality dissimilarities, 1 / (2N(N-1)) sum over i != j of d(x_i, x_j) + d(y_i, y_j)."""
    X, Y = _unit(X), _unit(Y)
    n = len(X)

    def d(a, b):
        return 1.0 - float(a @ b)

    matched = sum(d(X[i], Y[i]) for i in range(n)) / n
    intra = sum(d(X[i], X[j]) + d(Y[i], Y[j]) for i in range(n) for j in range(n) if i != j) / (
        2 * n * (n - 1)
    )
    return matched / (intra + matched)


def test_rmg_is_schrodi_et_al_cosine_form():
    X, Y = gapped_pairs(30, 8, seed=7)
    assert relative_modality_gap(X, Y) == pytest.approx(_rmg_paper(X, Y), rel=1e-12)


def test_rmg_without_information_is_not_one_half():
    # the mean matched distance over every cyclic shift of the pairing is the mean over all
    # image-text pairs: the RMG at that d_M is the no-information value
    X, Y = gapped_pairs(40, 8, gap=0.9, seed=8)
    Xu, Yu = _unit(X), _unit(Y)
    n = len(X)
    d_m = np.mean([np.mean((1 - np.sum(np.roll(Xu, s, 0) * Yu, 1)) / 2) for s in range(n)])
    intra = [
        np.mean([(1 - A[i] @ A[j]) / 2 for i in range(n) for j in range(n) if i != j])
        for A in (Xu, Yu)
    ]
    expected = d_m / (d_m + sum(intra) / 2)
    assert rmg_no_information(X, Y) == pytest.approx(expected, rel=1e-12)
    assert rmg_no_information(X, Y) > 0.52  # a gap pushes it above 0.5, towards 1
    # "random encoders": each modality in a narrow cone, matched and unmatched cosines equal
    rng = np.random.default_rng(0)
    mx, my = rng.normal(size=64), rng.normal(size=64)
    X = mx + 0.01 * rng.normal(size=(300, 64))
    Y = my + 0.01 * rng.normal(size=(300, 64))
    rmg, chance = relative_modality_gap(X, Y), rmg_no_information(X, Y)
    assert chance > 0.999 and rmg == pytest.approx(chance, abs=1e-4)
    # no gap and no pairing: the two modalities one distribution, then (and only then) 0.5
    X, Y = rng.normal(size=(400, 64)), rng.normal(size=(400, 64))
    assert rmg_no_information(X, Y) == pytest.approx(0.5, abs=0.01)


def test_rmg_bad_pairing():
    X, Y = gapped_pairs(10, 4)
    with pytest.raises(InputError, match="10 images but 7 texts"):
        relative_modality_gap(X, Y[:7])
    with pytest.raises(InputError, match=r"outside the 10 images .*indices must be in \[0, 10\)"):
        relative_modality_gap(X, Y, np.full(10, 10))
    with pytest.raises(InputError, match=r"'text_to_image' must have shape \(10,\)"):
        relative_modality_gap(X, Y, np.zeros(3, int))


# -- mixed-neighbour diagnostics ------------------------------------------------------------------
@pytest.mark.parametrize("block_size", [1, 3, 7, 16, 64, None])
@pytest.mark.parametrize(("n", "m", "gap"), [(23, 17, 0.3), (20, 20, 0.0), (9, 31, 1.5)])
def test_neighbours_block_equals_dense(block_size, n, m, gap):
    X, _ = gapped_pairs(n, 6, gap=gap, seed=n)
    _, Y = gapped_pairs(m, 6, gap=gap, seed=n)  # same gap direction (same seed)
    got = mixed_neighbour_diagnostics(X, Y, block_size=block_size, dtype="float64")
    assert got == pytest.approx(neighbour_diagnostics(X, Y))


@pytest.mark.parametrize("block_size", [1, 2, 5, 13, 100])
def test_neighbours_block_equals_dense_with_ties(block_size):
    # sign vectors scaled by 1/4 in 16 dims: exactly unit norm and exact dot products, so
    # similarities tie a lot and the tie rule (ties go to the other modality) is exercised
    rng = np.random.default_rng(7)
    X = rng.choice([-0.25, 0.25], size=(30, 16))
    Y = rng.choice([-0.25, 0.25], size=(25, 16))
    Y[:5] = X[:5]  # some exact cross-modal duplicates
    X[10] = X[11]  # and a same-modality duplicate
    dense = neighbour_diagnostics(X, Y)
    for dtype in ("float32", "float64"):
        got = mixed_neighbour_diagnostics(X, Y, block_size=block_size, dtype=dtype)
        assert got == pytest.approx(dense)


def _dense_excl_siblings(X, Y, t2i):
    """Plain reference: TIR and IMR of text queries with the query's own image's captions
    (itself included) left out of its ranked list."""
    X = X / np.linalg.norm(X, axis=1, keepdims=True)
    Y = Y / np.linalg.norm(Y, axis=1, keepdims=True)
    best = (Y @ X.T).max(axis=1)
    S = Y @ Y.T
    S[t2i[:, None] == t2i[None, :]] = -np.inf
    ahead = (S > best[:, None]).sum(axis=1)
    same = int((ahead > 0).sum())
    tir = same / (len(Y) - same) if same < len(Y) else math.inf
    return tir, float((ahead + 1).mean())


@pytest.mark.parametrize("block_size", [1, 4, 64])
def test_neighbours_leave_sibling_captions_out(block_size):
    rng = np.random.default_rng(3)
    X, _ = gapped_pairs(30, 8, gap=0.6, seed=3)
    t2i = np.repeat(np.arange(30), 4)  # four close captions per image
    Y = X[t2i] + np.r_[0.8, np.zeros(7)] + 0.1 * rng.standard_normal((120, 8))
    Y /= np.linalg.norm(Y, axis=1, keepdims=True)
    got = mixed_neighbour_diagnostics(
        X, Y, block_size=block_size, dtype="float64", text_to_image=t2i
    )
    tir, imr = _dense_excl_siblings(X, Y, t2i)
    assert got["tir_excl_siblings"] == pytest.approx(tir)
    assert got["imr_excl_siblings"] == pytest.approx(imr)
    # the siblings make the plain TIR infinite; left out, texts do find images
    assert math.isinf(got["tir"]) and got["tir_excl_siblings"] < got["tir"]
    plain = mixed_neighbour_diagnostics(X, Y, block_size=block_size, dtype="float64")
    assert {k: got[k] for k in plain} == plain and "tir_excl_siblings" not in plain


def test_neighbours_with_one_caption_per_image_exclude_nothing():
    X, Y = gapped_pairs(40, 6, gap=0.3, seed=9)
    got = mixed_neighbour_diagnostics(X, Y, block_size=7, text_to_image=np.arange(40))
    assert got["tir_excl_siblings"] == got["tir"] and got["imr_excl_siblings"] == got["imr"]
    # so the set's measures give the sibling keys only where some image has several captions
    assert "tir_excl_siblings" not in measure_all(EmbeddingSet(X, Y), only=["neighbours"])
    t2i = np.r_[np.arange(40), 0]
    several = measure_all(EmbeddingSet(X, np.vstack([Y, Y[:1]]), text_to_image=t2i), only="itr")
    assert {"tir_excl_siblings", "imr_excl_siblings"} <= set(several)


def test_neighbours_complete_gap_gives_inf():
    # images in one half-space, texts in the opposite one: every same-modality similarity is
    # positive and every cross-modal one negative
    rng = np.random.default_rng(0)
    X = np.hstack([np.full((50, 1), 5.0), rng.standard_normal((50, 7))])
    Y = np.hstack([np.full((40, 1), -5.0), rng.standard_normal((40, 7))])
    out = mixed_neighbour_diagnostics(X, Y, block_size=8)
    assert out["itr"] == float("inf") and out["tir"] == float("inf")
    assert out["tmr"] == 50.0 and out["imr"] == 40.0  # all other same-modality rows first


def test_neighbours_exact_copy_is_all_cross_modal():
    X, _ = gapped_pairs(40, 8, seed=9)
    out = mixed_neighbour_diagnostics(X, X.copy(), block_size=6)
    assert out == {"itr": 0.0, "tir": 0.0, "tmr": 1.0, "imr": 1.0}


def test_neighbours_independent_samples_of_one_distribution_mix():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((1500, 8))
    Y = rng.standard_normal((1500, 8))
    out = mixed_neighbour_diagnostics(X, Y)
    assert out["itr"] == pytest.approx(1.0, abs=0.15)
    assert out["tir"] == pytest.approx(1.0, abs=0.15)
    assert out["tmr"] == pytest.approx(2.0, abs=0.15)  # geometric: mean rank 1/(1/2)
    assert out["imr"] == pytest.approx(2.0, abs=0.15)


def test_neighbours_single_image():
    X = np.array([[1.0, 0.0]])
    Y = np.array([[0.0, 1.0], [1.0, 1.0]])
    out = mixed_neighbour_diagnostics(X, Y)
    assert out["itr"] == 0.0 and out["tmr"] == 1.0
    assert out == pytest.approx(neighbour_diagnostics(X, Y))


def test_neighbours_bad_options():
    X, Y = gapped_pairs(5, 4)
    with pytest.raises(ModgapError, match="block_size must be a positive integer, got 0"):
        mixed_neighbour_diagnostics(X, Y, block_size=0)
    with pytest.raises(ModgapError, match="dtype must be 'float32' or 'float64'"):
        mixed_neighbour_diagnostics(X, Y, dtype="int8")
