"""Log-domain Sinkhorn in torch with a blockwise squared-Euclidean cost, and the entropic map.

Only the dual potentials are kept (``O(n + m)``); the cost is either cached (when it fits in
``max_cache_bytes``) or recomputed block by block in every iteration, so problems far larger
than memory for an ``n x m`` matrix still run, on CPU or GPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .._array import to_torch
from ..compute import Compute, resolve

__all__ = ["SinkhornResult", "entropic_map", "sinkhorn_log"]


@dataclass
class SinkhornResult:
    f: np.ndarray
    g: np.ndarray
    n_iter: int
    marginal_error: float
    converged: bool


class _Cost:
    r""":math:`C_{ij} = \lVert x_i - y_j \rVert^2`, served as row blocks or column blocks."""

    def __init__(self, X, Y, cache: bool):
        self.X, self.Y = X, Y
        self.xx = (X * X).sum(1)
        self.yy = (Y * Y).sum(1)
        self.full = self._block(0, X.shape[0]) if cache else None

    def _block(self, start, stop):
        # in place: the cached n x m cost must not have n x m temporaries beside it
        c = self.X[start:stop] @ self.Y.T
        c.mul_(-2).add_(self.xx[start:stop, None]).add_(self.yy[None, :])
        return c.clamp_min_(0)

    def rows(self, start, stop):
        return self.full[start:stop] if self.full is not None else self._block(start, stop)

    def cols(self, start, stop):
        if self.full is not None:
            return self.full[:, start:stop].T
        c = self.Y[start:stop] @ self.X.T
        c.mul_(-2).add_(self.yy[start:stop, None]).add_(self.xx[None, :])
        return c.clamp_min_(0)


def _softmin(cost_rows, potential, log_weights, eps, block):
    """:math:`-\\varepsilon \\log \\sum_j \\exp((h_j - C_{ij})/\\varepsilon + \\log w_j)`."""
    import torch

    n = cost_rows.n
    out = torch.empty(n, dtype=potential.dtype, device=potential.device)
    shifted = (potential / eps + log_weights)[None, :]
    for start in range(0, n, block):
        c = cost_rows.get(start, min(start + block, n))
        out[start : start + block] = -eps * torch.logsumexp(shifted - c / eps, dim=1)
    return out


class _Side:
    def __init__(self, n, get):
        self.n, self.get = n, get


def sinkhorn_log(
    X,
    Y,
    reg: float,
    a=None,
    b=None,
    max_iter: int = 1000,
    tol: float = 1e-6,
    dtype=None,
    max_cache_bytes: int | None = None,
    callback=None,
    compute: Compute | None = None,
) -> SinkhornResult:
    r"""Entropic OT between the empirical measures of ``X`` (weights ``a``) and ``Y`` (``b``).

    Solves :math:`\min_P \langle C, P\rangle + \varepsilon\,\mathrm{KL}(P \,\|\, a b^\top)` with
    :math:`C_{ij} = \lVert x_i - y_j\rVert^2` by alternating the dual updates

    .. math:: f_i = -\varepsilon \log \sum_j b_j e^{(g_j - C_{ij})/\varepsilon}, \qquad
              g_j = -\varepsilon \log \sum_i a_i e^{(f_i - C_{ij})/\varepsilon},

    so that :math:`P_{ij} = a_i b_j e^{(f_i + g_j - C_{ij})/\varepsilon}` (Peyré & Cuturi,
    "Computational Optimal Transport", 2019, §4.4). Stops when the row-marginal L1 error
    :math:`\sum_i |P\mathbf 1 - a|_i` (free to read off each ``f`` update) is below ``tol``.
    Uniform weights by default. The cost is cached when it fits in ``max_cache_bytes``
    (default: the compute context's memory budget), else recomputed in blocks that fit a
    quarter of the budget.
    """
    import torch

    compute = resolve(compute)
    device = compute.torch_device
    if max_cache_bytes is None:
        max_cache_bytes = compute.memory_budget
    dtype = dtype or torch.float32
    Xt = to_torch(X, device, dtype)
    Yt = to_torch(Y, device, dtype)
    n, m = Xt.shape[0], Yt.shape[0]
    log_a = (
        torch.full((n,), -math.log(n), dtype=dtype, device=device)
        if a is None
        else to_torch(np.log(a), device, dtype)
    )
    log_b = (
        torch.full((m,), -math.log(m), dtype=dtype, device=device)
        if b is None
        else to_torch(np.log(b), device, dtype)
    )
    itemsize = torch.finfo(dtype).bits // 8
    cost = _Cost(Xt, Yt, cache=n * m * itemsize <= max_cache_bytes)
    rows = _Side(n, cost.rows)
    cols = _Side(m, cost.cols)
    block_r = compute.rows_per_block(itemsize * m, share=0.25)
    block_c = compute.rows_per_block(itemsize * n, share=0.25)
    f = torch.zeros(n, dtype=dtype, device=device)
    g = torch.zeros(m, dtype=dtype, device=device)
    err, it, converged = math.inf, 0, False
    for it in range(1, max_iter + 1):
        f_new = _softmin(rows, g, log_b, reg, block_r)
        # row sums of the plan before this update: a_i exp((f_old - f_new)/eps)
        err = float((log_a.exp() * (1 - ((f - f_new) / reg).exp()).abs()).sum()) if it > 1 else err
        f = f_new
        g = _softmin(cols, f, log_a, reg, block_c)
        if callback is not None:
            callback(it, err)
        if err < tol:
            converged = True
            break
    return SinkhornResult(f.cpu().double().numpy(), g.cpu().double().numpy(), it, err, converged)


def entropic_map(
    Q,
    support,
    potential,
    reg: float,
    log_weights=None,
    dtype=None,
    compute: Compute | None = None,
) -> np.ndarray:
    r"""Entropic (barycentric) map of query points ``Q`` onto ``support``, in batches.

    .. math:: T(x) = \sum_j \operatorname{softmax}_j\!\Big(\frac{g_j - \lVert x - y_j
              \rVert^2}{\varepsilon} + \log b_j\Big)\, y_j

    With ``support`` = Y and ``potential`` = g this is the conditional mean of the entropic plan
    for a fitted source point, and its smooth extension to any new point (Pooladian & Niles-Weed,
    "Entropic estimation of optimal transport maps", 2021).
    """
    import torch

    compute = resolve(compute)
    device = compute.torch_device
    dtype = dtype or torch.float32
    S = to_torch(support, device, dtype)
    h = to_torch(potential, device, dtype)
    m = S.shape[0]
    lw = (
        torch.full((m,), -math.log(m), dtype=dtype, device=device)
        if log_weights is None
        else to_torch(log_weights, device, dtype)
    )
    ss = (S * S).sum(1)
    itemsize = torch.finfo(dtype).bits // 8
    block = compute.rows_per_block(itemsize * m, buffers=3)
    out = np.empty((Q.shape[0], S.shape[1]), dtype=np.float32)
    for start in range(0, Q.shape[0], block):
        q = to_torch(Q[start : start + block], device, dtype)
        c = ((q * q).sum(1)[:, None] + ss[None, :] - 2 * (q @ S.T)).clamp_min_(0)
        p = torch.softmax((h - c) / reg + lw, dim=1)
        out[start : start + block] = (p @ S).cpu().float().numpy()
    return out
