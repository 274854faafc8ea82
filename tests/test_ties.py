"""Results that must not depend on the BLAS kernel, the block shape or the thread count.

Duplicated rows give equal exact scores; a float32 product rounds them differently by position,
block and kernel, so every rank, top-k and nearest neighbour is checked here against the dense
float64 reference at several block sizes and thread counts (modgap._ties)."""

from __future__ import annotations

import math
import os
import platform
import subprocess
import sys

import numpy as np
import pytest
import torch

import _references as ref
from modgap._ties import TIE_TOL, count_above, exact_scores, fixed_scores, score_window
from modgap.compute import limit_threads
from modgap.measures.neighbours import mixed_neighbour_diagnostics
from modgap.reducers._graph import bipartite_knn_graph
from modgap.tasks.mixed import mixed_search_metrics
from modgap.tasks.retrieval import retrieval_ranks
from modgap.tasks.zeroshot import zero_shot_metrics

BLOCKS, THREADS = ref.BLOCKS, ref.THREADS
torch_threads = limit_threads
_unit = ref.unit32


def _duplicated(n_i=300, captions=2, d=512, seed=5, noise=3.0):
    """Images whose second half copies the first, noisy captions, texts shuffled; a few texts
    copied too, so both directions see exact ties."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n_i, d))
    t2i = rng.permutation(np.repeat(np.arange(n_i), captions))
    Y = X[t2i] + noise * rng.standard_normal((t2i.size, d))
    X, Y = _unit(X), _unit(Y)
    X[n_i // 2 :] = X[: n_i - n_i // 2]
    Y[-20:] = Y[:20]
    return X, Y, t2i


def test_exact_scores_depend_on_the_two_vectors_only():
    rng = np.random.default_rng(0)
    A = torch.from_numpy(_unit(rng.standard_normal((50, 300))))
    B = torch.from_numpy(_unit(rng.standard_normal((40, 300))))
    A[30] = A[3]
    ia = torch.tensor([3, 30, 3, 7])
    ib = torch.tensor([5, 5, 5, 9])
    s = exact_scores(A, B, ia, ib)
    assert s[0].item() == s[1].item() == s[2].item()  # same vectors, same bits, any position
    alone = exact_scores(A, B, ia[1:2], ib[1:2])  # another batch shape
    assert alone.item() == s[0].item()
    # symmetric, and within float64 round-off of the exactly rounded sum
    assert exact_scores(B, A, ib, ia).tolist() == s.tolist()
    for p in range(4):
        a, b = A[ia[p]].double().tolist(), B[ib[p]].double().tolist()
        assert abs(s[p].item() - math.fsum(x * y for x, y in zip(a, b, strict=True))) < 1e-15


@pytest.mark.parametrize("d", [1, 7, 300, 512])
def test_exact_scores_are_the_pairwise_tree_whatever_the_chunk(d):
    """The fixed tree (column j plus column j + h, width padded to a power of two), bit for
    bit, whether the pairs are scored one at a time, a few per chunk or all at once."""
    rng = np.random.default_rng(2)
    A = torch.from_numpy(_unit(rng.standard_normal((60, d))))
    B = torch.from_numpy(_unit(rng.standard_normal((70, d))))
    ia = torch.from_numpy(rng.integers(0, 60, 500))
    ib = torch.from_numpy(rng.integers(0, 70, 500))
    P = A.numpy()[ia.numpy()].astype(np.float64) * B.numpy()[ib.numpy()].astype(np.float64)
    P = np.pad(P, ((0, 0), (0, (1 << max(0, (d - 1).bit_length())) - d)))
    while P.shape[1] > 1:
        P = P[:, : P.shape[1] // 2] + P[:, P.shape[1] // 2 :]
    want = P[:, 0].view(np.int64)
    for chunk in (1, 8 * 1024 * 3, 2**20, None):
        got = exact_scores(A, B, ia, ib, chunk_bytes=chunk).numpy().view(np.int64)
        assert np.array_equal(got, want), chunk


def test_window_covers_float32_rounding():
    rng = np.random.default_rng(1)
    d = 512
    A, B = _unit(rng.standard_normal((200, d))), _unit(rng.standard_normal((300, d)))
    S32 = torch.from_numpy(A) @ torch.from_numpy(B).T
    S64 = A.astype(np.float64) @ B.T.astype(np.float64)
    assert np.abs(S32.numpy() - S64).max() < score_window(d) / 2
    assert TIE_TOL < 1e-11


@pytest.mark.parametrize("threads", THREADS)
@pytest.mark.parametrize("block_size", BLOCKS)
def test_retrieval_ranks_with_duplicates(block_size, threads):
    X, Y, t2i = _duplicated()
    want_i2t, want_t2i = ref.retrieval_ranks(X, Y, t2i)
    with torch_threads(threads):
        got_i2t, got_t2i = retrieval_ranks(X, Y, t2i, block_size=block_size)
    np.testing.assert_array_equal(got_t2i, want_t2i)
    np.testing.assert_array_equal(got_i2t, want_i2t)
    assert (want_t2i == 1).mean() > 0.3  # the duplicated images tie with the true one


def _mixed_reference(X, Y, t2i, ks):
    n_i, n_t = len(X), len(Y)
    Z = ref.unit(np.concatenate([X, Y]))
    S = Z @ Z.T
    N = len(Z)
    np.fill_diagonal(S, -np.inf)
    is_text = np.r_[np.zeros(n_i, bool), np.ones(n_t, bool)]
    top = ref.exact_topk_rows(
        S, max(ks), tie_key=lambda r, c: (is_text[c] == is_text[r]).astype(float)
    )
    out = {}
    partners = [set() for _ in range(N)]
    for j, i in enumerate(t2i):
        partners[i].add(n_i + j)
        partners[n_i + j].add(i)
    ranks = np.zeros(N, dtype=np.int64)
    for q in range(N):
        if partners[q]:
            best = max(S[q, p] for p in partners[q])
            others = [c for c in range(N) if c != q and c not in partners[q]]
            ranks[q] = 1 + int(np.sum(S[q, others] > best + ref.TIE))
    for k in ks:
        r = ranks[ranks > 0]
        out[f"mixed_recall@{k}"] = float(np.mean(r <= k))
        own = int((is_text[top[:, :k]] == is_text[:, None]).sum())
        out[f"mixed_same_modality@{k}"] = own / (N * k)
    return out


@pytest.mark.parametrize("threads", THREADS)
@pytest.mark.parametrize("block_size", BLOCKS)
def test_mixed_search_with_duplicates(block_size, threads):
    X, Y, t2i = _duplicated(n_i=120, captions=2, d=64, noise=1.0)
    Y[:30] = X[t2i[:30]]  # texts identical to their image: exact cross-modal ties
    ks = (1, 5, 10)
    want = _mixed_reference(X, Y, t2i, ks)
    with torch_threads(threads):
        got = mixed_search_metrics(X, Y, t2i, ks=ks, block_size=block_size)
    for key, value in want.items():
        assert got[key] == value, key


@pytest.mark.parametrize("threads", THREADS)
@pytest.mark.parametrize("block_size", BLOCKS)
def test_neighbour_diagnostics_with_duplicates(block_size, threads):
    X, Y, _ = _duplicated(n_i=150, captions=1, d=256, noise=0.8)
    Y[:40] = X[:40]  # cross-modal copies: the nearest other point ties with a same duplicate
    want = ref.neighbour_diagnostics(X, Y)
    with torch_threads(threads):
        got = mixed_neighbour_diagnostics(X, Y, block_size=block_size)
    assert got == want


@pytest.mark.parametrize("threads", THREADS)
@pytest.mark.parametrize("block_rows", BLOCKS)
def test_spectral_graph_with_duplicates(block_rows, threads):
    X, Y, _ = _duplicated(n_i=200, captions=1, d=128, noise=0.7)
    k = 6
    with torch_threads(threads):
        W, row_kth, col_kth = bipartite_knn_graph(X, Y, k, "exp", 0.1, block_rows=block_rows)
    S = X.astype(np.float64) @ Y.T.astype(np.float64)  # the graph takes unit rows as they are
    keep = np.zeros(S.shape, bool)
    rows = ref.exact_topk_rows(S, k)
    keep[np.arange(S.shape[0])[:, None], rows] = True
    cols = ref.exact_topk_rows(S.T, k)
    keep[cols, np.arange(S.shape[1])[:, None]] = True
    np.testing.assert_array_equal(W.toarray() > 0, keep)  # the same edges, ties by index
    np.testing.assert_allclose(W.toarray(), np.exp((S - 1) / 0.1) * keep, rtol=1e-12)
    np.testing.assert_allclose(row_kth, np.sort(S, axis=1)[:, -k], atol=1e-12)
    np.testing.assert_allclose(col_kth, np.sort(S, axis=0)[-k], atol=1e-12)


def test_spectral_graph_bits_do_not_depend_on_blocks_or_threads():
    X, Y, _ = _duplicated(n_i=200, captions=1, d=128, noise=0.7)
    graphs = []
    for threads in THREADS:
        for block_rows in BLOCKS:
            with torch_threads(threads):
                W, row_kth, col_kth = bipartite_knn_graph(
                    X, Y, 5, "exp", 0.05, block_rows=block_rows
                )
            graphs.append((W, row_kth, col_kth))
    W0, r0, c0 = graphs[0]
    for W, r, c in graphs[1:]:
        assert (W != W0).nnz == 0
        assert r.tobytes() == r0.tobytes() and c.tobytes() == c0.tobytes()


@pytest.mark.parametrize("threads", THREADS)
def test_zero_shot_ties_go_to_the_lower_class(threads):
    rng = np.random.default_rng(3)
    W = _unit(rng.standard_normal((6, 64)))
    W[4] = W[1]  # two classes with the same prompt embedding
    X = _unit(W[rng.integers(0, 6, 400)] + 0.6 * rng.standard_normal((400, 64)))
    y = rng.integers(0, 6, 400)
    S = ref.unit(X) @ ref.unit(W).T
    top = ref.exact_topk_rows(S, 5)
    with torch_threads(threads):
        got = zero_shot_metrics(X, y, W, return_predictions=True)
    np.testing.assert_array_equal(got["predictions"], top[:, 0])
    assert got["acc5"] == float(np.mean((top == y[:, None]).any(axis=1)))
    assert 4 not in set(got["predictions"])  # class 4 always loses its tie to class 1


def _any_norms(rng, n, d):
    """Rows of any norm, from tiny to large."""
    B = rng.standard_normal((n, d)) * np.exp(3 * rng.standard_normal((n, 1)))
    return B.astype(np.float32)


@pytest.mark.parametrize("d", [3, 64, 512, 1000])
def test_fixed_scores_are_exact_products(d):
    rng = np.random.default_rng(d)
    A, B = _unit(rng.standard_normal((12, d))), _any_norms(rng, 9, d)
    S = fixed_scores(torch.from_numpy(A), torch.from_numpy(B))
    assert S.dtype == torch.float64
    # within 1e-13 of the exactly rounded inner product, relative to the norms
    norms = np.linalg.norm(B.astype(np.float64), axis=1)
    for i in range(12):
        for j in range(9):
            a, b = A[i].astype(np.float64).tolist(), B[j].astype(np.float64).tolist()
            exact = math.fsum(x * y for x, y in zip(a, b, strict=True))
            assert abs(S[i, j].item() - exact) <= 1e-13 * norms[j]


def test_fixed_scores_bits_do_not_depend_on_blocks_order_or_threads():
    rng = np.random.default_rng(3)
    A = _unit(rng.standard_normal((40, 512)))
    A[20:] = A[:20]
    At, Bt = torch.from_numpy(A), torch.from_numpy(_any_norms(rng, 30, 512))
    S = fixed_scores(At, Bt)
    assert torch.equal(S[20:], S[:20])  # duplicated rows, the same bits
    perm = torch.from_numpy(np.random.default_rng(1).permutation(30))
    for threads in THREADS:
        with torch_threads(threads):
            for bs in BLOCKS:
                parts = [fixed_scores(At[s : s + bs], Bt) for s in range(0, 40, bs)]
                assert torch.equal(torch.cat(parts), S)
            assert torch.equal(fixed_scores(At, Bt[perm]), S[:, perm])
            assert torch.equal(fixed_scores(Bt, At), S.T)


@pytest.mark.parametrize("axis", [1, 0])
@pytest.mark.parametrize("with_active", [False, True])
def test_count_above_with_offsets_matches_brute_force(axis, with_active):
    """Counts of corrected scores s - a_q o_c above corrected thresholds, against float64
    loops; offsets built so that many corrected scores tie exactly with the thresholds."""
    rng = np.random.default_rng(7 + axis)
    d = 128
    Q = _unit(rng.standard_normal((40, d)))
    C = _unit(rng.standard_normal((70, d)))
    C[35:] = C[:35]  # duplicated candidates: equal exact scores
    Qt, Ct = torch.from_numpy(Q), torch.from_numpy(C)
    S64 = exact_scores(
        Qt, Ct, torch.arange(40).repeat_interleave(70), torch.arange(70).repeat(40)
    ).reshape(40, 70)
    offset = torch.from_numpy(rng.uniform(-0.3, 0.6, 70))
    offset[35:] = offset[:35]
    active = torch.from_numpy(rng.random(40) < 0.6) if with_active else None
    a = torch.ones(40, dtype=torch.float64) if active is None else active.double()
    corrected = S64 - a[:, None] * offset[None, :]
    # thresholds: the corrected score of one candidate per query (ties with its duplicate)
    pick = torch.from_numpy(rng.integers(0, 70, 40))
    thr = corrected[torch.arange(40), pick]
    want = (corrected > thr[:, None] + TIE_TOL).sum(dim=1)
    S32 = Qt @ Ct.T
    scale = torch.ones(40, dtype=torch.float64)

    def exact(rows, cols):
        q, c = (rows, cols) if axis == 1 else (cols, rows)
        return S64[q, c]

    block = S32 if axis == 1 else S32.T.contiguous()
    got = count_above(block, thr, scale, d, exact, axis=axis, offset=offset, active=active)
    np.testing.assert_array_equal(got.numpy(), want.numpy())
    # the float32 corrected scores alone would miscount: the exact step matters
    rough = ((S32.double() - a[:, None] * offset.float().double()) > thr[:, None]).sum(dim=1)
    assert (rough != want).any()


#: what `make test`'s second run sets to pick other kernels than this machine's defaults
KERNEL_CHOICES = ("OPENBLAS_CORETYPE", "MKL_CBWR", "MKL_ENABLE_INSTRUCTIONS", "ATEN_CPU_CAPABILITY")
_KERNEL_PROBE = """
import hashlib, numpy as np, threadpoolctl, torch
a = np.random.default_rng(0).standard_normal((64, 512)).astype(np.float32)
t = torch.from_numpy(a)
print([i.get("architecture") for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"])
print(hashlib.sha1((t @ t.T).numpy().tobytes()).hexdigest())
"""


@pytest.mark.skipif(
    "MODGAP_OTHER_KERNELS" not in os.environ
    or platform.machine().lower() not in ("x86_64", "amd64"),
    reason="only in make test's second run (MODGAP_OTHER_KERNELS=1), on x86",
)
def test_the_second_run_uses_other_kernels_and_one_thread():
    # a kernel choice that did not take would let the second run pass without proving anything
    def probe(env):
        run = subprocess.run(
            [sys.executable, "-c", _KERNEL_PROBE], env=env, capture_output=True, text=True
        )
        assert run.returncode == 0, run.stderr
        return run.stdout.splitlines()

    # without the choices: the kernels this machine picks by itself
    default_env = {k: v for k, v in os.environ.items() if k not in KERNEL_CHOICES}
    (numpy_here, torch_here), (numpy_default, torch_default) = probe(None), probe(default_env)
    assert numpy_here != numpy_default, numpy_here  # OpenBLAS core of numpy and scipy
    if torch.backends.mkl.is_available():
        assert torch_here != torch_default  # MKL path of torch's matrix products
    assert torch.get_num_threads() == 1


def test_merge_topk_of_split_lists_is_the_order_of_one_block():
    """The streamed merge of per-shard top-k lists and the in-memory select_topk share one
    rule (merge_topk): lists cut anywhere and merged give the whole block's top-k, ties
    (duplicated candidates) by key then id."""
    import torch

    from modgap._ties import exact_scores, merge_topk, row_scale, topk_rows

    rng = np.random.default_rng(0)
    C = rng.normal(size=(60, 8)).astype(np.float32)
    C[10] = C[40]
    C[41] = C[10]
    C /= np.linalg.norm(C, axis=1, keepdims=True)
    Q = np.vstack([C[10], rng.normal(size=(5, 8))]).astype(np.float32)
    Q /= np.linalg.norm(Q, axis=1, keepdims=True)
    Qt, Ct = torch.from_numpy(Q), torch.from_numpy(C)
    scale = row_scale(Qt, Ct)
    k = 6

    def top(lo, hi):
        def exact(r, c):
            return exact_scores(Qt, Ct[lo:hi], r, c)

        ids, sc = topk_rows(Qt @ Ct[lo:hi].T, k, scale, 8, exact)
        return ids.numpy() + lo, sc.numpy(), np.zeros(ids.shape, np.int64)

    whole = top(0, 60)
    parts = [top(a, b) for a, b in ((0, 17), (17, 41), (41, 60))]
    ids, sc, _ = merge_topk(parts, k, scale.numpy())
    np.testing.assert_array_equal(ids, whole[0])
    np.testing.assert_array_equal(sc, whole[1])
    assert list(ids[0, :3]) == [10, 40, 41]  # the duplicates tie: lower id first


def _labelled(n_x=150, n_y=230, d=64, classes=6, seed=11):
    """Rows drawn from a pool of 40 vectors (exact ties everywhere, relevant or not), labels
    with several relevant candidates per query, and labels present on one side only (queries
    without a relevant candidate)."""
    rng = np.random.default_rng(seed)
    pool = _unit(rng.standard_normal((40, d)))
    X, Y = pool[rng.integers(0, 40, n_x)], pool[rng.integers(0, 40, n_y)]
    lx, ly = rng.integers(0, classes + 1, n_x), rng.integers(0, classes, n_y)
    ly[:5] = classes + 3  # never relevant to anything
    return X, Y, lx, ly


@pytest.mark.parametrize("route", ["pairs", "per-class"])
@pytest.mark.parametrize("threads", THREADS)
@pytest.mark.parametrize("block_size", BLOCKS)
def test_first_relevant_ranks_with_several_relevant_candidates(
    block_size, threads, route, monkeypatch
):
    """The one ranking kernel (instance and class-level retrieval) against the dense reference,
    on both of its ways of finding the best relevant score."""
    import modgap.tasks.ranking as ranking

    monkeypatch.setattr(ranking, "_SPARSE_PAIRS", 10**9 if route == "pairs" else 0)
    X, Y, lx, ly = _labelled()
    want_x, want_y = ref.relevant_ranks(X, Y, lx, ly)
    with torch_threads(threads):
        got_x, got_y = ranking.first_relevant_ranks(
            torch.from_numpy(X),
            torch.from_numpy(Y),
            torch.from_numpy(lx),
            torch.from_numpy(ly),
            block_size=block_size,
        )
    np.testing.assert_array_equal(got_x.numpy(), want_x)
    np.testing.assert_array_equal(got_y.numpy(), want_y)
    assert (want_x == 0).any() and (want_y == 0).any()  # queries without a relevant candidate
    assert (want_x == 1).mean() > 0.3  # ties with a non-relevant copy count for the query


@pytest.mark.parametrize("route", ["pairs", "per-class"])
@pytest.mark.parametrize("block_size", [1, 97])
def test_first_relevant_ranks_with_corrected_scores(block_size, route, monkeypatch):
    import modgap.tasks.ranking as ranking

    monkeypatch.setattr(ranking, "_SPARSE_PAIRS", 10**9 if route == "pairs" else 0)
    X, Y, lx, ly = _labelled(seed=12)
    rng = np.random.default_rng(3)
    # offsets on a coarse grid: corrected copies still tie exactly
    o_x, o_y = rng.integers(-4, 5, len(X)) / 64.0, rng.integers(-4, 5, len(Y)) / 64.0
    a_x, a_y = (rng.random(len(X)) < 0.7) * 1.0, (rng.random(len(Y)) < 0.7) * 1.0
    want_x, want_y = ref.relevant_ranks(X, Y, lx, ly, (o_x, o_y, a_x, a_y))
    off = tuple(torch.from_numpy(v) for v in (o_x, o_y, a_x, a_y))
    got_x, got_y = ranking.first_relevant_ranks(
        torch.from_numpy(X),
        torch.from_numpy(Y),
        torch.from_numpy(lx),
        torch.from_numpy(ly),
        block_size=block_size,
        offsets=off,
    )
    np.testing.assert_array_equal(got_x.numpy(), want_x)
    np.testing.assert_array_equal(got_y.numpy(), want_y)


@pytest.mark.parametrize("axis", [1, 0])
def test_count_above_in_reused_buffers_matches_brute_force(axis):
    """Counts against a float64 loop when the scratch blocks are larger than the score block
    and reused from a previous call (stale 0/1 entries must not leak into the window), with
    many scores inside the window: duplicated candidates tied with the thresholds."""
    rng = np.random.default_rng(11 + axis)
    d = 96
    Q = _unit(rng.standard_normal((30, d)))
    C = _unit(rng.standard_normal((50, d)))
    C[25:] = C[:25]
    Qt, Ct = torch.from_numpy(Q), torch.from_numpy(C)
    S64 = exact_scores(
        Qt, Ct, torch.arange(30).repeat_interleave(50), torch.arange(50).repeat(30)
    ).reshape(30, 50)
    thr = S64[torch.arange(30), torch.from_numpy(rng.integers(0, 50, 30))]
    want = (S64 > thr[:, None] + TIE_TOL).sum(dim=1)
    S32 = Qt @ Ct.T
    block = S32 if axis == 1 else S32.T.contiguous()
    bufs = [torch.ones(64, 64), torch.full((64, 64), 7.0)]  # stale contents

    def exact(rows, cols):
        q, c = (rows, cols) if axis == 1 else (cols, rows)
        return S64[q, c]

    scale = torch.ones(30, dtype=torch.float64)
    for near in (bufs[1], bufs[1], None, None):  # later calls find earlier 0/1 blocks
        got = count_above(block, thr, scale, d, exact, axis, buffer=bufs[0], near_buffer=near)
        np.testing.assert_array_equal(got.numpy(), want.numpy())


def test_score_blocks_are_bounded_by_the_cache_share_and_the_budget():
    from modgap._ties import MIN_SCORE_ROWS, SCORE_BLOCK_BYTES, score_block_rows
    from modgap.compute import Compute

    wide = Compute(memory_budget="4GB")
    rows = score_block_rows(25_000, 3, wide)
    assert MIN_SCORE_ROWS <= rows and rows * 25_000 * 4 <= SCORE_BLOCK_BYTES
    assert score_block_rows(10**6, 3, wide) == MIN_SCORE_ROWS  # product speed first
    # a small budget wins over both: three blocks of 1 MiB rows in 2 MiB make 1 row
    assert score_block_rows(2**18, 3, Compute(memory_budget="2MiB")) == 1
