r"""The ranking kernel of every retrieval evaluation: the rank of each query's best relevant
candidate, both ways, in one blocked pass.

Two sets of rows ``X`` and ``Y`` query each other. A candidate is **relevant** to a query when
their labels are equal: instance retrieval labels each text with its image and each image with
itself (several captions per image: the VSE "best-ranked caption" rule), class-level retrieval
labels both sides with their class. For a query q with best relevant score
:math:`s^+ = \max_{c \text{ relevant}} s(q, c)`

.. math:: \mathrm{rank}(q) = 1 + \#\{c \text{ not relevant to } q : s(q, c) > s^+\}

so ties with the best relevant candidate count in the query's favour and other relevant
candidates never push it down; a query without a relevant candidate gets rank 0. With a
retrieval-time correction every score is the corrected one, :math:`s(q, c) - a_q o_c`.

Every comparison is the exact one (:mod:`modgap._ties`): :math:`s^+` is an exact float64
score, chosen among the relevant candidates that float32 cannot rule out, and the counts are
:func:`~modgap._ties.count_above` on float32 blocks ``X_b Yᵀ`` (rows count image → text,
columns text → image). Results do not depend on the block size, the thread count or the BLAS
kernel.
"""

from __future__ import annotations

from typing import Any

from .._ties import count_above, exact_scores, offset_window, row_scale, score_window

__all__ = ["first_relevant_ranks"]

# relevant pairs per row (on average) up to which every pair is scored exactly at once;
# denser relevance (a few classes) is scored by per-class matrix products
_SPARSE_PAIRS = 32


def _runs(lq: Any, lc: Any) -> tuple[Any, Any, Any]:
    """Candidates sorted by label (stable), and per query the run ``[lo, hi)`` of its label
    in that order."""
    import torch

    order = torch.sort(lc, stable=True).indices
    sl = lc[order]
    lo = torch.searchsorted(sl, lq, right=False)
    hi = torch.searchsorted(sl, lq, right=True)
    return order, lo, hi


def _pairs(order: Any, lo: Any, hi: Any) -> tuple[Any, Any, Any]:
    """Every relevant ``(query, candidate)`` pair, grouped by query in query order, and the
    start of each query's pairs (``ptr[q]:ptr[q + 1]``)."""
    import torch

    count = hi - lo
    ptr = torch.zeros(count.numel() + 1, dtype=torch.int64, device=count.device)
    torch.cumsum(count, 0, out=ptr[1:])
    q = torch.repeat_interleave(torch.arange(count.numel(), device=count.device), count)
    c = order[lo[q] + torch.arange(q.numel(), device=q.device) - ptr[q]]
    return q, c, ptr


def _best_dense(Q, C, lq, lc, scale, off, rows_per_block):
    """Per query, the best exact (corrected) score over the candidates of its label, class by
    class: float32 blocks ``Q_g C_gᵀ`` find each row's float32 best, and the candidates that
    float32 cannot rule out (within the window of it) are scored exactly."""
    import torch

    n_q, d = Q.shape[0], Q.shape[1]
    best = torch.full((n_q,), float("-inf"), dtype=torch.float64, device=Q.device)
    for g in torch.unique(lq).tolist():
        iq = torch.nonzero(lq == g).reshape(-1)
        ic = torch.nonzero(lc == g).reshape(-1)
        if ic.numel() == 0:
            continue
        Cg = C[ic]
        step = max(1, int(rows_per_block))
        for s in range(0, iq.numel(), step):
            rows = iq[s : s + step]
            S = Q[rows] @ Cg.T
            window = score_window(d) * scale[rows]
            if off is not None:
                o_c, a_q = off
                S = torch.addr(S, a_q[rows].float(), o_c[ic].float(), alpha=-1)
                window = window + offset_window(o_c[ic], scale[rows])
            top = S.max(1).values.double()
            r, c = torch.nonzero(S.double() >= (top - window)[:, None], as_tuple=True)
            ex = exact_scores(Q, C, rows[r], ic[c])
            if off is not None:
                ex = ex - a_q[rows[r]] * o_c[ic[c]]
            best.scatter_reduce_(0, rows[r], ex, reduce="amax")
    return best


