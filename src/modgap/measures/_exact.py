r"""Column sums whose bits do not depend on how the rows were split or ordered.

A float64 sum of many rows depends on the order of its additions: blocks of another size (a
different ``--memory-budget``), shards merged on Dask, or another BLAS kernel give another last
bit, and a mean that feeds a saved reducer then flips float16 outputs by one unit. Here every
entry :math:`a` (``|a| <= 2``: unit rows) is split on two fixed grids,

.. math:: a \approx h\,2^{-32} + l\,2^{-64},\qquad h = \operatorname{rint}(a\,2^{32}),\quad
          l = \operatorname{rint}((a\,2^{32} - h)\,2^{32}),

both integers (:math:`|h| \le 2^{33}`, :math:`|l| \le 2^{31}`). Their sums over at most
:data:`CHUNK` rows are integers below :math:`2^{53}`, so float64 adds them **exactly in any
order** (a BLAS matrix-vector product included); chunks are then added as Python integers.
The only rounding is each entry's own, to the :math:`2^{-64}` grid (below
:math:`3\cdot10^{-20}`, independent of the blocking), and the final division, correctly
rounded. The result is the float64 sum of the data to within one rounding, whatever the route.
"""

from __future__ import annotations

import numpy as np

__all__ = ["CHUNK", "ExactSum", "exact_mean"]

_HI = 2.0**32
#: rows per exact float64 partial sum: 2^20 rows x 2^33 stays below 2^53
CHUNK = 1 << 20
#: largest entry the grids hold exactly enough (unit rows, with room for round-off)
LIMIT = 2.0


class ExactSum:
    """The exact (to the :math:`2^{-64}` grid) column sum of a stream of ``(n, d)`` blocks.

    ``add(block)`` and ``merge(other)`` in any order and any split give the same integers;
    ``total()`` and ``mean(n)`` round them once.
    """

    def __init__(self, d: int | None = None) -> None:
        self.d = d
        self._hi: list[int] | None = None
        self._lo: list[int] | None = None

    def add(self, block: np.ndarray) -> ExactSum:
        """Add the rows of ``block`` (float, ``|entries| <= 2``)."""
        a = np.asarray(block)
        if a.ndim != 2:
            raise ValueError(f"ExactSum takes 2-D blocks, got shape {a.shape}")
        if self.d is None:
            self.d = a.shape[1]
        elif a.shape[1] != self.d:
            raise ValueError(f"block of width {a.shape[1]} added to a sum of width {self.d}")
        ones = None
        for start in range(0, a.shape[0], CHUNK):
            part = a[start : start + CHUNK]
            if not part.size:
                continue
            x = part.astype(np.float64, copy=True) * _HI
            if not np.all(np.abs(x) <= LIMIT * _HI):
                raise ValueError("ExactSum takes entries of absolute value at most 2 (unit rows)")
            h = np.rint(x)
            x -= h  # exact: both on the float64 grid of x
            x *= _HI
            np.rint(x, out=x)
            if ones is None or ones.shape[0] != part.shape[0]:
                ones = np.ones(part.shape[0])
            # integer-valued float64 with every partial sum below 2^53: exact in any order
            self._fold([int(v) for v in ones @ h], [int(v) for v in ones @ x])
        return self

    def _fold(self, hi: list[int], lo: list[int]) -> None:
        if self._hi is None:
            self._hi, self._lo = hi, lo
        else:
            self._hi = [a + b for a, b in zip(self._hi, hi, strict=True)]
            self._lo = [a + b for a, b in zip(self._lo, lo, strict=True)]

    def merge(self, other: ExactSum) -> ExactSum:
        """Fold ``other`` into this sum (in place)."""
        if other._hi is None:
            return self
        if self.d is not None and other.d != self.d:
            raise ValueError(f"cannot merge a sum of width {other.d} into width {self.d}")
        self.d = other.d
        self._fold(list(other._hi), list(other._lo))
        return self

    def _scaled(self) -> list[int]:
        """The sums as integers on the 2^-64 grid."""
        if self._hi is None:
            return [0] * (self.d or 0)
        return [(h << 32) + lo for h, lo in zip(self._hi, self._lo, strict=True)]

    def total(self) -> np.ndarray:
        """The column sums, float64, correctly rounded."""
        return np.array([v / (1 << 64) for v in self._scaled()])  # int / int: correctly rounded

    def mean(self, n: int) -> np.ndarray:
        """The column sums divided by ``n``, float64, correctly rounded."""
        return np.array([v / (n << 64) for v in self._scaled()])


def exact_mean(a: np.ndarray) -> np.ndarray:
    """Column means of ``a`` (``|entries| <= 2``) by :class:`ExactSum`: the same bits for the
    same rows, however they are later split into blocks or shards."""
    a = np.asarray(a)
    return ExactSum(a.shape[1]).add(a).mean(a.shape[0])
