"""Alignment and uniformity (Wang & Isola 2020), intra- and cross-modal, blocked with torch."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .._array import prepare_rows
from ..compute import Compute, device_for, resolve
from ._common import as_pairs, seeded_subset

__all__ = [
    "DEFAULT_UNIFORMITY_SAMPLES",
    "alignment",
    "cross_uniformity",
    "uniformity",
    "uniformity_block_sum",
]

#: rows per modality entering the uniformity sums: 10k rows are 5e7 distinct pairs, enough for
#: a stable estimate in a few seconds on CPU.
DEFAULT_UNIFORMITY_SAMPLES = 10_000
MAX_BLOCK = 2048


def _block(block_size: int | None, compute: Compute | None) -> int:
    if block_size is not None:
        return int(block_size)
    # float64 similarities, their exponents and the mask: ~3 block² matrices of 8 bytes
    return min(MAX_BLOCK, math.isqrt(resolve(compute).memory_budget // 32))


def _exact_device(compute: Compute | None) -> Any:
    """The compute device, or the CPU where float64 is missing (MPS): the sums need it."""
    import torch

    dev = device_for(compute)
    return dev if dev.type != "mps" else torch.device("cpu")


def alignment(X: Any, Y: Any, text_to_image: Any = None) -> float:
    r"""Alignment: mean squared distance between matched image and text embeddings.

    .. math:: \mathcal{L}_\text{align} = \frac1m\sum_{j=1}^m \lVert x_{\pi(j)} - y_j\rVert_2^2
              = 2 - \frac2m\sum_j \cos(x_{\pi(j)}, y_j)

    over unit rows, where :math:`\pi` = ``text_to_image``. 0 = every pair coincides.

    Source: Wang & Isola, "Understanding Contrastive Representation Learning through Alignment
    and Uniformity on the Hypersphere", ICML 2020 (with :math:`\alpha = 2`).
    """
    X, Y, t2i = as_pairs(X, Y, text_to_image)
    diff = X[t2i] - Y
    return float(np.einsum("ij,ij->", diff, diff) / Y.shape[0])


def uniformity_block_sum(Q: Any, P: Any, mask: Any = None, out: Any = None) -> Any:
    r"""Per query, the sum of the uniformity kernel over one block of rows.

    .. math:: k_i = \sum_j e^{-2\lVert q_i - p_j\rVert_2^2} = \sum_j e^{4\, q_i\cdot p_j - 4}

    for unit rows (Wang & Isola, ICML 2020, :math:`t = 2`). The one kernel of every route: the
    in-memory :func:`uniformity` / :func:`cross_uniformity` and the streamed scans
    (:func:`modgap.stream.kernels.scan_kernel`) both sum it, so their values agree to float64
    round-off.

    ``Q`` and ``P`` are float64 torch tensors (``(q, d)``, ``(p, d)``): a float32 product
    rounds each similarity by ~1e-7 in an order that depends on the BLAS kernel, which moved
    the result in its 9th digit between CPUs; in float64 that spread is ~1e-15. Every term
    lies in :math:`[e^{-8}, 1]`, so a plain float64 sum neither overflows nor underflows.

    Parameters
    ----------
    Q, P : torch.Tensor
        Unit rows in float64.
    mask : torch.Tensor, optional
        Boolean ``(q, p)``: pairs left out of the sum (a row with itself, repeated pairs).
    out : torch.Tensor, optional
        A float64 buffer of at least ``q * p`` elements for the block, reused across calls: a
        fresh block each time costs a page fault per 4 KiB, more than the exponentials.

    Returns
    -------
    torch.Tensor
        ``(q,)`` float64 sums.
    """
    import torch

    if out is None:
        e = Q @ P.T
    else:
        e = torch.mm(Q, P.T, out=out[: Q.shape[0] * P.shape[0]].view(Q.shape[0], P.shape[0]))
    e.mul_(4.0).sub_(4.0).exp_()  # -2 ||u - v||² = 4 u·v - 4 for unit rows (in place)
    if mask is not None:
        e.masked_fill_(mask, 0.0)
    return e.sum(1)


def _log_mean_exp_sim(A, B, same: bool, block: int) -> float:
    """``log mean exp(-2 ||a - b||²)`` over all (distinct, when ``same``) pairs, in blocks of
    :func:`uniformity_block_sum` (``A`` and ``B`` float64: 10k rows of 512 take ~1.5x the
    float32 time, 8 s against 5 s on 2 cores; :func:`modgap._ties.fixed_scores`, bit-exact
    products, took three times as long again)."""
    import torch

    n, m = A.shape[0], B.shape[0]
    total = 0.0
    # one float64 block reused by every call: a fresh one costs a page fault per 4 KiB (~25% of
    # the call at 2048 x 2048); tiles of columns in cache were slower still on 2 threads
    buf = torch.empty(min(n, block) * min(m, block), dtype=torch.float64, device=A.device)
    with torch.no_grad():
        for a in range(0, n, block):
            q = A[a : a + block]
            for c in range(0, m, block):
                if same and c + block <= a:  # symmetric: upper blocks only
                    continue
                mask = None
                if same:
                    rows = torch.arange(a, a + q.shape[0], device=q.device)[:, None]
                    cols = torch.arange(c, min(c + block, m), device=q.device)[None, :]
                    mask = cols <= rows
                total += float(uniformity_block_sum(q, B[c : c + block], mask, out=buf).sum())
    count = n * (n - 1) / 2 if same else n * m
    return math.log(total / count)


def uniformity(
    X: Any,
    max_samples: int | None = DEFAULT_UNIFORMITY_SAMPLES,
    seed: int = 0,
    block_size: int | None = None,
    compute: Compute | None = None,
) -> float:
    r"""Uniformity of one modality on the hypersphere.

    .. math:: \mathcal{L}_\text{uniform} = \log \frac{2}{n(n-1)} \sum_{i<j}
              e^{-2\lVert u_i - u_j\rVert_2^2}

    over distinct pairs of unit rows (:math:`t = 2`). Lower (more negative) = more uniform; its
    minimum over :math:`S^{d-1}` approaches :math:`-4`, and a collapsed set gives 0. Computed
    in blocks with a running log-sum-exp; with more than ``max_samples`` rows a seeded
    subsample of that size is used (drawn in a canonical row order, so the row order of the
    input does not matter). Similarities and the log-sum-exp are float64, so the value
    depends on the BLAS kernel, block size and thread count only at ~1e-14 relative.

    Source: Wang & Isola, ICML 2020.

    Parameters
    ----------
    X : array (n, d)
        Embeddings of one modality, at least 2 rows.
    max_samples : int or None
        Row cap (default 10,000); ``None`` = all rows.
    seed : int
        Seed of the subsample.
    block_size : int, optional
        Rows per similarity block (memory ``block_size²`` floats; default from the compute
        context's memory budget).
    compute : Compute, optional
        Device and memory budget (default: :func:`modgap.compute.current`).
    """
    import torch

    X = prepare_rows(X, "embeddings", min_rows=2, unit="exact", dtype=np.float64)
    X = X[seeded_subset(X, X, max_samples, seed)]
    T = torch.from_numpy(X).to(_exact_device(compute))
    return _log_mean_exp_sim(T, T, same=True, block=_block(block_size, compute))


def cross_uniformity(
    X: Any,
    Y: Any,
    max_samples: int | None = DEFAULT_UNIFORMITY_SAMPLES,
    seed: int = 0,
    block_size: int | None = None,
    compute: Compute | None = None,
) -> float:
    r"""Cross-modal uniformity: the uniformity kernel over all image-text pairs.

    .. math:: \log \frac{1}{nm}\sum_{i,j} e^{-2\lVert x_i - y_j\rVert_2^2}

    A large modality gap makes every :math:`\lVert x_i - y_j\rVert` large, so this is far below
    the intra-modal values. Same blocking and sampling as :func:`uniformity` (cap per modality).
    """
    import torch

    X = prepare_rows(X, "image_emb", unit="exact", dtype=np.float64)
    Y = prepare_rows(Y, "text_emb", dim=X.shape[1], unit="exact", dtype=np.float64)
    X = X[seeded_subset(X, Y, max_samples, seed)]
    Y = Y[seeded_subset(Y, X, max_samples, seed + 1)]
    dev = _exact_device(compute)
    X64, Y64 = torch.from_numpy(X).to(dev), torch.from_numpy(Y).to(dev)
    return _log_mean_exp_sim(X64, Y64, same=False, block=_block(block_size, compute))
