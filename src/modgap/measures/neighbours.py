"""Mixed-neighbour diagnostics ITR / TIR / TMR / IMR (Role, Meyer, Amblard 2025,
"Fill the Gap"), computed in blocks with torch: memory is O(block_size²), never (n+m)²."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from .._array import prepare_rows
from .._ties import count_above, exact_scores, select_topk, topk_rows
from ..compute import Compute, device_for, limit_threads, resolve
from ..errors import ModgapError

__all__ = ["mixed_neighbour_diagnostics", "ratio"]

#: below this many multiply-adds per block, torch's thread pool costs more than it gives (on a
#: busy machine a 2x2 block loop ran 100x slower with all threads than with one).
_SERIAL_BLOCK_WORK = 2_000_000


# nearest-neighbour candidates kept beyond the first, to decide near-ties exactly
_EXTRA = 8

#: most queries and keys per block (2048 x 2048 float32 = 16 MiB): larger blocks were not
#: faster on CPU; a smaller memory budget gives smaller blocks
MAX_BLOCK = 2048


def ratio(same: int, other: int) -> float:
    """``same / other`` with ``inf`` when only the numerator is non-zero (never an error)."""
    if other == 0:
        return float("inf") if same > 0 else float("nan")
    return same / other


def _one_side(Q, O, block_size: int, tick=None, groups=None) -> tuple[int, float, int, float]:
    """For every row of ``Q`` as a query against the mixed set ``[Q; O]`` minus itself: how many
    have a nearest neighbour in ``Q`` (same modality), and the sum of 1-based ranks of the first
    row of ``O`` (other modality) in their ranked lists; then the same two with every row of
    ``Q`` in the query's group (``groups``: one id per row of ``Q``, e.g. a caption's image)
    left out too (both ``0`` without ``groups``).

    Exact comparisons (:mod:`modgap._ties`): the best other-modality score of each query is
    the exact one, and a same-modality row ranks ahead of it only when its exact score is
    larger (beyond the tie tolerance); ties go to the other modality.
    """
    import torch

    n, m = Q.shape[0], O.shape[0]
    d = Q.shape[1]
    L = min(m, 1 + _EXTRA)
    n_same = 0
    rank_sum = 0
    n_same_x = 0
    rank_sum_x = 0
    # one score block and two comparison blocks, reused by every iteration (fresh blocks cost
    # page faults); flat, so that a smaller last block is a contiguous view of them
    cells = min(block_size, n) * min(block_size, max(n, m))
    S_buf, G_buf, N_buf = (torch.empty(cells, dtype=Q.dtype, device=Q.device) for _ in range(3))

    def view(buf, rows, cols):
        return buf[: rows * cols].view(rows, cols)

    for a in range(0, n, block_size):
        b = min(a + block_size, n)
        q = Q[a:b]
        scale = torch.ones(b - a, dtype=torch.float64, device=Q.device)  # unit rows
        # float32 candidates for the nearest other-modality row, merged across blocks
        vals = torch.full((b - a, 0), -torch.inf, dtype=Q.dtype, device=Q.device)
        idx = torch.zeros((b - a, 0), dtype=torch.int64, device=Q.device)
        for c in range(0, m, block_size):
            o = O[c : min(c + block_size, m)]
            s = torch.mm(q, o.T, out=view(S_buf, b - a, o.shape[0]))
            v, i = torch.topk(s, min(L, s.shape[1]), dim=1)
            vals, pick = torch.topk(
                torch.cat([vals, v], dim=1), min(L, vals.shape[1] + v.shape[1]), dim=1
            )
            idx = torch.gather(torch.cat([idx, i + c], dim=1), 1, pick)

        def exact_o(rows, cols, a=a):
            return exact_scores(Q, O, rows + a, cols)

        _, top, short = select_topk(vals, idx, 1, scale, d, exact_o, complete=L >= m)
        best_other = top[:, 0]
        if bool(short.any()):  # more near-ties than the lists hold: score those rows in full
            rows = torch.nonzero(short).reshape(-1)
            _, top = topk_rows(
                q[rows] @ O.T, 1, scale[rows], d, lambda r, cc, rows=rows: exact_o(rows[r], cc)
            )
            best_other[rows] = top[:, 0]
        ahead = torch.zeros(b - a, dtype=torch.int64, device=Q.device)
        ahead_x = torch.zeros(b - a, dtype=torch.int64, device=Q.device)
        for c in range(0, n, block_size):
            e = min(c + block_size, n)
            s = torch.mm(q, Q[c:e].T, out=view(S_buf, b - a, e - c))
            lo, hi = max(a, c), min(b, e)
            if lo < hi:  # the query itself is not its own neighbour
                idx = torch.arange(lo, hi, device=Q.device)
                s[idx - a, idx - c] = -torch.inf

            def exact_q(rows, cols, a=a, c=c):
                return exact_scores(Q, Q, rows + a, cols + c)

            # same-modality rows strictly more similar than the best other-modality row rank
            # ahead of it; ties go to the other modality
            G, N = view(G_buf, b - a, e - c), view(N_buf, b - a, e - c)
            ahead += count_above(s, best_other, scale, d, exact_q, 1, G, near_buffer=N)
            if groups is not None:  # the same block with the query's group left out
                s.masked_fill_(groups[a:b, None] == groups[None, c:e], -torch.inf)
                ahead_x += count_above(s, best_other, scale, d, exact_q, 1, G, near_buffer=N)
        n_same += int((ahead > 0).sum())
        rank_sum += int((ahead + 1).sum())
        n_same_x += int((ahead_x > 0).sum())
        rank_sum_x += int((ahead_x + 1).sum())
        if tick is not None:
            tick(b - a)
    return n_same, float(rank_sum), n_same_x, float(rank_sum_x)


def mixed_neighbour_diagnostics(
    X: Any,
    Y: Any,
    block_size: int | None = None,
    device: Any = None,
    dtype: str = "float32",
    progress: Callable[[int, int], None] | None = None,
    compute: Compute | None = None,
    text_to_image: Any = None,
) -> dict:
    r"""Nearest-neighbour mixing of images and texts in the mixed set :math:`Z = [X; Y]`.

    Every row of :math:`Z` queries all other rows of :math:`Z` by cosine similarity (itself
    excluded). For image queries let :math:`a` be the number whose nearest neighbour is an image
    and :math:`b` the number whose nearest neighbour is a text; then

    * **ITR** (image-to-text ratio) :math:`= a / b`; **TIR** the same for text queries
      (#nearest is a text / #nearest is an image). ``inf`` when the denominator is 0: every
      query's nearest neighbour is of its own modality (a complete gap). Without a gap both are
      about 1 (when ``n = m``).
    * **TMR** = mean over image queries of the 1-based rank of the first text in the query's
      ranked list of :math:`Z` (self excluded),
      :math:`1 + \#\{x_j \ne x_i : \cos(x_i, x_j) > \max_k \cos(x_i, y_k)\}`; **IMR** the same
      for text queries and the first image. 1 means the other modality comes first.

    Ties between the best same-modality and the best other-modality similarity go to the other
    modality (a tie is not evidence of a gap).

    With several captions per image a caption's nearest neighbour is usually a sibling caption
    of its own image, so TIR stays ``inf`` and IMR large however close the modalities come.
    Given the pairing, **TIR excluding siblings** and **IMR excluding siblings** are TIR and
    IMR with every caption of the query's own image left out of its ranked list (its nearest
    image is searched among all images, its own included):
    :math:`\mathrm{IMR}_\mathrm{excl} = 1 + \#\{y_j : g(y_j) \ne g(y_i),\ \cos(y_i, y_j) >
    \max_k \cos(y_i, x_k)\}` with :math:`g` a caption's image. With one caption per image they
    equal TIR and IMR. (The image side has no siblings: ITR and TMR are unchanged.)

    Comparisons are exact (:mod:`modgap._ties`): the result does not depend on the BLAS
    kernel, the block size or the thread count. In particular when ``Y`` is an exact copy of
    ``X`` every point's nearest other point is its copy, so
    ITR = TIR = 0 and TMR = IMR = 1; ITR ≈ TIR ≈ 1 holds for two independent samples of one
    distribution, not for copies.

    Computed in blocks of ``block_size`` queries × ``block_size`` keys with torch in one pass
    over the keys per query block (the other modality first, for the threshold), so memory is
    :math:`O(\text{block\_size}^2 + (n+m)d)`, never :math:`(n+m)^2`; time is
    :math:`O((n+m)^2 d)`.

    Source: Role, Meyer, Amblard, "Fill the Gap: Quantifying and Reducing the Modality Gap in
    Image-Text Representation Learning", 2025 (arXiv 2505.03703).

    Parameters
    ----------
    X : array (n, d)
        Image embeddings (numpy or torch; rows L2-normalised first).
    Y : array (m, d)
        Text embeddings. No pairing is used.
    block_size : int, optional
        Rows per block (default: at most :data:`MAX_BLOCK`, within the compute context's
        memory budget).
    device : str or torch.device, optional
        Where to compute (default: the compute context's device).
    dtype : {"float32", "float64"}
        Precision of the similarity blocks.
    progress : callable, optional
        Called as ``progress(done, total)`` after each block of queries (``total = n + m``).
    compute : Compute, optional
        Device and memory budget (default: :func:`modgap.compute.current`).
    text_to_image : array (m,) of int, optional
        Image of each text; with it the two sibling-excluding keys are added
        (:func:`modgap.measures.measure_all` passes it when some image has several captions).

    Returns
    -------
    dict
        ``itr``, ``tir``, ``tmr``, ``imr`` as Python floats (``float('inf')`` possible), and
        with ``text_to_image`` ``tir_excl_siblings`` and ``imr_excl_siblings``.
    """
    import torch

    if block_size is None:
        # two (block x block) similarity blocks and their comparison buffers
        block_size = min(MAX_BLOCK, math.isqrt(resolve(compute).memory_budget // 16))
    if int(block_size) < 1:
        raise ModgapError(f"block_size must be a positive integer, got {block_size}")
    block_size = int(block_size)
    tdtype = {"float32": torch.float32, "float64": torch.float64}.get(str(dtype))
    if tdtype is None:
        raise ModgapError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    # unit rows at the precision of the scores (the one row preparation, as the streamed scans)
    Xn = prepare_rows(X, "image_emb", unit="exact", dtype=str(dtype))
    Yn = prepare_rows(Y, "text_emb", dim=Xn.shape[1], unit="exact", dtype=str(dtype))
    dev = device_for(compute, device)
    Xt = torch.from_numpy(Xn).to(device=dev)
    Yt = torch.from_numpy(Yn).to(device=dev)
    del Xn, Yn
    eff = min(block_size, max(Xt.shape[0], Yt.shape[0]))
    small = eff * eff * Xt.shape[1] < _SERIAL_BLOCK_WORK
    with torch.no_grad(), limit_threads(1 if small else None):
        done = 0
        total = Xt.shape[0] + Yt.shape[0]

        def tick(k: int) -> None:
            nonlocal done
            done += k
            if progress is not None:
                progress(done, total)

        groups = None
        if text_to_image is not None:
            groups = torch.as_tensor(np.asarray(text_to_image, dtype=np.int64), device=dev)
        img_same, img_rank, _, _ = _one_side(Xt, Yt, block_size, tick)
        txt_same, txt_rank, txt_same_x, txt_rank_x = _one_side(Yt, Xt, block_size, tick, groups)
    n, m = Xt.shape[0], Yt.shape[0]
    out = {
        "itr": ratio(img_same, n - img_same),
        "tir": ratio(txt_same, m - txt_same),
        "tmr": img_rank / n,
        "imr": txt_rank / m,
    }
    if groups is not None:
        out["tir_excl_siblings"] = ratio(txt_same_x, m - txt_same_x)
        out["imr_excl_siblings"] = txt_rank_x / m
    return out
