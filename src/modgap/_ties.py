r"""Score comparisons that do not depend on the BLAS kernel, the block shape or the thread count.

Every rank, top-k and nearest neighbour in modgap compares inner products :math:`s(q, c) =
q \cdot c` of float32 rows. A float32 matrix product rounds each of them with an error that
depends on the summation order, which differs between kernels (AVX2 or AVX-512, MKL or
OpenBLAS, CPU or GPU), block shapes and thread counts; two candidates with equal exact scores
(duplicated rows, a text copied from another) then come out in either order, and a rank moves
from 1 to 2 on another machine. The rule used everywhere is:

1. **Float32 decides what it can.** For any summation order
   :math:`|\mathrm{fl}_{32}(q\cdot c) - q\cdot c| \le \gamma_d \lVert q\rVert\lVert c\rVert`,
   :math:`\gamma_d = d u / (1 - d u)`, :math:`u = 2^{-24}` (Higham, *Accuracy and Stability of
   Numerical Algorithms*, 2002, §3.1). Comparisons whose float32 scores differ by more than
   :func:`score_window` (twice that bound, plus the rounding of the threshold) are taken from the
   fast float32 blocks.
2. **The rest are decided by exact scores.** :func:`exact_scores` forms the products of the
   float32 inputs in float64 (exact: 24 + 24 significant bits fit in 53) and sums them by a
   fixed pairwise tree of IEEE additions. The value depends only on the two vectors, not on
   where they sit in a block, so duplicated rows score identically, on every machine.
3. **Ties.** Two exact scores closer than :data:`TIE_TOL` times the scale
   :math:`\lVert q\rVert \max\lVert c\rVert` are equal; callers say how equals are ordered (in
   retrieval, in the query's favour).

The float64 scores and the window are computed in :mod:`modgap._scores` (re-exported here);
this module takes the decisions. The callers work on float32 score blocks; only the few
comparisons inside the window (about :math:`2\cdot 10^{-4}` of the candidates on CLIP data, and
the duplicates) are recomputed: in ``benchmarks/bench_retrieval.py`` (1,000 images × 5,000
captions), 128 of the :math:`10^7` comparisons of both directions on its default data and 4,479
with captions far from their images (``--data crowded``). Score blocks come from
:func:`score_block_rows` and are reused across iterations; :func:`count_above` makes one
comparison and one sum per threshold.

**Corrected scores.** Retrieval-time hubness corrections (:mod:`modgap.tasks.scoring`) rank by
:math:`s(q, c) - a_q o_c`: a float64 offset per candidate, applied to a query or not
(:math:`a_q \in \{0, 1\}`). :func:`count_above` takes the offsets and enlarges its float32
window by their rounding; inside the window it compares :math:`\mathrm{exact}(q, c) - a_q o_c`.
The offsets themselves are statistics of whole score matrices (a log-sum-exp over a query bank,
a mean of the k best scores); :func:`fixed_scores` gives such matrices at matrix-product speed,
bit for bit the same on every machine, so the offsets are reproducible too.
"""

from __future__ import annotations

from typing import Any

# the scoring half lives in _scores; its names stay importable from here
from ._scores import exact_scores, fixed_scores, row_scale, score_window
from .compute import Compute, resolve

__all__ = [
    "TIE_TOL",
    "count_above",
    "exact_scores",
    "fixed_scores",
    "merge_topk",
    "offset_window",
    "row_scale",
    "score_block_rows",
    "score_window",
    "select_topk",
    "topk_ids",
    "topk_rows",
]

#: exact scores closer than this (relative to the product of the norms) are a tie
TIE_TOL = 2.0**-40

#: most bytes of one float32 score block of the in-memory exact kernels (ranks, top-k,
#: neighbours): the block and its comparison buffers stay near the cache, each pass over them
#: is cheap, and a block reused across iterations costs no page faults. Larger blocks were not
#: faster (the matrix product is as fast from a few hundred rows on) and cost their size in
#: memory: 268 MB blocks under the default budget made a 5k x 25k retrieval peak at 876 MB.
SCORE_BLOCK_BYTES = 16 << 20
#: fewest query rows per block the cache bound leaves (wide candidate sets): below a few dozen
#: rows the matrix product loses its speed
MIN_SCORE_ROWS = 64


