"""Retrieval metrics against a plain dense reference, torchmetrics and the real COCO-500 file."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from modgap.errors import InputError, ModgapError
from modgap.tasks.retrieval import retrieval_metrics, retrieval_ranks


def _random(n_i: int, captions: int, d: int = 16, seed: int = 0, noise: float = 1.5):
    """Images and ``captions`` noisy captions per image (so retrieval is neither perfect nor
    chance), texts shuffled so the pairing is not block-ordered."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n_i, d))
    t2i = rng.permutation(np.repeat(np.arange(n_i), captions))
    Y = X[t2i] + noise * rng.standard_normal((t2i.size, d))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    Y /= np.linalg.norm(Y, axis=1, keepdims=True)
    return X.astype(np.float32), Y.astype(np.float32), t2i


def _dense_reference(X, Y, t2i, ks):
    """The textbook definition with the whole score matrix and a dense positive mask, float64."""
    X = X.astype(np.float64)
    Y = Y.astype(np.float64)
    X = X / np.linalg.norm(X, axis=1, keepdims=True)
    Y = Y / np.linalg.norm(Y, axis=1, keepdims=True)
    S = X @ Y.T  # (n_i, n_t)
    pos = np.zeros_like(S, dtype=bool)
    pos[t2i, np.arange(len(t2i))] = True
    i2t = []
    for i in range(len(X)):
        if not pos[i].any():
            continue
        best = S[i][pos[i]].max()
        i2t.append(1 + np.sum(S[i][~pos[i]] > best))
    t2i_r = [1 + np.sum(S[:, j][~pos[:, j]] > S[t2i[j], j]) for j in range(len(Y))]
    i2t, t2i_r = np.array(i2t), np.array(t2i_r)
    out = {}
    for k in ks:
        out[f"image_retrieval_recall@{k}"] = np.mean(t2i_r <= k)
        out[f"text_retrieval_recall@{k}"] = np.mean(i2t <= k)
    out["rsum"] = 100 * sum(v for key, v in out.items() if "recall" in key)
    out["i2t_median_rank"] = np.median(i2t)
    out["i2t_mean_rank"] = np.mean(i2t)
    out["t2i_median_rank"] = np.median(t2i_r)
    out["t2i_mean_rank"] = np.mean(t2i_r)
    return out


@pytest.mark.parametrize("captions", [1, 5])
@pytest.mark.parametrize("block_size", [None, 7])
def test_matches_dense_reference(captions, block_size):
    X, Y, t2i = _random(60, captions, seed=captions)
    ks = (1, 5, 10)
    ours = retrieval_metrics(X, Y, t2i, ks=ks, block_size=block_size)
    ref = _dense_reference(X, Y, t2i, ks)
    assert set(ours) == set(ref)
    for key in ref:
        assert ours[key] == pytest.approx(ref[key], abs=1e-9), key
    # the data are such that the metrics are informative (neither 0 nor perfect)
    assert 0 < ours["image_retrieval_recall@1"] < 1


@pytest.mark.parametrize("captions", [1, 5])
def test_matches_torchmetrics_hit_rate(captions):
    from torchmetrics.retrieval import RetrievalHitRate

    X, Y, t2i = _random(50, captions, seed=10 + captions)
    ours = retrieval_metrics(X, Y, t2i, ks=(1, 5, 10))
    S = torch.from_numpy(X.astype(np.float64) @ Y.T.astype(np.float64))
    n_i, n_t = S.shape
    pos = torch.zeros(n_i, n_t, dtype=torch.bool)
    pos[torch.from_numpy(t2i), torch.arange(n_t)] = True
    for k in (1, 5, 10):
        hr = RetrievalHitRate(top_k=k)
        # image -> text: one query per image, its captions are the relevant documents
        i2t = hr(S.flatten(), pos.flatten(), indexes=torch.arange(n_i).repeat_interleave(n_t))
        hr = RetrievalHitRate(top_k=k)
        t2i_hr = hr(
            S.T.flatten(), pos.T.flatten(), indexes=torch.arange(n_t).repeat_interleave(n_i)
        )
        assert ours[f"text_retrieval_recall@{k}"] == pytest.approx(float(i2t), abs=1e-6)
        assert ours[f"image_retrieval_recall@{k}"] == pytest.approx(float(t2i_hr), abs=1e-6)


def test_folds_average_independent_evaluations():
    X, Y, t2i = _random(50, 5, seed=3)
    ours = retrieval_metrics(X, Y, t2i, ks=(1, 5), folds=5)
    refs = []
    for f in range(5):
        lo, hi = 10 * f, 10 * (f + 1)
        sel = np.flatnonzero((t2i >= lo) & (t2i < hi))
        refs.append(_dense_reference(X[lo:hi], Y[sel], t2i[sel] - lo, (1, 5)))
    for key in refs[0]:
        assert ours[key] == pytest.approx(np.mean([r[key] for r in refs]), abs=1e-9), key


