r"""The per-candidate statistics of the retrieval-time corrections (:mod:`modgap.tasks.scoring`)
against a query bank, in float64 with reductions in a fixed order.

Each is computed **row by row**: the value for a candidate depends on that candidate's row and
the bank alone (:func:`modgap._ties.fixed_scores` is a function of the two rows, the bank is cut
into fixed chunks of :data:`BANK_CHUNK` rows, and each row's reductions run in one fixed order).
So a block of candidates gets the bits it gets inside the whole set: the in-memory route scores
every candidate at once, the streamed route one shard block at a time, with this same code.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .._ties import fixed_scores, topk_ids
from ..compute import Compute

__all__ = ["BANK_CHUNK", "activation", "bank_topk_ids", "log_mean_exp", "mean_topk", "top1_ids"]

#: bank rows reduced together: a fixed partition, so the log-sum-exp over the bank is added in
#: the same order whatever the memory budget or the candidate block (a power of two for the
#: pairwise tree)
BANK_CHUNK = 1024


def _candidate_blocks(n: int, bank_cols: int, compute: Compute):
    """Candidate blocks for a (block × bank chunk) float64 score matrix and its splits."""
    # fixed_scores holds the float64 result, three products and the split rows: ~6 matrices
    step = compute.rows_per_block(8 * bank_cols * 6)
    return range(0, n, step), step


def mean_topk(C: Any, bank: Any, k: int, compute: Compute) -> Any:
    """Per candidate row, the mean of its ``k`` largest scores against the bank (float64).

    Only the values of the top ``k`` matter, never which of tied bank rows provide them, so
    merging the chunks' top lists gives the same numbers in any order."""
    import torch

    chunk = min(BANK_CHUNK, bank.shape[0])
    starts, step = _candidate_blocks(C.shape[0], chunk, compute)
    out = torch.empty(C.shape[0], dtype=torch.float64, device=C.device)
    for s in starts:
        c = C[s : s + step]
        best = torch.empty((c.shape[0], 0), dtype=torch.float64, device=C.device)
        for b in range(0, bank.shape[0], chunk):
            S = fixed_scores(c, bank[b : b + chunk])
            best = torch.cat([best, S], dim=1)
            best = torch.topk(best, min(k, best.shape[1]), dim=1).values
        # topk sorts its values: summed best first, one fixed order
        total = best[:, 0].clone()
        for j in range(1, k):
            total += best[:, j]
        out[s : s + step] = total / k
    return out


def _tree_sum(P: Any) -> Any:
    """Row sums of ``P`` (columns a power of two) by a fixed pairwise tree."""
    while P.shape[1] > 1:
        h = P.shape[1] // 2
        P = P[:, :h] + P[:, h:]
    return P[:, 0]


def log_mean_exp(C: Any, bank: Any, beta: float, compute: Compute) -> Any:
    r"""Per candidate row ``c``, :math:`\frac1\beta \log \frac1{|B|} \sum_{q' \in B}
    e^{\beta s(q', c)}` in float64, stable (running maximum) and added in a fixed order: fixed
    chunks of the bank, a pairwise tree inside each, the chunks in turn."""
    import torch

    n_bank = bank.shape[0]
    starts, step = _candidate_blocks(C.shape[0], BANK_CHUNK, compute)
    out = torch.empty(C.shape[0], dtype=torch.float64, device=C.device)
    for s in starts:
        c = C[s : s + step]
        m = torch.full((c.shape[0],), float("-inf"), dtype=torch.float64, device=C.device)
        z = torch.zeros(c.shape[0], dtype=torch.float64, device=C.device)
        for b in range(0, n_bank, BANK_CHUNK):
            S = fixed_scores(c, bank[b : b + BANK_CHUNK])
            if S.shape[1] < BANK_CHUNK:  # pad to the chunk: exp(-inf) = 0 adds nothing
                S = torch.nn.functional.pad(S, (0, BANK_CHUNK - S.shape[1]), value=-math.inf)
            m_new = torch.maximum(m, S.max(dim=1).values)
            terms = torch.exp(beta * (S - m_new[:, None]))
            z = z * torch.exp(beta * (m - m_new)) + _tree_sum(terms)
            m = m_new
        out[s : s + step] = m + (torch.log(z) - math.log(n_bank)) / beta
    return out


def top1_ids(Q: Any, C: Any, compute: Compute) -> Any:
    """Each query's exact top-1 candidate by cosine, ties to the lower index."""
    return bank_topk_ids(Q, C, 1, compute)[:, 0]


def bank_topk_ids(Q: Any, C: Any, k: int, compute: Compute) -> Any:
    """Each query's exact top-``k`` candidates (:func:`modgap._ties.topk_ids`), in blocks of
    queries sized from the memory budget."""
    return topk_ids(Q, C, k, compute.rows_per_block(4 * C.shape[0], buffers=2))


def activation(hub_ids: Any, top1: Any, n_candidates: int) -> np.ndarray:
    """QB-Norm's dynamic rule: whether each query's raw top-1 candidate (``top1``, candidate
    ids) is in the activation set (``hub_ids``: the top-k candidates of every bank query, any
    shape). The one rule of the in-memory and the streamed route."""
    hubs = np.zeros(int(n_candidates), dtype=bool)
    hubs[np.asarray(hub_ids, dtype=np.int64).reshape(-1)] = True
    return hubs[np.asarray(top1, dtype=np.int64).reshape(-1)]
