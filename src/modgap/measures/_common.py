"""Input handling shared by the measures: validation and L2 normalisation in float64."""

from __future__ import annotations

from typing import Any

import numpy as np

from .._array import check_pairing as pairing
from .._array import to_numpy
from ..errors import InputError

__all__ = ["as_pairs", "canonical_order", "pairing", "seeded_subset", "unit_rows"]


def unit_rows(x: Any, name: str, dim: int | None = None, min_rows: int = 1) -> np.ndarray:
    """Validate an embedding matrix and return its rows L2-normalised, as float64.

    Every measure works on the unit sphere (CLIP-like embeddings are compared by cosine, and
    docs/measures.md defines each measure on unit rows), so rows are normalised silently here;
    float64 keeps sums over millions of rows exact enough.
    """
    arr = to_numpy(x)
    if arr.dtype == object or not (
        np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)
    ):
        raise InputError(f"'{name}' must be a numeric array, got dtype {arr.dtype}")
    if arr.ndim != 2:
        raise InputError(f"'{name}' must be a 2-D (rows, dims) matrix, got shape {arr.shape}")
    if arr.shape[0] < min_rows:
        raise InputError(f"'{name}' needs at least {min_rows} row(s), got {arr.shape[0]}")
    if arr.shape[1] == 0:
        raise InputError(f"'{name}' has 0 dimensions")
    if dim is not None and arr.shape[1] != dim:
        raise InputError(f"'{name}' has {arr.shape[1]} dimensions but the other modality has {dim}")
    arr = np.asarray(arr, dtype=np.float64)
    if not np.isfinite(arr).all():
        raise InputError(f"'{name}' contains NaN or inf")
    norms = np.linalg.norm(arr, axis=1, keepdims=True)
    if (norms == 0).any():
        raise InputError(f"'{name}' has all-zero rows (first: row {int(np.argmin(norms))})")
    return arr / norms


def as_pairs(
    X: Any, Y: Any, text_to_image: Any = None, min_rows: int = 1
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit rows of ``X`` and ``Y`` and the pairing: ``(X, Y, text_to_image)``."""
    X = unit_rows(X, "image_emb", min_rows=min_rows)
    Y = unit_rows(Y, "text_emb", dim=X.shape[1], min_rows=min_rows)
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
