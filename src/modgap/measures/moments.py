r"""Moments of unit rows at GEMM speed: the one moment kernel of every route.

A set is cut into chunks on a fixed grid of row numbers — rows ``[k C, (k+1) C)`` with
``C =`` :data:`CHUNK`, counted from row 0 of the set (in memory) or of the whole source
(streamed: a shard reads the rows of the chunks that start in it, a few beyond its end
included) — so the chunks, and hence the bits of each chunk's moments, do not depend on the
reader's block size, the shards, the engine or the thread count. Per chunk of :math:`c` unit
rows :math:`u_i`:

* the mean :math:`\mu_c = \frac1c\sum_i u_i` in float64 (the rows are formed in float64 in
  pieces of :data:`PIECE` rows that stay in cache, so the first moments — and every figure
  made from them only, such as the centroid gap — keep float64 precision);
* the scatter :math:`M_c = \sum_i (u_i - \mu_c)(u_i - \mu_c)^\top` as one float32
  matrix product (``syrk``) of the rows centred on the chunk's own mean, widened to float64.

Chunks are then merged in float64 with the pairwise update of Chan, Golub & LeVeque (1979),
:math:`M = M_a + M_b + \delta\delta^\top n_a n_b/n`. Centring each chunk on its own float64
mean, rather than on one reference for the whole set, keeps the float32 product free of
cancellation however far the rows lie from the global mean (sorted shards, a shifted
modality): the error is relative to the chunk's own spread.

**Error bound.** With :math:`u = 2^{-24}` and :math:`\gamma_C = Cu/(1 - Cu)` (Higham,
*Accuracy and Stability of Numerical Algorithms*, §3.1: a dot product of :math:`C` terms), the
rounding of a row to float32, of the mean and of their difference change each centred entry
:math:`c_{ij}` by at most :math:`u(|u_{ij}| + |\mu_j| + |c_{ij}|)`. Summing over rows and
chunks with Cauchy–Schwarz (a chunk's scatter is at most the set's, and
:math:`c\,\mu_{c,j}^2 \le \sum_i u_{ij}^2`), every entry of the merged scatter satisfies

.. math:: |\hat M_{jk} - M_{jk}| \le (\gamma_C + 2u)\sqrt{M_{jj}M_{kk}}
          + 2u\left(\sqrt{T_{jj}M_{kk}} + \sqrt{T_{kk}M_{jj}}\right) + O(u^2),

with :math:`T = \sum_i u_i u_i^\top` the raw second moment (:func:`scatter_bound`). For
:math:`C = 4096`, :math:`\gamma_C \approx 2.4\cdot 10^{-4}`: the worst case; blocked BLAS
sums of terms of both signs give about :math:`10^{-7}` relative in practice
(``tests/test_moments.py`` checks both on adversarial data).
The Chan merge adds float64 round-off only.

:class:`Moments` itself (``update``, and ``exact=True`` for a reducer's fit, whose bits must
equal the in-memory fit's) stays float64 throughout; only :func:`chunk_moments` uses float32.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from ..errors import InputError
from ._exact import ExactSum

__all__ = [
    "CHUNK",
    "PIECE",
    "ChunkMoments",
    "GridMoments",
    "Moments",
    "chunk_moments",
    "moments_of_unit_rows",
    "scatter_bound",
]

#: rows per chunk of the fixed grid (one float32 GEMM each; 8 MiB of float32 rows at d = 512)
CHUNK = 4096
#: rows per float64 piece of a chunk (1 MiB at d = 512: stays in cache while it is used)
PIECE = 256


class Moments:
    """Count, mean and (optionally) scatter matrix :math:`\\sum (x-\\mu)(x-\\mu)^\\top` of a
    stream of rows, in float64, merged with Chan et al.'s formula:

    .. math:: n = n_a + n_b,\\quad \\delta = \\mu_b - \\mu_a,\\quad
              \\mu = \\mu_a + \\delta\\,n_b/n,\\quad
              M = M_a + M_b + \\delta\\delta^\\top n_a n_b / n.

    With ``exact=True`` the mean comes from an :class:`~modgap.measures._exact.ExactSum`
    instead: the same bits however the rows are split into blocks, shards or routes (what a
    saved reducer fitted from means needs; rows of norm at most 2). The scatter matrix is
    always Chan-merged, so it depends on the split at float64 round-off (about 1e-15
    relative).

    ``update(A, scale=None)`` adds the rows ``A * scale[:, None]`` (``scale`` per row, e.g.
    inverse norms) without forming them when only the mean is asked for.
    """

    def __init__(self, covariance: bool = False, exact: bool = False):
        self.covariance = covariance
        self.exact = exact
        self.n = 0
        self.mean: np.ndarray | None = None
        self.scatter: np.ndarray | None = None
        self._sum: ExactSum | None = None

    def update(self, A: np.ndarray, scale: np.ndarray | None = None) -> Moments:
        if A.shape[0] == 0:
            return self
        other = Moments(self.covariance, self.exact)
        other.n = A.shape[0]
        if scale is not None and not (self.covariance or self.exact):
            other.mean = (scale @ A) / other.n
            return self.merge(other)
        if scale is not None:
            A = A * scale[:, None]
        if self.exact:
            other._sum = ExactSum(A.shape[1]).add(A)
            other.mean = other._sum.mean(other.n)
        else:
            other.mean = A.mean(axis=0)
        if self.covariance:
            C = A - other.mean
            other.scatter = C.T @ C
        return self.merge(other)

    def merge(self, other: Moments) -> Moments:
        if other.n == 0:
            return self
        if self.n == 0:
            self.n, self.mean = other.n, other.mean.copy()
            self.scatter = None if other.scatter is None else other.scatter.copy()
            self._sum = None if other._sum is None else ExactSum(other._sum.d).merge(other._sum)
            return self
        if self.mean.shape != other.mean.shape:
            raise InputError(
                f"cannot merge moments of width {other.mean.shape[0]} into width "
                f"{self.mean.shape[0]}"
            )
        n = self.n + other.n
        delta = other.mean - self.mean
        if self.covariance:
            self.scatter = (
                self.scatter + other.scatter + np.outer(delta, delta) * (self.n * other.n / n)
            )
        if self._sum is not None and other._sum is not None:
            self._sum.merge(other._sum)
            self.mean = self._sum.mean(n)
        else:
            self._sum = None
            self.mean = self.mean + delta * (other.n / n)
        self.n = n
        return self

    def as_dict(self) -> dict:
        """``{"n", "mean", "scatter"}``."""
        return {"n": self.n, "mean": self.mean, "scatter": self.scatter}

    def cov(self) -> np.ndarray:
        """Sample covariance (``n - 1`` normalised, as :func:`numpy.cov`)."""
        return self.scatter / (self.n - 1)


class ChunkMoments:
    """One grid chunk's :class:`Moments`, from consecutive float64 unit-row pieces
    (``add``), finished by :meth:`result`. ``buffer``: a float32 array of at least
    ``CHUNK * d`` elements reused across chunks (the centred rows; only with ``covariance``).
    """

    def __init__(self, covariance: bool, buffer: np.ndarray | None = None):
        self.covariance = covariance
        self.buffer = buffer
        self.n = 0
        self.total: np.ndarray | None = None
        self.keys: list[np.ndarray] = []

    def add(self, piece: np.ndarray, scale: np.ndarray | None = None) -> None:
        """Add the unit rows ``piece`` or, with ``scale`` (per row, float64), the rows
        ``piece * scale[:, None]`` without forming them in float64: the sum is then one
        matrix-vector product and the float32 rows are written straight into the buffer."""
        k, d = piece.shape
        if k == 0:
            return
        s = piece.sum(axis=0) if scale is None else scale @ piece
        self.total = s if self.total is None else self.total + s
        if self.covariance:
            key = piece @ _key_vector(d)
            self.keys.append(key if scale is None else key * scale)
            need = (self.n + k) * d
            if self.buffer is None or self.buffer.size < need:
                grown = np.empty(max(need, CHUNK * d), dtype=np.float32)
                if self.n:
                    grown[: self.n * d] = self.buffer[: self.n * d]
                self.buffer = grown
            rows = self.buffer[self.n * d : need].reshape(k, d)
            if scale is None:
                rows[:] = piece  # rounded to float32 once
            else:  # the product in float64, rounded to float32 once
                np.multiply(piece, scale[:, None], out=rows, casting="unsafe")
        self.n += k

    def result(self) -> Moments:
        out = Moments(self.covariance)
        if self.n == 0:
            return out
        n = self.n
        out.n, out.mean = n, self.total / n
        if self.covariance:
            C = self.buffer[: n * out.mean.shape[0]].reshape(n, -1)
            # rows in a canonical order (by a fixed projection; ties are in practice equal
            # rows): the float32 sums then do not depend on the order the chunk's rows came in
            order = np.argsort(np.concatenate(self.keys), kind="stable")
            if (order != np.arange(n)).any():
                C[:] = C[order]
            C -= out.mean.astype(np.float32)
            S = (C.T @ C).astype(np.float64)  # one float32 syrk (numpy sees C.T @ C)
            out.scatter = (S + S.T) / 2  # exact halving: symmetric whatever the kernel
        return out


def _key_vector(d: int) -> np.ndarray:
    """A fixed direction of ``d`` dimensions (no seed, no state) for the canonical order."""
    return np.cos(np.arange(1, d + 1) * 0.7548776662466927)


def chunk_moments(
    pieces: Iterable[np.ndarray], covariance: bool, buffer: np.ndarray | None = None
) -> Moments:
    """The :class:`Moments` of one grid chunk given as consecutive float64 unit-row pieces
    (:class:`ChunkMoments`)."""
    acc = ChunkMoments(covariance, buffer)
    for p in pieces:
        acc.add(p)
    return acc.result()


class GridMoments:
    """:class:`Moments` of a stream of float64 unit rows on the grid of :data:`CHUNK` rows,
    for callers that do not know the rows' global numbers (the public accumulators): rows are
    kept until a chunk is full; :meth:`merge` joins the partial chunks. Each chunk's rows are
    summed in a canonical order, so a set of fewer than :data:`CHUNK` rows has the bits of
    :func:`moments_of_unit_rows` however it is split and merged; beyond, which rows share a
    chunk depends on the split, and the scatter on it within the module's bound."""

    def __init__(self, covariance: bool = True):
        self.covariance = covariance
        self.done = Moments(covariance)
        self.pending: list[np.ndarray] = []
        self.n = 0

    @property
    def mean(self) -> np.ndarray:
        """The mean of the rows so far (float64 sums; no scatter is formed)."""
        total = sum(p.sum(axis=0) for p in self.pending)
        if self.done.n:
            total = total + self.done.mean * self.done.n
        return total / self.n

    def update(self, U: np.ndarray) -> GridMoments:
        if U.shape[0]:
            self.pending.append(np.asarray(U, dtype=np.float64))
            self.n += U.shape[0]
            self._flush(final=False)
        return self

    def merge(self, other: GridMoments) -> GridMoments:
        self.done.merge(other.done)
        self.pending += other.pending
        self.n += other.n
        self._flush(final=False)
        return self

    def _flush(self, final: bool) -> None:
        rows = sum(p.shape[0] for p in self.pending)
        if rows < CHUNK and not (final and rows):
            return
        A = np.concatenate(self.pending)
        full = A.shape[0] if final else A.shape[0] // CHUNK * CHUNK
        for a in range(0, full, CHUNK):
            self.done.merge(chunk_moments([A[a : a + CHUNK]], self.covariance))
        self.pending = [A[full:]] if full < A.shape[0] else []

    def result(self) -> Moments:
        """The merged :class:`Moments` (the partial chunk counted as one chunk)."""
        out = Moments(self.covariance).merge(self.done)
        if self.pending:
            out.merge(chunk_moments([np.concatenate(self.pending)], self.covariance))
        return out