def test_ties_count_in_the_query_favour_and_images_without_captions_are_skipped():
    X = np.array([[1, 0], [1, 0], [0, 1]], dtype=np.float32)  # images 0 and 1 identical
    Y = np.array([[1, 0], [0, 1]], dtype=np.float32)  # text 0 -> image 1, text 1 -> image 2
    i2t, t2i = retrieval_ranks(X, Y, np.array([1, 2]))
    assert t2i.tolist() == [1, 1]  # image 0 ties with the true image 1: optimistic rank 1
    assert i2t.tolist() == [0, 1, 1]  # image 0 has no caption: no query (rank 0)
    m = retrieval_metrics(X, Y, np.array([1, 2]), ks=(1,))
    assert m["text_retrieval_recall@1"] == 1.0


def test_torch_input_and_inner_product():
    X, Y, t2i = _random(30, 2, seed=4)
    scale = np.linspace(0.5, 2, len(X), dtype=np.float32)[:, None]
    a = retrieval_metrics(torch.from_numpy(X), torch.from_numpy(Y), torch.from_numpy(t2i))
    b = retrieval_metrics(X * scale, Y, t2i)  # cosine ignores the scale
    assert a == b
    c = retrieval_metrics(X * scale, Y, t2i, normalize=False)
    assert c != a


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), captions=st.integers(1, 3))
def test_invariant_to_rotation_and_image_order(seed, captions):
    X, Y, t2i = _random(20, captions, d=8, seed=seed, noise=1.0)
    rng = np.random.default_rng(seed)
    R, _ = np.linalg.qr(rng.standard_normal((8, 8)))
    perm = rng.permutation(20)
    inv = np.argsort(perm)
    base = retrieval_ranks(X, Y, t2i)
    rot = retrieval_ranks((X @ R).astype(np.float32), (Y @ R).astype(np.float32), t2i)
    shuffled = retrieval_ranks(X[perm], Y, inv[t2i])
    # a rotation preserves cosines up to float rounding: ranks move only on near-ties
    assert np.abs(base[1] - rot[1]).max() <= 1
    np.testing.assert_array_equal(base[1], shuffled[1])
    np.testing.assert_array_equal(base[0][perm], shuffled[0])


def test_bad_inputs_give_clear_errors():
    X, Y, t2i = _random(10, 2)
    with pytest.raises(ModgapError, match="K=11 is larger than the 10 images"):
        retrieval_metrics(X, Y, t2i, ks=(1, 11))
    with pytest.raises(ModgapError, match=r"K=3 is larger than the 2 images .*fold"):
        retrieval_metrics(X, Y, t2i, ks=(3,), folds=5)
    with pytest.raises(ModgapError, match="positive integer"):
        retrieval_metrics(X, Y, t2i, ks=(0,))
    with pytest.raises(ModgapError, match="ks is empty"):
        retrieval_metrics(X, Y, t2i, ks=())
    with pytest.raises(InputError, match="give 'text_to_image'"):
        retrieval_metrics(X, Y)
    with pytest.raises(InputError, match="outside the 10 images"):
        retrieval_metrics(X, Y, t2i + 5)
    with pytest.raises(InputError, match="dimensions"):
        retrieval_metrics(X, Y[:, :4], t2i)
    with pytest.raises(ModgapError, match="folds=20 but there are only 10 images"):
        retrieval_metrics(X, Y, t2i, folds=20)


def test_coco500_rsum(coco500_path):
    z = np.load(coco500_path)
    m = retrieval_metrics(z["image_emb"], z["text_emb"])
    ref = _dense_reference(z["image_emb"], z["text_emb"], np.arange(500), (1, 5, 10))
    print(
        f"\nCOCO-500 CLIP ViT-B/16: rSum={m['rsum']:.1f} "
        f"i2t R@1={m['text_retrieval_recall@1']:.3f} t2i R@1={m['image_retrieval_recall@1']:.3f}"
    )
    assert m["rsum"] == pytest.approx(ref["rsum"], abs=1e-9)
    # a pretrained CLIP retrieves far above chance (chance rSum on 500 items is ~3.2)
    assert m["rsum"] > 300


def test_exact_duplicates_tie_in_the_query_favour_at_full_size():
    # duplicated images give exactly tied scores; the positive scores must carry the same bits
    # as the blocked product, or a duplicate would randomly outrank the true image
    X, Y, t2i = _random(300, 2, d=512, seed=5, noise=3.0)
    X[150:] = X[:150]
    ours = retrieval_ranks(X, Y, t2i, block_size=97)
    ref = _dense_reference(X, Y, t2i, (1,))
    S = X.astype(np.float64) @ Y.T.astype(np.float64)
    t2i_ref = [1 + np.sum(np.delete(S[:, j], t2i[j]) > S[t2i[j], j]) for j in range(len(Y))]
    np.testing.assert_array_equal(ours[1], t2i_ref)
    assert ref["image_retrieval_recall@1"] == np.mean(ours[1] <= 1)


def test_plain_lists_are_accepted():
    X, Y, t2i = _random(12, 1, d=4, seed=6)
    assert retrieval_metrics(X.tolist(), Y.tolist(), t2i, ks=(1,)) == retrieval_metrics(
        X, Y, t2i, ks=(1,)
    )
