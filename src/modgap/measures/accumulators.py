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
from .centroid import gap_from_means, per_dimension_from_delta
from .frechet import frechet_terms
from .moments import GridMoments, Moments
from .rmg import rmg_from_sums

__all__ = [
    "AlignmentAccumulator",
    "CentroidGapAccumulator",
    "FrechetAccumulator",
    "Moments",
    "PerDimensionGapAccumulator",
    "RMGAccumulator",
]


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
    """Streaming :func:`~modgap.measures.frechet_distance`: the chunked float32 scatter of
    :class:`~modgap.measures.moments.GridMoments` (its bound), Chan-merged; memory
    :math:`O(d^2 + C d)` with :math:`C` = :data:`~modgap.measures.moments.CHUNK`."""

    def __init__(self, ridge: float = 0.0) -> None:
        super().__init__()
        self.x, self.y = GridMoments(), GridMoments()
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
        x, y = self.x.result(), self.y.result()
        return frechet_terms(x.mean, x.cov(), y.mean, y.cov(), self.ridge)


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
