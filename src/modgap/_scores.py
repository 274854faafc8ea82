r"""Exact, reproducible float64 scores of float32 vectors, and the float32 error window.

The scoring half of the rule of :mod:`modgap._ties` (which decides ranks and top-k lists
with these scores and re-exports every public name here):

* :func:`score_window`: for any summation order
  :math:`|\mathrm{fl}_{32}(q\cdot c) - q\cdot c| \le \gamma_d \lVert q\rVert\lVert c\rVert`,
  :math:`\gamma_d = d u / (1 - d u)`, :math:`u = 2^{-24}` (Higham, *Accuracy and Stability of
  Numerical Algorithms*, 2002, §3.1); float32 comparisons further apart than the window are
  trusted, scaled per query by :func:`row_scale`.
* :func:`exact_scores`: products of the float32 inputs in float64 (exact: 24 + 24 significant
  bits fit in 53) summed by a fixed pairwise tree, a function of the two vectors alone.
* :func:`fixed_scores`: whole float64 score matrices with the same bits on every machine, at
  matrix-product speed (an error-free splitting, Ozaki et al. 2012).
"""

from __future__ import annotations

from typing import Any

__all__ = ["exact_scores", "fixed_scores", "row_scale", "score_window"]
# float64 products held at once by exact_scores: torch's parallel grain (2**15 elements), so
# every operation of a chunk runs on the calling thread, from the L2 cache, without waiting for
# the thread pool. Measured on a shared 2-core machine (10,000 pairs, d = 512, medians of 7):
# with two threads 85-90 ms against 420-510 ms for 2 MiB chunks; with one thread 30-65 ms
# against 18-42 ms. It loses little where the pool is idle and gains much where it is busy
_EXACT_BYTES = 8 * 2**15


def score_window(d: int) -> float:
    """Half-width, for unit rows of ``d`` dimensions, inside which float32 scores cannot be
    trusted to order two candidates: ``2 γ_d`` for the two scores plus the rounding of a
    float32 threshold, with room to spare (``(d + 4) 2⁻²³``; 6.2e-5 at d = 512)."""
    return (int(d) + 4) * 2.0**-23