def first_relevant_ranks(
    X: Any,
    Y: Any,
    x_labels: Any,
    y_labels: Any,
    *,
    block_size: int,
    offsets: tuple[Any, Any, Any, Any] | None = None,
) -> tuple[Any, Any]:
    """1-based rank of the best relevant candidate of every query, both ways (module docstring).

    Parameters
    ----------
    X : float32 tensor (n_x, d)
        Queries of one side and candidates of the other, prepared (unit rows for cosine).
    Y : float32 tensor (n_y, d)
        The other side, on the same device.
    x_labels, y_labels : int64 tensors (n_x,), (n_y,)
        A row of ``Y`` is relevant to a row of ``X`` (and the other way) when the labels match.
    block_size : int
        Rows of ``X`` per float32 score block (peak extra memory: three ``block_size × n_y``
        blocks, four with ``offsets``; :func:`~modgap._ties.score_block_rows` sizes them).
    offsets : tuple of float64 tensors, optional
        A retrieval-time correction ``(o_x, o_y, a_x, a_y)``: candidate offsets of the rows of
        ``X`` and ``Y`` and 0/1 weights saying whether each row's queries are corrected; scores
        become ``s(q, c) - a_q o_c``.

    Returns
    -------
    x_rank, y_rank : int64 tensors (n_x,), (n_y,)
        Rank of each row of ``X`` among the rows of ``Y`` and the other way; 0 for a query
        without a relevant candidate.
    """
    import torch

    n_x, n_y, d = X.shape[0], Y.shape[0], X.shape[1]
    dev = X.device
    scale_x, scale_y = row_scale(X, Y), row_scale(Y, X)
    o_x = o_y = a_x = a_y = None
    if offsets is not None:
        o_x, o_y, a_x, a_y = offsets
    order_y, lo, hi = _runs(x_labels, y_labels)
    n_pairs = int((hi - lo).sum())
    sparse = n_pairs <= _SPARSE_PAIRS * (n_x + n_y)
    with torch.no_grad():
        if sparse:
            # few relevant pairs (instance retrieval): score them all exactly
            px, py, ptr = _pairs(order_y, lo, hi)
            pos = exact_scores(X, Y, px, py)
            pos_x, pos_y = pos, pos
            if offsets is not None:
                pos_x = pos - a_x[px] * o_y[py]  # corrected score of y for the X query
                pos_y = pos - a_y[py] * o_x[px]  # corrected score of x for the Y query
            best_x = torch.full((n_x,), float("-inf"), dtype=torch.float64, device=dev)
            best_y = torch.full((n_y,), float("-inf"), dtype=torch.float64, device=dev)
            best_x.scatter_reduce_(0, px, pos_x, reduce="amax")
            best_y.scatter_reduce_(0, py, pos_y, reduce="amax")
        else:
            off_x = None if offsets is None else (o_y, a_x)
            off_y = None if offsets is None else (o_x, a_y)
            best_x = _best_dense(X, Y, x_labels, y_labels, scale_x, off_x, block_size)
            best_y = _best_dense(Y, X, y_labels, x_labels, scale_y, off_y, block_size)

        y_greater = torch.zeros(n_y, dtype=torch.int64, device=dev)
        x_rank = torch.zeros(n_x, dtype=torch.int64, device=dev)
        # every block is written into the same buffers: fresh ones would cost page faults
        S_buf = torch.empty(min(block_size, n_x), n_y, device=dev, dtype=torch.float32)
        G_buf = torch.empty_like(S_buf)
        N_buf = torch.empty_like(S_buf)
        C_buf = None if offsets is None else torch.empty_like(S_buf)
        for start in range(0, n_x, block_size):
            stop = min(start + block_size, n_x)
            S = torch.mm(X[start:stop], Y.T, out=S_buf[: stop - start])
            # relevant candidates never count against a query
            if sparse:
                a, b = int(ptr[start]), int(ptr[stop])
                S[px[a:b] - start, py[a:b]] = float("-inf")
            else:
                S.masked_fill_(x_labels[start:stop, None] == y_labels[None, :], float("-inf"))

            def exact(rows, cols, start=start):
                return exact_scores(X, Y, rows + start, cols)

            row_off: dict[str, Any] = dict(near_buffer=N_buf)
            col_off: dict[str, Any] = dict(near_buffer=N_buf)
            if offsets is not None:
                row_off.update(offset=o_y, active=a_x[start:stop], offset_buffer=C_buf)
                col_off.update(offset=o_x[start:stop], active=a_y, offset_buffer=C_buf)
            x_rank[start:stop] = 1 + count_above(
                S, best_x[start:stop], scale_x[start:stop], d, exact, 1, G_buf, **row_off
            )
            y_greater += count_above(S, best_y, scale_y, d, exact, 0, G_buf, **col_off)
        del S_buf, G_buf, N_buf, C_buf
        y_rank = y_greater + 1
        has_x = torch.isfinite(best_x)
        has_y = torch.isfinite(best_y)
        x_rank = torch.where(has_x, x_rank, torch.zeros_like(x_rank))
        y_rank = torch.where(has_y, y_rank, torch.zeros_like(y_rank))
    return x_rank, y_rank
