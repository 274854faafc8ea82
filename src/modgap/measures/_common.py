"""Input handling shared by the measures: unit rows and pairing, canonical order and subsets.

Rows come from the one row preparation, :func:`modgap._array.prepare_rows` with
``unit="exact", dtype=np.float64``: every measure is defined on unit vectors
(docs/measures.md) and sums over millions of rows need float64."""

from __future__ import annotations

from typing import Any

import numpy as np

from .._array import check_pairing as pairing
from .._array import prepare_rows

__all__ = ["as_pairs", "canonical_order", "pairing", "seeded_subset"]


def as_pairs(
    X: Any, Y: Any, text_to_image: Any = None, min_rows: int = 1
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit rows of ``X`` and ``Y`` and the pairing: ``(X, Y, text_to_image)``."""
    X = prepare_rows(X, "image_emb", min_rows=min_rows, unit="exact", dtype=np.float64)
    Y = prepare_rows(
        Y, "text_emb", dim=X.shape[1], min_rows=min_rows, unit="exact", dtype=np.float64
    )
    return X, Y, pairing(text_to_image, X.shape[0], Y.shape[0])


def canonical_order(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """An order of the rows of ``A`` that does not depend on how they were listed.

    Rows are sorted by their cosine to ``A``'s own mean, then to ``B``'s mean. Both keys are
    unchanged by a common rotation of the two modalities and by any permutation of the rows, so
    a seeded subsample or split drawn *in this order* picks the same rows whatever the input
    order; rows with equal keys (in practice, duplicates) are interchangeable.
    """
    return np.lexsort((A @ B.mean(axis=0), A @ A.mean(axis=0)))


def seeded_subset(A: np.ndarray, B: np.ndarray, cap: int | None, seed: int) -> np.ndarray:
    """Indices of at most ``cap`` rows of ``A``, drawn with ``seed`` in :func:`canonical_order`."""
    n = A.shape[0]
    if cap is None or n <= cap:
        return np.arange(n)
    order = canonical_order(A, B)
    pick = np.random.default_rng(seed).choice(n, size=int(cap), replace=False)
    return np.sort(order[pick])
