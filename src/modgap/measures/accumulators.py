"""Mergeable one-pass accumulators for the moment-based measures.

Each accumulator has ``update(X_batch, Y_batch)`` (either batch may be ``None`` for the
unpaired ones), ``merge(other)`` (in place, returns ``self``) and ``result()``. Shards can be
accumulated independently (other processes, other machines) and merged in any order; the result
equals the one-shot function up to float64 round-off. Means and covariances use the pairwise
update of Chan, Golub & LeVeque (1979), so no large raw second moments are subtracted.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._array import prepare_rows
from ..errors import InputError
from ._common import pairing
from ._exact import ExactSum
from .centroid import gap_from_means, per_dimension_from_delta
from .frechet import frechet_terms
from .rmg import rmg_from_sums

__all__ = [
    "AlignmentAccumulator",
    "CentroidGapAccumulator",
    "FrechetAccumulator",
    "Moments",
    "PerDimensionGapAccumulator",
    "RMGAccumulator",
]


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


def _empty_check(*moments: Moments) -> None:
    for name, mo in zip(("image", "text"), moments, strict=True):
        if mo.n == 0:
            raise InputError(f"no {name} rows were accumulated")


class _TwoModalities:
    _covariance = False

    def __init__(self) -> None:
        self.x = Moments(self._covariance)
        self.y = Moments(self._covariance)

    def update(self, X_batch: Any = None, Y_batch: Any = None):
        """Add a batch of image rows and/or text rows (unit-normalised here)."""
        if X_batch is not None:
            self.x.update(
                prepare_rows(X_batch, "image_emb", min_rows=0, unit="exact", dtype=np.float64)
            )
        if Y_batch is not None:
            self.y.update(
                prepare_rows(Y_batch, "text_emb", min_rows=0, unit="exact", dtype=np.float64)
            )
        if self.x.n and self.y.n and self.x.mean.shape != self.y.mean.shape:
            raise InputError(
                f"image rows have {self.x.mean.shape[0]} dimensions but text rows "
                f"{self.y.mean.shape[0]}"
            )
        return self

    def merge(self, other):
        """Fold ``other`` (same class) into this accumulator."""
        self.x.merge(other.x)
        self.y.merge(other.y)
        return self


class CentroidGapAccumulator(_TwoModalities):
    """Streaming :func:`~modgap.measures.centroid_gap` (``result()`` gives the same dict, plus
    ``gap_vector``)."""

    def result(self) -> dict:
        _empty_check(self.x, self.y)
        out = gap_from_means(self.x.mean, self.y.mean)
        out["gap_vector"] = self.x.mean - self.y.mean
        return out


class PerDimensionGapAccumulator(_TwoModalities):
    """Streaming :func:`~modgap.measures.per_dimension_gap`."""

    def __init__(self, top: int = 10) -> None:
        super().__init__()
        self.top = top

    def result(self) -> dict:
        _empty_check(self.x, self.y)
        return per_dimension_from_delta(self.x.mean - self.y.mean, top=self.top)


class FrechetAccumulator(_TwoModalities):
    """Streaming :func:`~modgap.measures.frechet_distance` (means and covariances by Chan's
    merge; memory :math:`O(d^2)`)."""

    _covariance = True

    def __init__(self, ridge: float = 0.0) -> None:
        super().__init__()
        self.ridge = ridge

    def result(self) -> float:
        t = self.terms()
        return t["centroid"] + t["covariance"]

    def terms(self) -> dict[str, float]:
        """The centroid and covariance terms (:func:`~modgap.measures.frechet.frechet_terms`),
        with this accumulator's ridge; they sum to :meth:`result`."""
        _empty_check(self.x, self.y)

        if min(self.x.n, self.y.n) < 2:
            raise InputError("the Fréchet distance needs at least 2 rows of each modality")
        return frechet_terms(self.x.mean, self.x.cov(), self.y.mean, self.y.cov(), self.ridge)


class AlignmentAccumulator:
    """Streaming :func:`~modgap.measures.alignment`: ``update(X_batch, Y_batch)`` takes matched
    rows (row ``i`` of one is paired with row ``i`` of the other)."""

    def __init__(self) -> None:
        self.n = 0
        self.sum_sq = 0.0

    def update(self, X_batch: Any, Y_batch: Any) -> AlignmentAccumulator:
        X = prepare_rows(X_batch, "image_emb", min_rows=0, unit="exact", dtype=np.float64)
        Y = prepare_rows(
            Y_batch, "text_emb", dim=X.shape[1], min_rows=0, unit="exact", dtype=np.float64
        )
        pairing(None, X.shape[0], Y.shape[0])  # same count, or a clear error
        diff = X - Y
        self.sum_sq += float(np.einsum("ij,ij->", diff, diff))
        self.n += X.shape[0]
        return self

    def merge(self, other: AlignmentAccumulator) -> AlignmentAccumulator:
        self.n += other.n
        self.sum_sq += other.sum_sq
        return self

    def result(self) -> float:
        if self.n == 0:
            raise InputError("no pairs were accumulated")
        return self.sum_sq / self.n


class RMGAccumulator:
    """Streaming :func:`~modgap.measures.relative_modality_gap` from its sufficient statistics:
    the sum and count of image rows and of text rows, and the sum of matched cosines.

    ``update(X_batch, Y_batch, text_to_image=None)`` takes one shard's images and texts, with
    ``text_to_image`` indexing into that shard's images (row ``i`` <-> ``i`` when absent). Every
    image of the whole set must arrive exactly once, in whichever shard.
    """

    def __init__(self) -> None:
        self.sum_x: np.ndarray | None = None
        self.sum_y: np.ndarray | None = None
        self.n_x = 0
        self.n_y = 0
        self.matched = 0.0

    def update(self, X_batch: Any, Y_batch: Any, text_to_image: Any = None) -> RMGAccumulator:
        X = prepare_rows(X_batch, "image_emb", min_rows=0, unit="exact", dtype=np.float64)
        Y = prepare_rows(
            Y_batch, "text_emb", dim=X.shape[1], min_rows=0, unit="exact", dtype=np.float64
        )
        t2i = pairing(text_to_image, X.shape[0], Y.shape[0])
        other = RMGAccumulator()
        other.sum_x, other.n_x = X.sum(0), X.shape[0]
        other.sum_y, other.n_y = Y.sum(0), Y.shape[0]
        other.matched = float(np.einsum("ij,ij->", X[t2i], Y))
        return self.merge(other)

    def merge(self, other: RMGAccumulator) -> RMGAccumulator:
        if other.sum_x is None:
            return self
        if self.sum_x is None:
            self.sum_x, self.sum_y = other.sum_x.copy(), other.sum_y.copy()
        else:
            self.sum_x = self.sum_x + other.sum_x
            self.sum_y = self.sum_y + other.sum_y
        self.n_x += other.n_x
        self.n_y += other.n_y
        self.matched += other.matched
        return self

    def result(self) -> float:
        if self.n_y == 0:
            raise InputError("no pairs were accumulated")
        return rmg_from_sums(self.sum_x, self.n_x, self.sum_y, self.n_y, self.matched, self.n_y)
