"""Mergeable first/second-moment accumulator (count, mean, covariance) in float64.

Used by the Gaussian map so it can be fitted in one streaming pass over shards. Batches are
merged with the pairwise update of Chan, Golub & LeVeque (1979), which is exact and stable:
for two parts with counts :math:`n_a, n_b`, means :math:`\\mu_a, \\mu_b` and centred scatter
matrices :math:`M_a, M_b`,
:math:`M = M_a + M_b + \\frac{n_a n_b}{n_a + n_b}(\\mu_b - \\mu_a)(\\mu_b - \\mu_a)^\\top`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._array import to_numpy
from ..errors import ModgapError

__all__ = ["MomentAccumulator"]


class MomentAccumulator:
    """Streaming count, mean and covariance of rows of width ``dim``.

    ``update(batch)`` adds rows, ``merge(other)`` adds another accumulator's rows,
    ``result()`` returns ``{"count", "mean", "cov"}`` (covariance with divisor ``count``).
    """

    def __init__(self, dim: int | None = None):
        self.dim = dim
        self.count = 0
        self.mean = None if dim is None else np.zeros(dim)
        self.scatter = None if dim is None else np.zeros((dim, dim))

    def _init(self, dim: int) -> None:
        if self.dim is None:
            self.dim = dim
            self.mean = np.zeros(dim)
            self.scatter = np.zeros((dim, dim))
        elif dim != self.dim:
            raise ModgapError(f"moment accumulator holds {self.dim}-d rows, got {dim}-d rows")

    def _combine(self, n_b: int, mean_b: np.ndarray, scatter_b: np.ndarray) -> None:
        n_a = self.count
        n = n_a + n_b
        delta = mean_b - self.mean
        self.scatter += scatter_b + np.outer(delta, delta) * (n_a * n_b / n)
        self.mean += delta * (n_b / n)
        self.count = n

    def update(self, batch: Any) -> MomentAccumulator:
        x = np.asarray(to_numpy(batch), dtype=np.float64)
        if x.ndim != 2:
            raise ModgapError(f"moment accumulator needs a 2-D batch, got shape {x.shape}")
        self._init(x.shape[1])
        if x.shape[0] == 0:
            return self
        mean_b = x.mean(axis=0)
        xc = x - mean_b
        self._combine(x.shape[0], mean_b, xc.T @ xc)
        return self

    def merge(self, other: MomentAccumulator) -> MomentAccumulator:
        if other.count == 0:
            return self
        self._init(other.dim)
        self._combine(other.count, other.mean, other.scatter)
        return self

    def result(self) -> dict:
        if self.count == 0:
            raise ModgapError("moment accumulator is empty: update it with at least one row")
        return {"count": self.count, "mean": self.mean.copy(), "cov": self.scatter / self.count}
