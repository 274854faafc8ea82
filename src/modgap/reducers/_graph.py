"""Bipartite cross-modal similarity graphs, built blockwise with torch so the full
(n_images x n_texts) similarity matrix is never held in memory."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .._array import to_torch
from .._ties import exact_scores, row_scale, select_topk, topk_rows
from ..compute import Compute, resolve

__all__ = ["bipartite_knn_graph", "kernel_weights"]

KERNELS = ("clip", "exp")

# column candidates kept beyond k, so that near-ties at the k-th place can be decided exactly
_EXTRA = 8


def kernel_weights(s, kernel: str, temperature: float):
    r"""Non-negative edge weights from cosine similarities ``s`` (torch tensor).

    ``clip``: :math:`w = \max(s, 0)`; ``exp``: :math:`w = \exp((s - 1)/\tau)`. The constant
    shift by 1 keeps the exponent non-positive for unit vectors (no overflow) and cancels in
    the degree normalisation :math:`D_1^{-1/2} W D_2^{-1/2}`.
    """
    if kernel == "clip":
        return s.clamp_min(0)
    return ((s - 1) / temperature).exp()


def _merge_column_topk(col_val, col_idx, s, start, k):
    """Merge the column top-k of block ``s`` (rows ``start...``) into the running ``(k, m)``
    top-k, in place.

    Only entries above a column's current k-th best can enter it; after the first blocks
    these are few (about ``k / t`` per column in block ``t``), so they are gathered with one
    comparison pass and merged by a segmented sort. This avoids ``topk`` along dim 0, whose
    strided access costs several times the row ``topk`` on CPU.
    """
    import torch

    # until every column holds k values its threshold is -inf and all entries qualify
    mask = s > col_val[-1][None, :] if bool(torch.isfinite(col_val[-1]).all()) else None
    n_cand = s.numel() if mask is None else int(torch.count_nonzero(mask))
    if n_cand == 0:
        return
    if n_cand > s.numel() // 16:  # early blocks: most entries qualify, topk is cheaper
        kb = min(k, s.shape[0])
        cv, ci = torch.topk(s, kb, dim=0)
        cv = torch.cat([col_val, cv])
        ci = torch.cat([col_idx, ci + start])
        top, pos = torch.topk(cv, k, dim=0)
        col_val.copy_(top)
        col_idx.copy_(torch.gather(ci, 0, pos))
        return
    rows, cols = mask.nonzero(as_tuple=True)
    vals = s[rows, cols]
    m = s.shape[1]
    touched = torch.zeros(m, dtype=torch.bool, device=s.device)
    touched[cols] = True
    tcols = touched.nonzero(as_tuple=True)[0]
    # the touched columns' current top-k, followed by the new candidates
    all_col = torch.cat([tcols.repeat(k), cols])
    all_val = torch.cat([col_val[:, tcols].reshape(-1), vals])
    all_row = torch.cat([col_idx[:, tcols].reshape(-1), rows + start])
    # one sort by (column, descending value): cosines lie in [-1, 1], so col * 4 + (1 - v)
    # orders by column first; float64 resolves float32 values at any column index < 2**40
    key = all_col.double() * 4 + (1 - all_val.double())
    order = torch.argsort(key)
    col_s = all_col[order]
    pos = torch.arange(col_s.numel(), device=s.device)
    is_first = torch.ones_like(col_s, dtype=torch.bool)
    is_first[1:] = col_s[1:] != col_s[:-1]
    first = torch.cummax(torch.where(is_first, pos, torch.zeros_like(pos)), dim=0).values
    rank = pos - first
    keep = rank < k
    kept = order[keep]
    col_val[rank[keep], col_s[keep]] = all_val[kept]
    col_idx[rank[keep], col_s[keep]] = all_row[kept]


def bipartite_knn_graph(
    X: np.ndarray,
    Y: np.ndarray,
    n_neighbors: int,
    kernel: str = "clip",
    temperature: float = 0.05,
    device: str | None = None,
    block_rows: int | None = None,
    progress=None,
    compute: Compute | None = None,
) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray]:
    r"""Symmetric k-nearest-neighbour bipartite graph between images ``X`` and texts ``Y``.

    Edge :math:`(i, j)` is kept when text :math:`j` is among the ``n_neighbors`` most similar
    texts of image :math:`i` **or** image :math:`i` is among the ``n_neighbors`` most similar
    images of text :math:`j` (union of the row and column rules), with weight
    ``kernel_weights(x_i . y_j)``. Similarities are computed in row blocks; the column
    candidates are merged across blocks, so memory is :math:`O(b\,m + k(n + m))`.

    The neighbours are the exact ones (:mod:`modgap._ties`): float32 blocks propose candidates,
    the places near each row's and column's k-th score are decided by reproducible exact
    scores, ties by the lower index, and the weights are computed from the exact scores. The
    graph is therefore the same on every machine, at every block size and thread count.

    Returns
    -------
    W : scipy.sparse.csr_matrix (n, m), float64
    row_kth : ndarray (n,)
        The exact ``n_neighbors``-th largest similarity of each image row (the row rule).
    col_kth : ndarray (m,)
        The exact ``n_neighbors``-th largest similarity of each text column.
    """
    import torch

    compute = resolve(compute, device=device)
    device = compute.torch_device
    n, m = X.shape[0], Y.shape[0]
    k_row, k_col = min(n_neighbors, m), min(n_neighbors, n)
    L_col = min(n, k_col + _EXTRA)
    Xt = to_torch(X, device, torch.float32)
    Yt = to_torch(Y, device, torch.float32)
    d = Xt.shape[1]
    scale_x, scale_y = row_scale(Xt, Yt), row_scale(Yt, Xt)
    b = block_rows or compute.rows_per_block(4 * m, buffers=2)
    row_idx, row_sim = [], []
    col_val = torch.full((L_col, m), -torch.inf, device=device)
    col_idx = torch.zeros((L_col, m), dtype=torch.long, device=device)
    for start in range(0, n, b):
        stop = min(start + b, n)
        s = Xt[start:stop] @ Yt.T

        def exact(rows, cols, start=start):
            return exact_scores(Xt, Yt, rows + start, cols)

        ids, sims = topk_rows(s, k_row, scale_x[start:stop], d, exact)
        row_idx.append(ids.cpu())
        row_sim.append(sims.cpu())
        _merge_column_topk(col_val, col_idx, s, start, L_col)
        del s
        if progress is not None:
            progress(stop)

    def exact_col(rows, cols):
        return exact_scores(Yt, Xt, rows, cols)

    cids, csims, short = select_topk(
        col_val.T.contiguous(),
        col_idx.T.contiguous(),
        k_col,
        scale_y,
        d,
        exact_col,
        complete=L_col >= n,
    )
    if bool(short.any()):
        # more near-ties in these columns than the merged lists hold: score them in full
        cols = torch.nonzero(short).reshape(-1)
        for c0 in range(0, cols.numel(), b):
            cc = cols[c0 : c0 + b]
            ids, sims = topk_rows(
                Yt[cc] @ Xt.T, k_col, scale_y[cc], d, lambda r, c, cc=cc: exact_col(cc[r], c)
            )
            cids[cc], csims[cc] = ids, sims
    rj, rv = torch.cat(row_idx), torch.cat(row_sim)
    ci, cv = cids.cpu(), csims.cpu()
    rows = np.concatenate([np.repeat(np.arange(n, dtype=np.int64), k_row), ci.numpy().reshape(-1)])
    cols = np.concatenate([rj.numpy().reshape(-1), np.repeat(np.arange(m, dtype=np.int64), k_col)])
    sims = torch.cat([rv.reshape(-1), cv.reshape(-1)])
    vals = kernel_weights(sims, kernel, temperature).numpy()
    # union of the two rules: an edge found by both (same exact score) is kept once
    _, first = np.unique(rows * m + cols, return_index=True)
    W = sp.csr_matrix((vals[first], (rows[first], cols[first])), shape=(n, m))
    W.eliminate_zeros()
    return W, rv[:, -1].numpy(), cv[:, -1].numpy()
