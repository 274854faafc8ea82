"""Input handling shared by the measures: validation and L2 normalisation in float64."""

from __future__ import annotations

from typing import Any

import numpy as np

from .._array import to_numpy
from ..errors import InputError

__all__ = ["as_pairs", "pairing", "unit_rows"]


def unit_rows(x: Any, name: str, dim: int | None = None, min_rows: int = 1) -> np.ndarray:
    """Validate an embedding matrix and return its rows L2-normalised, as float64.

    Every measure works on the unit sphere (DESIGN.md: "embeddings are L2-normalised first"),
    so rows are normalised silently here; float64 keeps sums over millions of rows exact enough.
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


def pairing(text_to_image: Any, n_images: int, n_texts: int) -> np.ndarray:
    """Return the ``(n_texts,)`` index of each text's image; ``None`` means row ``i`` <-> ``i``."""
    if text_to_image is None:
        if n_images != n_texts:
            raise InputError(
                f"{n_images} images but {n_texts} texts: give 'text_to_image' "
                "(one image index per text) to pair them"
            )
        return np.arange(n_texts)
    t2i = to_numpy(text_to_image)
    if t2i.ndim != 1 or t2i.shape[0] != n_texts:
        raise InputError(f"'text_to_image' must have shape ({n_texts},), got {t2i.shape}")
    if t2i.size and not np.issubdtype(t2i.dtype, np.integer):
        raise InputError("'text_to_image' must hold integer image indices")
    t2i = t2i.astype(np.int64)
    if t2i.size and (t2i.min() < 0 or t2i.max() >= n_images):
        raise InputError(f"'text_to_image' has indices outside [0, {n_images})")
    return t2i


def as_pairs(
    X: Any, Y: Any, text_to_image: Any = None, min_rows: int = 1
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit rows of ``X`` and ``Y`` and the pairing: ``(X, Y, text_to_image)``."""
    X = unit_rows(X, "image_emb", min_rows=min_rows)
    Y = unit_rows(Y, "text_emb", dim=X.shape[1], min_rows=min_rows)
    return X, Y, pairing(text_to_image, X.shape[0], Y.shape[0])
