"""Plain dense references (test oracles): the textbook definitions on the whole float64 score
matrix, with the project's tie rule (exact scores within 1e-12 tie)."""

from __future__ import annotations

import numpy as np

TIE = 1e-12


#: block sizes and thread counts every fast path is checked at (results must not depend on them)
BLOCKS = [1, 7, 97, 4096]
THREADS = [1, 2]


def unit(a):
    a = np.asarray(a, dtype=np.float64)
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def unit32(a):
    """Unit rows in float32 (what the library's kernels receive)."""
    return unit(a).astype(np.float32)


def ratio(same: int, other: int) -> float:
    if other == 0:
        return float("inf") if same > 0 else float("nan")
    return same / other


def neighbour_diagnostics(X, Y) -> dict:
    """ITR / TIR / TMR / IMR on the full (n+m)² matrix, each row sorted; among equal scores the
    other modality comes first."""
    Xn, Yn = unit(X), unit(Y)
    Z = np.vstack([Xn, Yn])
    n, m = Xn.shape[0], Yn.shape[0]
    is_text = np.r_[np.zeros(n, bool), np.ones(m, bool)]
    S = Z @ Z.T
    same = np.zeros(n + m, bool)
    first_other = np.zeros(n + m)
    for i in range(n + m):
        other = is_text != is_text[i]
        best_other = S[i, other].max()
        mine = np.flatnonzero(~other)
        mine = mine[mine != i]
        ahead = int(np.sum(S[i, mine] > best_other + TIE))
        same[i] = ahead > 0
        first_other[i] = ahead + 1
    return {
        "itr": ratio(int(same[:n].sum()), int((~same[:n]).sum())),
        "tir": ratio(int(same[n:].sum()), int((~same[n:]).sum())),
        "tmr": float(first_other[:n].mean()),
        "imr": float(first_other[n:].mean()),
    }


def retrieval_ranks(X, Y, t2i):
    """(i2t ranks, t2i ranks) with optimistic ties; 0 for images without a caption."""
    S = unit(X) @ unit(Y).T
    t2i = np.asarray(t2i)
    pos = np.zeros(S.shape, bool)
    pos[t2i, np.arange(len(t2i))] = True
    i2t = np.zeros(S.shape[0], dtype=np.int64)
    for i in range(S.shape[0]):
        if pos[i].any():
            i2t[i] = 1 + np.sum(S[i][~pos[i]] > S[i][pos[i]].max() + TIE)
    t2i_r = np.array(
        [1 + np.sum(np.delete(S[:, j], t2i[j]) > S[t2i[j], j] + TIE) for j in range(S.shape[1])]
    )
    return i2t, t2i_r


def exact_topk_rows(S, k, tie_key=None):
    """Indices of the k best entries of each row: by score (ties within TIE), then tie_key,
    then index."""
    out = np.empty((S.shape[0], k), dtype=np.int64)
    for r in range(S.shape[0]):
        s = S[r]
        cells = np.round(s / TIE)
        key = np.zeros(s.size) if tie_key is None else tie_key(r, np.arange(s.size))
        order = np.lexsort((np.arange(s.size), key, -cells))
        order = order[np.isfinite(s[order])]
        out[r] = order[:k]
    return out


def relevant_ranks(X, Y, lx, ly, offsets=None):
    """(ranks of X's queries among Y, of Y's among X): 1 + the non-relevant candidates scoring
    above the best relevant one (relevant: equal labels), ties for the query; 0 without a
    relevant candidate. Rows are taken as given (float64 products of the float32 inputs);
    ``offsets = (o_x, o_y, a_x, a_y)`` scores ``s(q, c) - a_q o_c``."""
    S = np.asarray(X, np.float64) @ np.asarray(Y, np.float64).T
    lx, ly = np.asarray(lx), np.asarray(ly)
    o_x, o_y, a_x, a_y = offsets or (0 * S[:, 0], 0 * S[0], 0 * S[:, 0], 0 * S[0])

    def ranks(S, lq, lc):
        out = np.zeros(S.shape[0], dtype=np.int64)
        for q in range(S.shape[0]):
            rel = lc == lq[q]
            if rel.any():
                out[q] = 1 + np.sum(S[q][~rel] > S[q][rel].max() + TIE)
        return out

    return (
        ranks(S - np.outer(a_x, o_y), lx, ly),
        ranks(S.T - np.outer(a_y, o_x), ly, lx),
    )