def score_block_rows(n_cols: int, buffers: int = 1, compute: Compute | None = None) -> int:
    """Query rows per float32 score block against ``n_cols`` candidates: ``buffers`` blocks
    within the compute budget (:meth:`~modgap.compute.Compute.rows_per_block`), and one block
    within :data:`SCORE_BLOCK_BYTES` unless that leaves fewer than :data:`MIN_SCORE_ROWS`
    rows. At least 1."""
    budget = resolve(compute).rows_per_block(4 * max(1, int(n_cols)), buffers=buffers)
    cache = max(MIN_SCORE_ROWS, SCORE_BLOCK_BYTES // (4 * max(1, int(n_cols))))
    return max(1, min(budget, cache))


def offset_window(offset: Any, scale: Any) -> Any:
    """Extra half-width of the float32 window when float64 offsets are subtracted in float32:
    their rounding, the rounding of the subtraction and of the larger threshold, each at most
    ``2⁻²⁴ (max|o| + scale)``; four of them (``2⁻²¹ (max|o| + scale)``) leave room to spare."""
    omax = float(offset.abs().max()) if offset.numel() else 0.0
    return 2.0**-21 * (omax + scale)


def _ones(M: Any) -> tuple[Any, Any]:
    """Rows and columns of the non-zero entries of a 0/1 float block. On the CPU through a
    numpy boolean mask: torch's ``nonzero`` takes ten times as long as the comparison that
    made the block, numpy's a fraction of it."""
    import numpy as np
    import torch

    if M.device.type != "cpu":
        return M.nonzero(as_tuple=True)
    flat = torch.from_numpy(np.flatnonzero(M.numpy() != 0))  # the mask is C-ordered
    return flat // M.shape[1], flat % M.shape[1]


def count_above(
    S: Any,
    threshold: Any,
    scale: Any,
    d: int,
    exact: Any,
    axis: int = 1,
    buffer: Any = None,
    offset: Any = None,
    active: Any = None,
    offset_buffer: Any = None,
    near_buffer: Any = None,
) -> Any:
    """For each query of a float32 score block, the number of candidates whose exact score
    exceeds the query's exact ``threshold`` by more than the tie tolerance.

    With ``offset``, the score of candidate ``c`` for query ``q`` is the corrected one,
    ``exact(q, c) - a_q offset_c`` (``a_q`` = ``active[q]``, 1 when ``active`` is None), and
    ``threshold`` is a corrected score too.

    Parameters
    ----------
    S : float32 tensor (rows, cols)
        Scores; entries that must not count (the query itself, its positives) set to ``-inf``.
    threshold : float64 tensor
        One exact threshold per query: per row when ``axis=1``, per column when ``axis=0``.
    scale : float64 tensor
        Per query, ``‖q‖ · max‖c‖`` (1 for unit rows): scales the window and the tolerance.
    d : int
        Width of the vectors.
    exact : callable
        ``exact(rows, cols) -> float64 tensor``: exact scores of the block entries
        ``S[rows, cols]`` (:func:`exact_scores` on the right rows of the inputs).
    axis : {1, 0}
        1: queries are rows (count along each row); 0: queries are columns.
    buffer : float32 tensor, optional
        Scratch space of ``S``'s shape (reused across blocks: a fresh one costs page faults).
    offset : float64 tensor, optional
        One offset per candidate (per column when ``axis=1``, per row when ``axis=0``),
        subtracted from the scores of the active queries. The float32 window grows by
        :func:`offset_window`.
    active : bool or float tensor, optional
        Per query, whether its scores are corrected (default: all are).
    offset_buffer : float32 tensor, optional
        Scratch space for the corrected float32 block (as ``buffer``).
    near_buffer : float32 tensor, optional
        Scratch space for the comparison with the lower end of the window (as ``buffer``);
        without it the window is found from one boolean block, made only when some query has
        a score in it.

    Returns
    -------
    int64 tensor
        Counts, one per query. Ties (``s <= threshold + TIE_TOL * scale``) do not count.
    """
    import torch

    shape = (-1, 1) if axis == 1 else (1, -1)
    window = score_window(d) * scale
    if offset is not None:
        a = (
            torch.ones(S.shape[1 - axis], dtype=torch.float64, device=S.device)
            if active is None
            else active.to(torch.float64)
        )
        out = (
            torch.empty_like(S)
            if offset_buffer is None
            else offset_buffer[: S.shape[0], : S.shape[1]]
        )
        o32 = offset.float()
        # S - a ⊗ o in float32: a is 0 or 1, so the outer product is exact and the one
        # subtraction rounds once (masked -inf entries stay -inf)
        if axis == 1:
            torch.addr(S, a.float(), o32, alpha=-1, out=out)
        else:
            torch.addr(S, o32, a.float(), alpha=-1, out=out)
        S = out
        window = window + offset_window(offset, scale)

        def score(rows, cols):
            q, c = (rows, cols) if axis == 1 else (cols, rows)
            return exact(rows, cols) - a[q] * offset[c]
    else:
        score = exact
    hi = (threshold + window).float().reshape(shape)
    lo = (threshold - window).float().reshape(shape)
    buf = torch.empty_like(S) if buffer is None else buffer[: S.shape[0], : S.shape[1]]
    # comparisons summed as 0/1 floats: several times faster than summing booleans in torch,
    # and exact below 2**24 per sum. One comparison and one sum per threshold; the window
    # (lo, hi] is then the difference of the two 0/1 blocks, formed only when some query has
    # an entry in it, so the block is not copied nor compared again
    sum_dtype = torch.float32 if S.shape[axis] < 2**24 else torch.float64
    if near_buffer is not None:
        nbuf = near_buffer[: S.shape[0], : S.shape[1]]
        torch.gt(S, hi, out=buf)
        sure = buf.sum(axis, dtype=sum_dtype).long()
        torch.gt(S, lo, out=nbuf)
        near = nbuf.sum(axis, dtype=sum_dtype).long() - sure
        if bool((near > 0).any()):
            nbuf.sub_(buf)  # 1 exactly where lo < s <= hi
    else:  # one scratch block: the lower comparison first, the window from a boolean block
        nbuf = buf
        torch.gt(S, lo, out=buf)
        above_lo = buf.sum(axis, dtype=sum_dtype).long()
        torch.gt(S, hi, out=buf)
        sure = buf.sum(axis, dtype=sum_dtype).long()
        near = above_lo - sure
        if bool((near > 0).any()):
            buf.neg_().add_(torch.gt(S, lo))  # 1 exactly where lo < s <= hi
    if bool((near > 0).any()):
        rows, cols = _ones(nbuf)
        q = rows if axis == 1 else cols
        ahead = score(rows, cols) > threshold[q] + TIE_TOL * scale[q]
        sure.index_add_(0, q, ahead.long())
    return sure


def select_topk(
    values: Any,
    index: Any,
    k: int,
    scale: Any,
    d: int,
    exact: Any,
    tie_key: Any = None,
    complete: bool = False,
) -> tuple[Any, Any, Any]:
    """The exact top-``k`` of each row from float32 candidate lists.

    Parameters
    ----------
    values : float32 tensor (rows, L), sorted descending
        Float32 scores of each row's ``L >= k`` best candidates (``torch.topk``).
    index : int64 tensor (rows, L)
        Their candidate ids.
    k : int
    scale : float64 tensor (rows,)
        Per row, ``‖q‖ · max‖c‖`` (1 for unit rows).
    d : int
        Width of the vectors.
    exact : callable
        ``exact(row_positions, candidate_ids) -> float64`` exact scores.
    tie_key : callable, optional
        ``tie_key(row_positions, candidate_ids) -> int64`` ordering candidates with tied exact
        scores (smaller first) before their id; default: the id alone.
    complete : bool
        The lists hold every candidate of their rows (nothing lies beyond ``L``).

    Returns
    -------
    ids : int64 tensor (rows, k)
        The selected candidates, best first; exact scores on one ``TIE_TOL · scale`` grid cell
        tie and are ordered by ``(tie_key, id)``.
    scores : float64 tensor (rows, k)
        Their exact scores.
    short : bool tensor (rows,)
        Rows whose ``L`` candidates were not enough to decide (more near-ties than the list
        holds): the caller must call again with longer lists for them.
    """
    import numpy as np
    import torch

    rows, L = values.shape
    dev = values.device
    window = score_window(d) * scale
    # every candidate that can be in the exact top-k scores at least kth - window in float32
    reach = values >= (values[:, k - 1].double() - window).float()[:, None]
    reach &= torch.isfinite(values)  # masked entries (-inf) are never candidates
    if complete or L == k:
        short = torch.zeros(rows, dtype=torch.bool, device=dev)
    else:
        short = reach[:, -1].clone()
    r, c = reach.nonzero(as_tuple=True)
    cand = index[r, c]
    s64 = exact(r, cand)
    key = tie_key(r, cand) if tie_key is not None else torch.zeros_like(cand)
    # the reachable candidates as per-row lists (the rest -inf, id -1), ordered by the one
    # merge rule of every top-k in modgap, in memory and streamed
    r_np, c_np = r.cpu().numpy(), c.cpu().numpy()
    ids_l = np.full((rows, L), -1, dtype=np.int64)
    sc_l = np.full((rows, L), -np.inf)
    key_l = np.zeros((rows, L), dtype=np.int64)
    ids_l[r_np, c_np] = cand.cpu().numpy()
    sc_l[r_np, c_np] = s64.cpu().numpy()
    key_l[r_np, c_np] = key.cpu().numpy()
    top_ids, top_sc, _ = merge_topk([(ids_l, sc_l, key_l)], k, scale.cpu().numpy())
    ids = torch.from_numpy(top_ids).to(dev)
    scores = torch.from_numpy(top_sc).to(dev)
    return ids, scores, short


def merge_topk(lists: Any, k: int, scale: Any = None) -> tuple[Any, Any, Any]:
    """The top ``k`` of each row of several exact candidate lists: **the** order of every
    top-k in modgap (:func:`select_topk` on one block, the merge of shards and query blocks
    in :mod:`modgap.stream`, the mixed corpus of images and texts).

    Candidates are ordered by their exact score on the tie grid ``round(s / (TIE_TOL ·
    scale))`` (descending), then by their tie key (smaller first), then by their id; entries
    with score ``-inf`` (id -1) come last.

    Parameters
    ----------
    lists : sequence of ``(ids, scores, keys)``
        numpy arrays of one number of rows each: int64 ids, float64 exact scores, int64 tie
        keys, any number of columns.
    k : int
        How many to keep per row (fewer when the lists hold fewer columns).
    scale : float64 array (rows,), optional
        Per row, ``‖q‖ · max‖c‖`` (:func:`row_scale`); 1 (unit rows) when absent.

    Returns
    -------
    ids, scores, keys : numpy arrays (rows, min(k, columns))
    """
    import numpy as np

    ids = np.concatenate([np.asarray(a[0], dtype=np.int64) for a in lists], axis=1)
    sc = np.concatenate([np.asarray(a[1], dtype=np.float64) for a in lists], axis=1)
    key = np.concatenate([np.asarray(a[2], dtype=np.int64) for a in lists], axis=1)
    if ids.shape[1] == 0:
        return ids, sc, key
    finite = np.isfinite(sc)
    unit = TIE_TOL if scale is None else TIE_TOL * np.asarray(scale, dtype=np.float64)[:, None]
    # invalid entries (-inf, id -1) sort last
    neg = np.where(finite, -np.round(np.where(finite, sc, 0) / unit), np.inf)
    rows = np.arange(ids.shape[0])[:, None].repeat(ids.shape[1], 1)
    order = np.lexsort((ids.ravel(), key.ravel(), neg.ravel(), rows.ravel())).reshape(ids.shape)
    take = (order - rows * ids.shape[1])[:, :k]
    r = np.arange(ids.shape[0])[:, None]
    return ids[r, take], sc[r, take], key[r, take]


def topk_rows(
    S: Any, k: int, scale: Any, d: int, exact: Any, tie_key: Any = None, extra: int = 8
) -> tuple[Any, Any]:
    """The exact top-``k`` of every row of a float32 score block (:func:`select_topk` on
    ``torch.topk`` lists of ``k + extra`` entries, longer for the rare rows with more near-ties).

    ``exact(rows, cols)`` scores block entries exactly; ``tie_key(rows, cols)`` as in
    :func:`select_topk`. Masked entries (``-inf``) are never selected; a row with fewer than
    ``k`` others gets id -1 in the missing places. Returns ``(ids, exact scores)``.
    """
    import torch

    R, n = S.shape
    ids = torch.empty((R, k), dtype=torch.int64, device=S.device)
    scores = torch.empty((R, k), dtype=torch.float64, device=S.device)
    todo = None  # None: every row, without copying the block
    L = min(n, k + extra)
    while True:
        block = S if todo is None else S[todo]
        v, i = torch.topk(block, L, dim=1)
        where = (lambda r: r) if todo is None else (lambda r, t=todo: t[r])
        sel, sc, short = select_topk(
            v,
            i,
            k,
            scale if todo is None else scale[todo],
            d,
            lambda r, c, w=where: exact(w(r), c),
            None if tie_key is None else (lambda r, c, w=where: tie_key(w(r), c)),
            complete=L >= n,
        )
        if todo is None:
            ids, scores = sel, sc
        else:
            ids[todo], scores[todo] = sel, sc
        if not bool(short.any()):
            return ids, scores
        todo = torch.nonzero(short).reshape(-1) if todo is None else todo[short]
        L = min(n, 2 * L)


def topk_ids(Q: Any, C: Any, k: int, rows_per_block: int) -> Any:
    """Each query's exact top-``k`` candidates by dot product (:func:`topk_rows`, ties to the
    lower index), scoring ``rows_per_block`` queries against every candidate at a time.
    ``Q``, ``C``: float32 tensors on one device."""
    import torch

    out = torch.empty((Q.shape[0], k), dtype=torch.int64, device=Q.device)
    scale = row_scale(Q, C)
    step = max(1, int(rows_per_block))
    for s in range(0, Q.shape[0], step):
        S = Q[s : s + step] @ C.T

        def exact(rows, cols, s=s):
            return exact_scores(Q, C, rows + s, cols)

        out[s : s + step], _ = topk_rows(S, k, scale[s : s + step], C.shape[1], exact)
    return out
