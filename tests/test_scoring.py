"""Retrieval-time hubness corrections (CSLS, inverted softmax, QB-Norm) against a plain dense
float64 reference: the full score matrix corrected by the textbook formula, ranks with the
optimistic tie rule; at several block sizes and thread counts, on data full of exact ties."""

from __future__ import annotations

import math
from functools import cache

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import _references as ref
from modgap.compute import Compute, limit_threads
from modgap.embeddings import EmbeddingSet
from modgap.errors import ModgapError, NotFittedError
from modgap.tasks.retrieval import retrieval_metrics, retrieval_ranks
from modgap.tasks.scoring import CSLS, InvertedSoftmax, QBNorm

BLOCKS, THREADS = ref.BLOCKS, ref.THREADS
torch_threads = limit_threads
_unit = ref.unit32


@cache
def _data(d: int = 256):
    """Evaluated images whose second half copies the first, two noisy captions each, a few
    texts copied; fit-split banks that hold copies of their own rows and of evaluated rows,
    so candidates, positives, bank neighbours and top-1s all meet exact ties."""
    rng = np.random.default_rng(11)
    n_i = 160
    X = rng.standard_normal((n_i, d))
    t2i = rng.permutation(np.repeat(np.arange(n_i), 2))
    Y = X[t2i] + 2.0 * rng.standard_normal((t2i.size, d))
    X, Y = _unit(X), _unit(Y)
    X[n_i // 2 :] = X[: n_i - n_i // 2]
    Y[-15:] = Y[:15]
    BI = _unit(rng.standard_normal((90, d)) + 0.5 * rng.standard_normal(d))
    BT = _unit(rng.standard_normal((120, d)) + 0.5 * rng.standard_normal(d))
    BI[:10] = BI[10:20]
    BT[:10] = Y[:10]  # bank texts equal to evaluated texts
    BT[10:20] = BT[20:30]
    return X, Y, t2i, BI, BT


def _ranks(C_i2t, C_t2i, t2i):
    """Optimistic ranks of corrected score matrices (i2t: images × texts; t2i: texts × images)."""
    n_i = C_i2t.shape[0]
    caps = [np.flatnonzero(t2i == i) for i in range(n_i)]
    i2t = np.zeros(n_i, dtype=np.int64)
    for i in range(n_i):
        if caps[i].size:
            others = np.setdiff1d(np.arange(C_i2t.shape[1]), caps[i])
            best = C_i2t[i, caps[i]].max()
            i2t[i] = 1 + np.sum(C_i2t[i, others] > best + ref.TIE)
    t2i_r = np.array(
        [
            1 + np.sum(np.delete(C_t2i[j], t2i[j]) > C_t2i[j, t2i[j]] + ref.TIE)
            for j in range(len(t2i))
        ]
    )
    return i2t, t2i_r


def _mean_topk(S, k):
    """Mean of the k largest entries of each row."""
    return np.sort(S, axis=1)[:, -k:].mean(axis=1)


def _log_sum_exp(S, beta):
    """log Σ_j exp(beta S_ij) per row, stable."""
    m = S.max(axis=1)
    return beta * m + np.log(np.exp(beta * (S - m[:, None])).sum(axis=1))


def reference(kind, X, Y, t2i, BI, BT, k=10, beta=20.0):
    """Textbook corrected score matrices (float64) and their optimistic ranks."""
    X, Y, BI, BT = ref.unit(X), ref.unit(Y), ref.unit(BI), ref.unit(BT)
    S = X @ Y.T  # images × texts
    if kind == "csls":
        # CSLS(q, c) = 2 cos(q, c) - r_T(q) - r_S(c); r over k nearest neighbours
        r_img_bank = _mean_topk(X @ BT.T, k)  # each image to its nearest bank texts
        r_txt_bank = _mean_topk(Y @ BI.T, k)
        r_txt_eval = _mean_topk(S.T, k)  # each text query to its nearest evaluated images
        r_img_eval = _mean_topk(S, k)
        C_t2i = 2 * S.T - r_txt_eval[:, None] - r_img_bank[None, :]
        C_i2t = 2 * S - r_img_eval[:, None] - r_txt_bank[None, :]
        return _ranks(C_i2t, C_t2i, t2i)
    # inverted softmax exp(βs(q,c)) / Σ_{q' in bank} exp(βs(q',c)), through log(·)/β
    lse_img = _log_sum_exp(X @ BT.T, beta)
    lse_txt = _log_sum_exp(Y @ BI.T, beta)
    C_t2i = S.T - lse_img[None, :] / beta
    C_i2t = S - lse_txt[None, :] / beta
    if kind == "qb":
        # activation sets: candidates in a bank query's exact top-k (ties: lower index);
        # a query is normalised when its raw top-1 is in the set
        hub_img = np.zeros(len(X), bool)
        hub_img[ref.exact_topk_rows(BT @ X.T, k).ravel()] = True
        hub_txt = np.zeros(len(Y), bool)
        hub_txt[ref.exact_topk_rows(BI @ Y.T, k).ravel()] = True
        act_t = hub_img[ref.exact_topk_rows(S.T, 1)[:, 0]]
        act_i = hub_txt[ref.exact_topk_rows(S, 1)[:, 0]]
        assert 0 < act_t.mean() < 1 and 0 < act_i.mean() < 1  # both kinds of rows occur
        C_t2i = np.where(act_t[:, None], C_t2i, S.T)
        C_i2t = np.where(act_i[:, None], C_i2t, S)
    return _ranks(C_i2t, C_t2i, t2i)


CASES = {
    "csls": (lambda: CSLS(k=10), {"k": 10}),
    "inverted_softmax": (lambda: InvertedSoftmax(beta=20.0), {"beta": 20.0}),
    "qb": (lambda: QBNorm(k=1, beta=20.0), {"k": 1, "beta": 20.0}),
}


@cache
def _reference(kind):
    X, Y, t2i, BI, BT = _data()
    ref_kind = {"inverted_softmax": "is"}.get(kind, kind)
    return reference(ref_kind, X, Y, t2i, BI, BT, **CASES[kind][1])


@pytest.mark.parametrize("threads", THREADS)
@pytest.mark.parametrize("block_size", BLOCKS)
@pytest.mark.parametrize("kind", list(CASES))
def test_corrected_ranks_match_dense_reference(kind, block_size, threads):
    X, Y, t2i, BI, BT = _data()
    want_i2t, want_t2i = _reference(kind)
    corr = CASES[kind][0]().fit(BI, BT)
    with torch_threads(threads):
        got_i2t, got_t2i = retrieval_ranks(X, Y, t2i, block_size=block_size, correction=corr)
    np.testing.assert_array_equal(got_t2i, want_t2i)
    np.testing.assert_array_equal(got_i2t, want_i2t)
    # the correction changes ranks (a test that can fail), and duplicates tie with the positive
    plain_i2t, plain_t2i = retrieval_ranks(X, Y, t2i)
    assert (plain_t2i != want_t2i).any() and (plain_i2t != want_i2t).any()
    assert (want_t2i == 1).mean() > 0.2


@pytest.mark.parametrize("kind", list(CASES))
def test_offsets_do_not_depend_on_budget_threads_or_bank_order(kind):
    X, Y, _, BI, BT = _data()
    runs = []
    for threads in THREADS:
        for budget in ("1MiB", "3MiB", "512MiB"):
            corr = CASES[kind][0]().fit(BI, BT)
            with torch_threads(threads):
                runs.append(corr.offsets(X, Y, compute=Compute(memory_budget=budget)))
    for off in runs[1:]:
        assert off.image_offset.tobytes() == runs[0].image_offset.tobytes()
        assert off.text_offset.tobytes() == runs[0].text_offset.tobytes()
        if off.text_active is not None:
            np.testing.assert_array_equal(off.text_active, runs[0].text_active)
            np.testing.assert_array_equal(off.image_active, runs[0].image_active)
    perm_i, perm_t = np.random.default_rng(0).permutation(len(BI)), np.arange(len(BT))[::-1]
    shuffled = CASES[kind][0]().fit(BI[perm_i], BT[perm_t]).offsets(X, Y)
    np.testing.assert_allclose(shuffled.image_offset, runs[0].image_offset, rtol=0, atol=1e-14)
    np.testing.assert_allclose(shuffled.text_offset, runs[0].text_offset, rtol=0, atol=1e-14)


def test_offsets_are_the_textbook_statistics():
    X, Y, _, BI, BT = _data()
    # the rows are unit float32 rows, used as they are (no re-normalisation in float64)
    Xd, Yd, BId, BTd = (a.astype(np.float64) for a in (X, Y, BI, BT))
    off = CSLS(k=7).fit(BI, BT).offsets(X, Y)
    np.testing.assert_allclose(off.image_offset, _mean_topk(Xd @ BTd.T, 7) / 2, rtol=0, atol=1e-14)
    np.testing.assert_allclose(off.text_offset, _mean_topk(Yd @ BId.T, 7) / 2, rtol=0, atol=1e-14)
    for beta in (0.5, 20.0, 300.0):
        off = InvertedSoftmax(beta=beta).fit(BI, BT).offsets(X, Y)
        want = (_log_sum_exp(Xd @ BTd.T, beta) - math.log(len(BT))) / beta
        np.testing.assert_allclose(off.image_offset, want, rtol=0, atol=1e-13)
        want = (_log_sum_exp(Yd @ BId.T, beta) - math.log(len(BI))) / beta
        np.testing.assert_allclose(off.text_offset, want, rtol=0, atol=1e-13)


def test_bank_larger_than_one_chunk():
    """Banks over the 1024-row chunk of the log-sum-exp (a partial last chunk)."""
    rng = np.random.default_rng(4)
    X, Y = _unit(rng.standard_normal((40, 32))), _unit(rng.standard_normal((50, 32)))
    BI, BT = _unit(rng.standard_normal((1500, 32))), _unit(rng.standard_normal((2100, 32)))
    f64 = {n: a.astype(np.float64) for n, a in (("X", X), ("Y", Y), ("BI", BI), ("BT", BT))}
    off = InvertedSoftmax(beta=10.0).fit(BI, BT).offsets(X, Y)
    want = (_log_sum_exp(f64["X"] @ f64["BT"].T, 10.0) - math.log(2100)) / 10.0
    np.testing.assert_allclose(off.image_offset, want, rtol=0, atol=1e-13)
    off = CSLS(k=3).fit(BI, BT).offsets(X, Y)
    want = _mean_topk(f64["Y"] @ f64["BI"].T, 3) / 2
    np.testing.assert_allclose(off.text_offset, want, rtol=0, atol=1e-14)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_corrected_ranks_follow_a_permutation_of_the_images(seed):
    """Relabelling the evaluated images permutes the ranks and changes nothing else."""
    rng = np.random.default_rng(seed)
    n, d = 30, 16
    X = _unit(rng.standard_normal((n, d)))
    t2i = rng.integers(0, n, 45)
    t2i[:n] = np.arange(n)
    Y = _unit(X[t2i] + 1.5 * rng.standard_normal((45, d)))
    BI, BT = _unit(rng.standard_normal((25, d))), _unit(rng.standard_normal((35, d)))
    perm = rng.permutation(n)
    inv = np.argsort(perm)
    for corr in (CSLS(k=3), InvertedSoftmax(beta=10.0), QBNorm(k=2, beta=10.0)):
        corr.fit(BI, BT)
        r_i2t, r_t2i = retrieval_ranks(X, Y, t2i, correction=corr)
        p_i2t, p_t2i = retrieval_ranks(X[perm], Y, inv[t2i], correction=corr)
        np.testing.assert_array_equal(p_t2i, r_t2i)
        np.testing.assert_array_equal(p_i2t, r_i2t[perm])


def test_folds_and_metrics_use_the_correction():
    X, Y, t2i, BI, BT = _data()
    corr = CSLS(k=5).fit(BI, BT)
    m = retrieval_metrics(X, Y, t2i, correction=corr)
    r_i2t, r_t2i = retrieval_ranks(X, Y, t2i, correction=corr)
    assert m["image_retrieval_recall@1"] == float(np.mean(r_t2i <= 1))
    assert m["text_retrieval_recall@1"] == float(np.mean(r_i2t[r_i2t > 0] <= 1))
    folds = retrieval_metrics(X, Y, t2i, folds=2, correction=corr)
    part = np.arange(80)
    tsel = np.flatnonzero(t2i < 80)
    first = retrieval_metrics(X[part], Y[tsel], t2i[tsel], correction=corr)
    second = retrieval_metrics(X[80:], Y[t2i >= 80], t2i[t2i >= 80] - 80, correction=corr)
    for key in ("rsum", "t2i_mean_rank", "i2t_mean_rank"):
        assert folds[key] == pytest.approx((first[key] + second[key]) / 2), key


def test_fit_takes_an_embedding_set_and_clones():
    from sklearn.base import clone

    *_, BI, BT = _data()
    emb = EmbeddingSet(BI[:60], BT[:60])
    a = QBNorm(k=2, beta=5.0).fit(emb)
    b = QBNorm(k=2, beta=5.0).fit(BI[:60], BT[:60])
    assert a.image_bank_.tobytes() == b.image_bank_.tobytes()
    c = clone(a)
    assert c.get_params() == {"k": 2, "beta": 5.0} and not hasattr(c, "text_bank_")
    assert repr(a) == "QBNorm(beta=5.0, k=2)"


def test_bad_uses_give_clear_errors():
    X, Y, t2i, BI, BT = _data()
    with pytest.raises(NotFittedError, match="not fitted yet"):
        CSLS().offsets(X, Y)
    with pytest.raises(NotFittedError, match="not fitted yet"):
        retrieval_ranks(X, Y, t2i, correction=InvertedSoftmax())
    with pytest.raises(ModgapError, match=r"parameter k=0 \(an integer >= 1\)"):
        CSLS(k=0).fit(BI, BT)
    with pytest.raises(ModgapError, match="parameter beta=-1"):
        InvertedSoftmax(beta=-1).fit(BI, BT)
    with pytest.raises(ModgapError, match="parameter beta=nan"):
        QBNorm(beta=float("nan")).fit(BI, BT)
    with pytest.raises(ModgapError, match="k=200 is larger than the 120 bank texts"):
        CSLS(k=200).fit(BI, BT).offsets(X, Y)
    with pytest.raises(ModgapError, match="k=170 is larger than the 160 images"):
        QBNorm(k=170).fit(BI, BT).offsets(X, Y)
    with pytest.raises(ModgapError, match="has 8 dimensions but 256 were expected"):
        CSLS().fit(BI, BT).offsets(X[:, :8], Y[:, :8])
    with pytest.raises(ModgapError, match="works on cosine scores"):
        retrieval_ranks(X, Y, t2i, normalize=False, correction=CSLS().fit(BI, BT))
    with pytest.raises(ModgapError, match="must be a fitted scoring correction"):
        retrieval_ranks(X, Y, t2i, correction="csls")
    with pytest.raises(ModgapError, match="text_to_image"):
        CSLS().fit(BI, BT, text_to_image=np.full(len(BT), 999))
    with pytest.raises(ModgapError, match="fit needs image_emb and text_emb"):
        CSLS().fit(BI)


def test_coco500_held_out_r1(coco500_path):
    """Fit on 250 COCO images (and their captions), score the other 250; 10 random splits.
    Measured: every correction raises text → image R@1 by about 5 points; CSLS also raises
    image → text R@1 (about 2 points), the inverted softmax and QB-Norm leave it where it was
    (their changes on single splits go both ways). `pytest -s` prints the numbers."""
    d = np.load(coco500_path)
    emb = EmbeddingSet(d["image_emb"], d["text_emb"])
    kinds = {"csls": CSLS(), "inverted_softmax": InvertedSoftmax(), "qb_norm": QBNorm()}
    gains = {name: [] for name in kinds}  # (i2t, t2i) R@1 change per split
    for seed in range(10):
        fit, test = emb.split(0.5, seed=seed)
        assert fit.n_images == test.n_images == 250

        def r1(correction=None, test=test):
            m = retrieval_metrics(
                test.image_emb, test.text_emb, test.text_to_image, ks=(1,), correction=correction
            )
            return np.array([m["text_retrieval_recall@1"], m["image_retrieval_recall@1"]])

        base = r1()
        if seed == 0:
            assert tuple(base) == (0.636, 0.572)
        for name, corr in kinds.items():
            gains[name].append(r1(corr.fit(fit)) - base)
    for name, g in gains.items():
        g = np.array(g)
        print(f"\n{name}: mean R@1 change i2t {g[:, 0].mean():+.3f}, t2i {g[:, 1].mean():+.3f}")
        assert g[:, 1].mean() > 0.03 and (g[:, 1] > 0).all()  # hub images are scored down
    csls = np.array(gains["csls"])
    assert csls[:, 0].mean() > 0.01 and (csls[:, 0] > 0).sum() >= 8
    for name in ("inverted_softmax", "qb_norm"):
        assert abs(np.mean(np.array(gains[name])[:, 0])) < 0.01