def exact_scores(A: Any, B: Any, ia: Any, ib: Any, *, chunk_bytes: int | None = None) -> Any:
    """``A[ia[p]] · B[ib[p]]`` for every pair ``p``, as a reproducible float64 tensor.

    Products of the float32 entries are exact in float64; they are summed by a fixed pairwise
    tree (the width padded with zeros to a power of two; step ``h``: column ``j`` plus column
    ``j + h``), each step one IEEE addition of two slices, so the result is a function of the
    two vectors alone: the same bits on every CPU and GPU, whatever the batch or the chunk.
    ``A`` and ``B`` are float32 torch tensors on one device, ``ia`` / ``ib`` index tensors of
    one length. The pairs are scored in chunks of at most ``chunk_bytes`` of float64 products
    (default 256 KiB), in one buffer reused across chunks and summed in place.
    """
    import torch

    n = int(ia.numel())
    d = int(A.shape[1])
    out = torch.empty(n, dtype=torch.float64, device=A.device)
    if n == 0:
        return out
    width = 1 << max(0, (d - 1).bit_length())
    if chunk_bytes is None:
        chunk_bytes = _EXACT_BYTES
    step = min(n, max(1, int(chunk_bytes) // (8 * width)))
    # the padding columns d..width are read by the first step only, never written: zero once
    P = torch.empty((step, width), dtype=torch.float64, device=A.device)
    P[:, d:] = 0
    for s in range(0, n, step):
        m = min(step, n - s)
        p = P[:m]
        # gather in float32 (half the bytes), widen on the copy; float32 x float32 products
        # are exact in float64
        p[:, :d].copy_(A.index_select(0, ia[s : s + m]))
        p[:, :d].mul_(B.index_select(0, ib[s : s + m]))
        w = width
        while w > 1:
            h = w // 2
            p[:, :h] += p[:, h:w]
            w = h
        out[s : s + m] = p[:, 0]
    return out


def _row_exponents(a: Any) -> Any:
    """Per row of a float64 matrix, an integer ``e`` with ``‖a‖ < 2^e``, from exact operations
    only (max, power-of-two scaling, an integer sum, a correctly rounded square root, frexp),
    so it is the same on every machine: a norm computed in floating point could round either
    side of a power of two and move a row to another grid."""
    import math

    import torch

    amax = a.abs().amax(dim=1)
    _, p0 = torch.frexp(torch.where(amax > 0, amax, torch.ones_like(amax)))  # amax < 2^p0
    q = torch.round(torch.ldexp(a, (12 - p0)[:, None]))  # integers, |q| <= 4096
    n2 = (q * q).sum(dim=1)  # exact: integers below 2^53, in any order
    # ‖a 2^-p0‖ <= (‖q‖ + √d/2) 2^-12; the + 1 covers the rounding of this bound
    bound = torch.sqrt(n2) + (math.sqrt(a.shape[1]) / 2 + 1)
    _, p = torch.frexp(bound)  # bound < 2^p
    return p0 + p - 12


def _split_rows(A: Any, g: int) -> tuple[Any, Any, Any]:
    """``A = 2^e (hi + 2⁻²⁶ lo)`` per row, up to ``2^-(27+g)`` of the row scaled to norm below
    1: ``hi`` on the grid ``2⁻²⁶``, ``lo`` on ``2^-g`` with ``|lo| <= 1/2``."""
    import torch

    a = A.double()
    e = _row_exponents(a)
    a = torch.ldexp(a, -e[:, None])  # exact: a power of two per row
    hi = torch.round(a * 2.0**26) * 2.0**-26
    lo = torch.round((a - hi) * 2.0 ** (26 + g)) * 2.0**-g  # a - hi is exact (|.| <= 2^-27)
    return hi, lo, e


def fixed_scores(A: Any, B: Any) -> Any:
    """``A Bᵀ`` as a float64 matrix with the same bits on every machine, at matmul speed.

    Each row is scaled by a power of two to norm below 1 and split as ``hi + 2⁻²⁶ lo``, ``hi``
    on the grid ``2⁻²⁶`` and ``lo`` on the grid ``2^-g``, ``g = 27 - ⌈log₂ √d⌉``, ``|lo| <= ½``.
    In each of the three float64 products ``hi·hi``, ``hi·lo`` and ``lo·hi`` every product of
    entries lies on one grid and every partial sum is bounded by Cauchy–Schwarz (``‖hi‖² < 2``,
    ``‖hi‖‖lo‖ < √d``), so every intermediate value is a float64 number: the matrix products are
    **exact**, whatever the BLAS kernel, blocking, thread count or use of fused multiply-adds
    (an error-free splitting in the manner of Ozaki, Ogita, Oishi & Rump, "Error-free
    transformations of matrix multiplication by using fast routines of matrix multiplication
    and its applications", Numer. Algorithms 59, 2012). The three are added in a fixed order.
    So the result is a function of the two rows alone, within ``(d 2⁻⁵⁴ + √d 2^-(25+g)) ‖a‖‖b‖``
    of the exact inner product (1.1e-13 at d = 512; ``lo·lo`` is left out).

    ``A`` (m, d) and ``B`` (n, d): float tensors on one device with float64 support (not MPS).
    Returns a float64 tensor (m, n).
    """
    import math

    import torch

    d = int(A.shape[1])
    g = 27 - math.ceil(math.log2(math.sqrt(max(d, 1))))
    ha, la, ea = _split_rows(A, g)
    hb, lb, eb = _split_rows(B, g)
    out = (ha @ hb.T) + ((ha @ lb.T) + (la @ hb.T)) * 2.0**-26
    return torch.ldexp(out, ea[:, None] + eb[None, :])


def row_scale(Q: Any, C: Any) -> Any:
    """``‖q‖ · max‖c‖`` per row of ``Q`` (float64), the scale of :func:`score_window`."""
    import torch

    # an upper bound is all the window needs: float32 norms, rounded up
    cmax = float(torch.linalg.vector_norm(C, dim=1).max()) if C.shape[0] else 1.0
    return torch.linalg.vector_norm(Q, dim=1).double() * (cmax * (1 + 1e-6))
