"""Mixed-modality search: every image and every text queries one corpus holding both.

The corpus is ``Z = [X; Y]`` (cosine similarity); a query never retrieves itself. This is the
setting where the modality gap hurts most (Fill the Gap, Role et al. 2025): with a gap, an image
query returns images before any caption.

* ``mixed_recall@K``: share of queries whose true partner is among their top K — for an image,
  the best-ranked of its captions; for a text, its image (other captions of the same image are
  ordinary candidates, not partners). Also per query modality: ``mixed_image_query_recall@K``,
  ``mixed_text_query_recall@K``. Rank rule as in :mod:`modgap.tasks.retrieval`:
  ``1 + #{non-partner candidates scoring strictly above the best partner}``. Queries without a
  partner (images with no caption) are left out of the recalls.
* ``mixed_same_modality@K``: mean over all queries of the share of their top K that has the
  query's own modality. The top K is the exact one (:mod:`modgap._ties`); items with tied exact
  scores put the other modality first (a tie is no evidence of a gap), then the lower index.
  Modality-blind retrieval on one caption per image gives about 0.5; a gap pushes it to 1.

Blocked like retrieval: one ``(block, n_i + n_t)`` score block at a time; the comparisons that
float32 rounding could decide either way are recomputed exactly, so no result depends on the
BLAS kernel, the block size or the thread count.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .._array import check_pairing
from .._ties import count_above, exact_scores, row_scale, topk_rows
from ..compute import Compute, device_for, resolve
from ..errors import ModgapError
from .retrieval import _as_tensor, check_ks

__all__ = ["mixed_search_metrics"]


def mixed_search_metrics(
    image_emb: Any,
    text_emb: Any,
    text_to_image: Any = None,
    ks: Sequence[int] = (1, 5, 10),
    device: Any = None,
    *,
    block_size: int | None = None,
    compute: Compute | None = None,
) -> dict:
    """Recall@K of the true partner and own-modality share in a mixed image+text corpus.

    Parameters
    ----------
    image_emb : array (n_i, d)
    text_emb : array (n_t, d)
    text_to_image : array (n_t,) of int, optional
        Pairing; row ``i`` ↔ row ``i`` when absent and counts match. Without pairs only the
        own-modality share is reported.
    ks : sequence of int
        K values; each must be below the corpus size ``n_i + n_t`` (the query is excluded).
    device : str, optional
        Torch device (default: that of a torch input, else the compute context's).
    block_size : int, optional
        Queries per score block (default from the compute context's memory budget).
    compute : Compute, optional
        Device and memory budget (default: :func:`modgap.compute.current`).

    Returns
    -------
    dict
        ``mixed_recall@K``, ``mixed_image_query_recall@K``, ``mixed_text_query_recall@K``
        (pairs only) and ``mixed_same_modality@K``, for each K.
    """
    import torch

    ks = check_ks(ks)
    dev = device_for(compute, device, image_emb, text_emb)
    X = _as_tensor(image_emb, "image_emb", dev, None, True)
    Y = _as_tensor(text_emb, "text_emb", dev, X.shape[1], True)
    n_i, n_t = X.shape[0], Y.shape[0]
    N = n_i + n_t
    if ks[-1] > N - 1:
        raise ModgapError(
            f"K={ks[-1]} is larger than the {N - 1} other items in the mixed corpus; "
            f"use K <= {N - 1}"
        )
    if text_to_image is None and n_i == n_t:
        text_to_image = np.arange(n_t)
    paired = text_to_image is not None
    Z = torch.cat([X, Y])
    is_text = torch.zeros(N, dtype=torch.bool, device=dev)
    is_text[n_i:] = True
    if paired:
        t2i_np = check_pairing(text_to_image, n_i, n_t)
        # partners as (query, item) index pairs in Z coordinates, both directions
        txt = np.arange(n_t) + n_i
        pq = torch.from_numpy(np.r_[t2i_np, txt]).to(dev)
        pi = torch.from_numpy(np.r_[txt, t2i_np]).to(dev)
        order = torch.argsort(pq, stable=True)
        pq, pi = pq[order], pi[order]
        pq_np = pq.cpu().numpy()
    if block_size is None:
        block_size = min(N, resolve(compute).rows_per_block(4 * N, buffers=2))
    kmax = ks[-1]
    d = Z.shape[1]
    scale = row_scale(Z, Z)
    rank = torch.zeros(N, dtype=torch.int64, device=dev)
    same = [0] * len(ks)
    if paired:
        # exact score of each query's best partner: the threshold of its rank
        txt_ids = torch.arange(n_t, device=dev)
        pos = exact_scores(X, Y, torch.from_numpy(t2i_np).to(dev), txt_ids)
        best = torch.full((N,), float("-inf"), dtype=torch.float64, device=dev)
        best[:n_i].scatter_reduce_(0, torch.from_numpy(t2i_np).to(dev), pos, reduce="amax")
        best[n_i:] = pos

    with torch.no_grad():
        for start in range(0, N, block_size):
            stop = min(start + block_size, N)
            S = Z[start:stop] @ Z.T
            local = torch.arange(stop - start, device=dev)
            S[local, local + start] = float("-inf")  # a query never retrieves itself

            def exact(rows, cols, start=start):
                return exact_scores(Z, Z, rows + start, cols)

            q_text = is_text[start:stop]

            def own_last(rows, cols, q_text=q_text):
                # ties in the top K put the other modality first: a tie is no evidence of a gap
                return (is_text[cols] == q_text[rows]).long()

            top, _ = topk_rows(S, kmax, scale[start:stop], d, exact, own_last)
            own = is_text[top] == q_text[:, None]
            for j, k in enumerate(ks):  # integer counts: the sum does not depend on the blocks
                same[j] += int(own[:, :k].sum())
            if paired:
                lo, hi = np.searchsorted(pq_np, [start, stop])
                q, it = pq[lo:hi] - start, pi[lo:hi]
                # partners never count against the query (the best one is the threshold)
                S[q, it] = float("-inf")
                r = count_above(S, best[start:stop], scale[start:stop], d, exact, axis=1) + 1
                r[torch.isinf(best[start:stop])] = 0  # no partner: no recall query
                rank[start:stop] = r
    out: dict[str, float] = {}
    if paired:
        r = rank.cpu().numpy()
        img, txt_r = r[:n_i], r[n_i:]
        img = img[img > 0]
        for k in ks:
            out[f"mixed_recall@{k}"] = float(np.mean(np.r_[img, txt_r] <= k))
            out[f"mixed_image_query_recall@{k}"] = float(np.mean(img <= k))
            out[f"mixed_text_query_recall@{k}"] = float(np.mean(txt_r <= k))
    for j, k in enumerate(ks):
        out[f"mixed_same_modality@{k}"] = same[j] / (N * k)
    return out
