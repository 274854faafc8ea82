"""Mixed-modality search against a plain dense reference."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import gapped_pairs
from modgap.errors import InputError, ModgapError
from modgap.tasks.mixed import mixed_search_metrics


def _reference(X, Y, t2i, ks):
    n_i, n_t = len(X), len(Y)
    Z = np.concatenate([X, Y]).astype(np.float64)
    Z /= np.linalg.norm(Z, axis=1, keepdims=True)
    S = Z @ Z.T
    N = len(Z)
    is_text = np.r_[np.zeros(n_i, bool), np.ones(n_t, bool)]
    partners = [set() for _ in range(N)]
    for j, i in enumerate(t2i):
        partners[i].add(n_i + j)
        partners[n_i + j].add(i)
    out = {}
    ranks_img, ranks_txt = [], []
    for q in range(N):
        if not partners[q]:
            continue
        best = max(S[q, p] for p in partners[q])
        others = [c for c in range(N) if c != q and c not in partners[q]]
        r = 1 + sum(S[q, c] > best for c in others)
        (ranks_txt if is_text[q] else ranks_img).append(r)
    ranks_img, ranks_txt = np.array(ranks_img), np.array(ranks_txt)
    for k in ks:
        out[f"mixed_recall@{k}"] = np.mean(np.r_[ranks_img, ranks_txt] <= k)
        out[f"mixed_image_query_recall@{k}"] = np.mean(ranks_img <= k)
        out[f"mixed_text_query_recall@{k}"] = np.mean(ranks_txt <= k)
        shares = []
        for q in range(N):
            s = S[q].copy()
            s[q] = -np.inf
            top = np.argsort(-s, kind="stable")[:k]
            shares.append(np.mean(is_text[top] == is_text[q]))
        out[f"mixed_same_modality@{k}"] = np.mean(shares)
    return out


@pytest.mark.parametrize("captions", [1, 3])
def test_matches_dense_reference(captions):
    rng = np.random.default_rng(captions)
    X = rng.standard_normal((40, 12)).astype(np.float32)
    t2i = rng.permutation(np.repeat(np.arange(40), captions))
    t2i = t2i[t2i != 0]  # image 0 has no caption: no recall query for it
    Y = (X[t2i] + 0.9 * rng.standard_normal((len(t2i), 12)) + 0.8).astype(np.float32)
    ks = (1, 5, 10)
    ours = mixed_search_metrics(X, Y, t2i, ks=ks, block_size=17)
    ref = _reference(X, Y, t2i, ks)
    assert set(ours) == set(ref)
    for key in ref:
        assert ours[key] == pytest.approx(ref[key], abs=1e-9), key
    assert 0 < ours["mixed_recall@1"] < 1


def test_gap_shows_as_own_modality_retrieval():
    X, Y = gapped_pairs(n=100, d=16, gap=2.0, noise=0.3, seed=0)
    gapped = mixed_search_metrics(X, Y, ks=(1, 5))
    closed = mixed_search_metrics(X, X + 0.01, ks=(1, 5))
    assert gapped["mixed_same_modality@5"] > 0.9
    assert closed["mixed_recall@1"] == 1.0
    assert closed["mixed_same_modality@1"] == 0.0  # the nearest item is always the partner
    unpaired = mixed_search_metrics(X, Y[:50], ks=(5,))
    assert set(unpaired) == {"mixed_same_modality@5"}


def test_bad_inputs():
    X, Y = gapped_pairs(n=5, d=8)
    with pytest.raises(ModgapError, match="K=10 is larger than the 9 other items"):
        mixed_search_metrics(X, Y, ks=(10,))
    with pytest.raises(InputError, match="text_to_image"):
        mixed_search_metrics(X, Y, np.arange(5) + 3, ks=(1,))