def moments_of_unit_rows(U: np.ndarray, covariance: bool = False) -> Moments:
    """Moments of an in-memory matrix of float64 unit rows: the set as one source shard,
    on the grid of :data:`CHUNK` rows from its row 0 (the same chunks, hence the same bits,
    as the streamed :func:`~modgap.stream.moments.moment_kernel` on any sharding of it)."""
    acc = Moments(covariance)
    buffer = np.empty(CHUNK * U.shape[1], dtype=np.float32) if covariance else None
    for a in range(0, U.shape[0], CHUNK):
        b = min(a + CHUNK, U.shape[0])
        pieces = (U[p : min(p + PIECE, b)] for p in range(a, b, PIECE))
        acc.merge(chunk_moments(pieces, covariance, buffer))
    return acc


def scatter_bound(U: np.ndarray) -> np.ndarray:
    """The entrywise bound of the module docstring on :math:`|\\hat M - M|` for the unit rows
    ``U`` (float64, computed exactly enough in float64): what the tests check against."""
    u = 2.0**-24
    gamma = CHUNK * u / (1 - CHUNK * u)
    C = U - U.mean(axis=0)
    dm = np.sqrt(np.einsum("ij,ij->j", C, C))
    dt = np.sqrt(np.einsum("ij,ij->j", U, U))
    return (gamma + 2 * u) * np.outer(dm, dm) + 2 * u * (np.outer(dt, dm) + np.outer(dm, dt))
