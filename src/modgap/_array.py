"""Array helpers: numpy/torch conversion, validation and normalisation, used everywhere."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .errors import InputError, notice

__all__ = [
    "NORM_TOL",
    "as_float_matrix",
    "as_int_vector",
    "check_image_index",
    "check_pairing",
    "checked_row_norms",
    "l2_normalize",
    "normalize_off_rows",
    "to_numpy",
    "to_torch",
]

#: how far a row's norm may be off 1 before it is divided by it (float32 rows of float16 files
#: are off by up to ~5e-4 and are kept as stored)
NORM_TOL = 1e-3


def to_numpy(x: Any) -> np.ndarray:
    """Return ``x`` as a numpy array (torch tensors are detached and moved to CPU)."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu()
        if str(x.dtype) in ("torch.float16", "torch.bfloat16"):
            x = x.float()
        return x.numpy()
    return np.asarray(x)


def to_torch(x: Any, device: str | None = None, dtype: Any = None):
    """Return ``x`` as a torch tensor on ``device`` (no copy when already there).

    Inputs are often read-only (memory-mapped ``.npy``, Arrow buffers); torch warns that a
    tensor sharing such memory could be written to. modgap never writes to its input
    tensors, so that warning would only be noise for the user and is not shown."""
    import warnings

    import torch

    if isinstance(x, torch.Tensor):
        t = x
    else:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            t = torch.from_numpy(np.ascontiguousarray(x))
    if dtype is not None or device is not None:
        t = t.to(device=device, dtype=dtype)
    return t


def l2_normalize(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Divide each row by its Euclidean norm (rows of zeros are left as zeros)."""
    x = np.asarray(x)
    n = np.linalg.norm(x, axis=axis, keepdims=True)
    return x / np.where(n == 0, 1, n)


def as_float_matrix(
    x: Any,
    name: str,
    source: str | None = None,
    *,
    dim: int | None = None,
    normalize: bool = True,
    allow_empty: bool = False,
) -> np.ndarray:
    """Validate an embedding matrix and return it as a C-contiguous float32 array.

    Checks, each with a one-line :class:`~modgap.errors.InputError` naming ``source``:
    object dtype, wrong number of axes, empty, wrong width, NaN/inf, all-zero rows. Rows whose
    norm differs from 1 are L2-normalised with a notice when ``normalize`` is true.
    """
    arr = to_numpy(x)
    if arr.dtype == object:
        raise InputError(f"'{name}' is an object array; save plain numeric arrays", source)
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise InputError(f"'{name}' has non-numeric dtype {arr.dtype}", source)
    if arr.ndim != 2:
        raise InputError(
            f"'{name}' must be a 2-D (rows, dims) matrix, got shape {tuple(arr.shape)}", source
        )
    if arr.shape[0] == 0 and not allow_empty:
        raise InputError(f"'{name}' is empty (0 rows)", source)
    if arr.shape[1] == 0:
        raise InputError(f"'{name}' has 0 dimensions", source)
    if dim is not None and arr.shape[1] != dim:
        raise InputError(
            f"'{name}' has {arr.shape[1]} dimensions but {dim} were expected "
            "(image and text embeddings must come from the same joint space)",
            source,
        )
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    norms = checked_row_norms(arr, name, source)
    if normalize and arr.shape[0]:
        arr, n_off = normalize_off_rows(arr, norms, copy=True)
        if n_off:
            notice(f"{source + ': ' if source else ''}'{name}' rows were L2-normalised")
    return arr


def normalize_off_rows(
    arr: np.ndarray, norms: np.ndarray, copy: bool = True
) -> tuple[np.ndarray, int]:
    """Divide, in float32, the rows of ``arr`` whose norm is off 1 by more than
    ``NORM_TOL`` (10⁻³) by that norm; other rows are kept as stored. The one row preparation
    of every route (in-memory readers and streamed blocks alike), so a reducer fitted on a
    set in memory and one fitted shard by shard see the same float32 rows. Returns the rows
    (a copy when some change and ``copy``) and how many changed."""
    off = np.abs(norms - 1) > NORM_TOL
    n_off = int(off.sum())
    if n_off:
        if copy:
            arr = arr.copy()
        arr[off] /= norms[off, None].astype(np.float32)
    return arr, n_off


def checked_row_norms(
    arr: np.ndarray,
    name: str,
    source: str | None,
    where: Callable[[np.ndarray], str] | None = None,
) -> np.ndarray:
    """Row norms of a float32 matrix (float64), refusing NaN/inf and all-zero rows with a
    one-line :class:`~modgap.errors.InputError` naming ``source``; ``where(bad_rows)`` says
    where the bad rows are (default: how many, and the first row number)."""
    # squared row norms accumulated in float64 without an (n, d) temporary (np.linalg.norm
    # would allocate one, doubling the memory of a large memory-mapped input); a NaN/inf entry
    # makes its row's sum non-finite, and finite float32 squares cannot overflow float64
    sq = np.einsum("ij,ij->i", arr, arr, dtype=np.float64)
    finite = np.isfinite(sq)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        at = where(bad) if where else f"{bad.size} row(s) (first: row {bad[0]})"
        raise InputError(f"'{name}' has NaN/inf in {at}; drop or re-embed those rows", source)
    norms = np.sqrt(sq)
    zero = norms == 0
    if zero.any():
        bad = np.flatnonzero(zero)
        what = (
            f"an all-zero row ({where(bad)})"
            if where
            else f"{bad.size} all-zero row(s) (first: row {bad[0]})"
        )
        raise InputError(
            f"'{name}' has {what}; a zero vector has no direction, drop those rows", source
        )
    return norms


def as_int_vector(x: Any, name: str, n: int, source: str | None = None) -> np.ndarray:
    """Validate a ``(n,)`` vector of integers (floats holding whole numbers are accepted, as
    parquet and JSON often store them) and return it as int64."""
    arr = to_numpy(x)
    if arr.dtype == object:
        raise InputError(f"'{name}' is an object array; save plain integers", source)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise InputError(f"'{name}' must have shape ({n},), got {tuple(arr.shape)}", source)
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise InputError(f"'{name}' must hold integers", source)
    return arr.astype(np.int64)


def check_pairing(
    text_to_image: Any, n_images: int, n_texts: int, source: str | None = None
) -> np.ndarray:
    """The image index of every text, validated: ``(n_texts,)`` int64 in ``[0, n_images)``.

    ``None`` means row ``i`` of the texts describes row ``i`` of the images, which needs equal
    counts. The one pairing check used by the data model, the measures and the tasks.
    """
    if text_to_image is None:
        if n_images != n_texts:
            raise InputError(
                f"{n_images} images but {n_texts} texts: row-by-row pairing needs equal counts; "
                "give 'text_to_image' (one image index per text)",
                source,
            )
        return np.arange(n_texts, dtype=np.int64)
    t2i = as_int_vector(text_to_image, "text_to_image", n_texts, source)
    return check_image_index(t2i, n_images, "text_to_image", source)


def check_image_index(
    index: np.ndarray, n_images: int, name: str, source: str | None = None
) -> np.ndarray:
    """``index`` (an image index per text) unchanged when every entry is in ``[0, n_images)``;
    else a one-line :class:`~modgap.errors.InputError` with the first text outside."""
    outside = (index < 0) | (index >= n_images)
    if outside.any():
        bad = int(np.flatnonzero(outside)[0])
        raise InputError(
            f"'{name}' points outside the {n_images} images "
            f"(text {bad} -> {int(index[bad])}); indices must be in [0, {n_images})",
            source,
        )
    return index
