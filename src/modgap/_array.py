"""Array helpers: numpy/torch conversion, validation and normalisation, used everywhere."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .errors import InputError, notice

__all__ = [
    "NORM_TOL",
    "UNIT_MODES",
    "UNIT_TOL",
    "as_int_vector",
    "check_image_index",
    "check_pairing",
    "l2_normalize",
    "prepare_rows",
    "to_numpy",
    "to_torch",
]


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


#: how far a row's norm may be off 1 and the row still count as unit, at the precision the
#: rows are asked in (one rule: a row within the tolerance of its precision is kept, any other
#: is divided by its norm). Stored rows (float32 holding what the file holds): 10⁻³, the
#: resolution of float16 — float16 storage (most clip-retrieval folders) puts rows up to ~6e-4
#: off unit, rows normalised in float32 are within ~1e-7, so both keep their bits (and every
#: number computed from them) and only rows that were never normalised are divided. Float32
#: unit rows (what retrieval, hubness and the scans score): 10⁻⁶, a few float32 round-offs —
#: a row normalised in float32 is kept as it is, a float16 row is divided. Float64 unit rows
#: (the measures' formulas): 0, every row is divided.
UNIT_TOL = {"stored": 1e-3, "float32": 1e-6, "float64": 0.0}
NORM_TOL = UNIT_TOL["stored"]

#: what :func:`prepare_rows` makes of the rows
UNIT_MODES = ("checked", "stored", "exact")


def prepare_rows(
    x: Any,
    name: str,
    source: str | None = None,
    *,
    unit: str = "stored",
    dtype: Any = np.float32,
    dim: int | None = None,
    min_rows: int = 1,
    where: Callable[[np.ndarray], str] | None = None,
    notice_divided: bool = False,
    sq_norms: bool = False,
) -> Any:
    r"""Check an embedding matrix and make its rows unit-norm: the one row preparation of
    readers, sources, sets, measures, tasks and the streamed kernels.

    Checks, each a one-line :class:`~modgap.errors.InputError` naming ``source`` (and, through
    ``where(bad_rows)``, where the bad rows are; default: how many and the first row number):
    object or non-numeric dtype, not 2-D, fewer than ``min_rows`` rows, 0 columns, not ``dim``
    columns, NaN/inf, all-zero rows.

    Then, by ``unit``:

    * ``"checked"``: the float32 rows, unchanged (a set built with ``normalize=False``).
    * ``"stored"``: the rows a set holds (float32): a row :math:`x` with
      :math:`|\lVert x\rVert - 1| > 10^{-3}` (:data:`NORM_TOL`) is divided by its norm in
      float32; other rows are kept as stored (float16 files and float32-normalised rows keep
      their bits). ``notice_divided`` says with a notice when rows were divided.
    * ``"exact"``: the stored rows on the unit sphere at the precision of ``dtype``
      (:data:`UNIT_TOL`). float64, for the measures, whose formulas are defined on unit vectors
      (docs/measures.md) and whose sums over millions of rows need float64: every row divided
      by its float64 norm, :math:`\hat x = x / \lVert x\rVert_2`. float32, for the scoring
      kernels (retrieval, hubness, corrections, neighbour scans): a row within 10⁻⁶ of unit is
      already unit at float32 precision and kept as it is (rows normalised in float32 keep
      their bits); any other row (float16 storage, unnormalised rows) becomes the float32
      number nearest each coordinate of :math:`\hat x`. Either way a row's bits depend on
      nothing but the row (not its block, the BLAS or torch). A float64 input asked for
      float64 rows is divided in float64 throughout. ``sq_norms`` (float64 only) returns
      ``(stored rows, squared norms)`` undivided, for kernels that fold the division into a
      product.

    The same row gets the same bits on every route (a whole matrix in memory, streamed
    blocks of any size, gathered rows): every rule is row by row.
    """
    if unit not in UNIT_MODES:
        raise ValueError(f"unit must be one of {UNIT_MODES}, got {unit!r}")
    dtype = np.dtype(dtype)
    arr = to_numpy(x)
    if arr.dtype == object:
        raise InputError(f"'{name}' is an object array; save plain numeric arrays", source)
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise InputError(f"'{name}' has non-numeric dtype {arr.dtype}", source)
    if arr.ndim != 2:
        raise InputError(
            f"'{name}' must be a 2-D (rows, dims) matrix, got shape {tuple(arr.shape)}", source
        )
    if arr.shape[0] < min_rows:
        if min_rows == 1:
            raise InputError(f"'{name}' is empty (0 rows)", source)
        raise InputError(f"'{name}' needs at least {min_rows} row(s), got {arr.shape[0]}", source)
    if arr.shape[1] == 0:
        raise InputError(f"'{name}' has 0 dimensions", source)
    if dim is not None and arr.shape[1] != dim:
        raise InputError(
            f"'{name}' has {arr.shape[1]} dimensions but {dim} were expected "
            "(image and text embeddings must come from the same joint space)",
            source,
        )
    if unit == "exact":
        if dtype == np.float64 or arr.shape[0] <= _CHUNK:
            return _unit_rows(arr, name, source, where, dtype, sq_norms)
        # float32 rows of a large matrix: checked whole, then made a chunk at a time so the
        # float64 temporaries stay bounded (the rules are row by row: the same bits)
        _checked(np.einsum("ij,ij->i", arr, arr, dtype=np.float64), name, source, where)
        out = np.empty(arr.shape, dtype=dtype)
        for s in range(0, arr.shape[0], _CHUNK):
            out[s : s + _CHUNK] = _unit_rows(arr[s : s + _CHUNK], name, source, where, dtype)
        return out
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    # squared row norms accumulated in float64 without an (n, d) temporary (np.linalg.norm
    # would allocate one, doubling the memory of a large memory-mapped input)
    sq = _checked(np.einsum("ij,ij->i", arr, arr, dtype=np.float64), name, source, where)
    if unit == "stored" and arr.shape[0]:
        arr, n_off = _divide_off(arr, np.sqrt(sq))
        if n_off and notice_divided:
            notice(f"{source + ': ' if source else ''}'{name}' rows were L2-normalised")
    return arr


#: rows per float64 temporary when float32 unit rows of a large matrix are made
_CHUNK = 1 << 16


def _unit_rows(
    arr: np.ndarray,
    name: str,
    source: str | None,
    where: Callable[[np.ndarray], str] | None,
    dtype: np.dtype,
    sq_norms: bool = False,
) -> Any:
    """``unit="exact"`` of :func:`prepare_rows` on checked-shape rows."""
    x64, sq = _exact_rows(arr, name, source, where)
    if sq_norms:
        return x64, sq
    norms = np.sqrt(sq)
    if dtype == np.float64:
        x64 /= norms[:, None]
        return x64
    # float32: rows already unit at float32 precision keep their (stored) bits
    keep = np.abs(norms - 1) <= UNIT_TOL["float32"]
    out = x64.astype(np.float32)
    fix = np.flatnonzero(~keep)
    out[fix] = x64[fix] / norms[fix, None]
    return out if dtype == np.float32 else out.astype(dtype)


def _checked(
    sq: np.ndarray, name: str, source: str | None, where: Callable[[np.ndarray], str] | None
) -> np.ndarray:
    """``sq`` (squared row norms), refusing NaN/inf and all-zero rows in one line. A NaN/inf
    entry makes its row's sum non-finite; finite float32 squares cannot overflow float64."""
    finite = np.isfinite(sq)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        at = where(bad) if where else f"{bad.size} row(s) (first: row {bad[0]})"
        raise InputError(f"'{name}' has NaN/inf in {at}; drop or re-embed those rows", source)
    zero = sq == 0
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
    return sq


def _divide_off(arr: np.ndarray, norms: np.ndarray) -> tuple[np.ndarray, int]:
    """The stored rule on checked float32 rows: rows off 1 by more than :data:`NORM_TOL`
    divided by their norm in float32 (a copy when some are); and how many were."""
    off = np.abs(norms - 1) > NORM_TOL
    n_off = int(off.sum())
    if n_off:
        arr = arr.copy()
        arr[off] /= norms[off, None].astype(np.float32)
    return arr, n_off


def _exact_rows(
    arr: np.ndarray, name: str, source: str | None, where: Callable[[np.ndarray], str] | None
) -> tuple[np.ndarray, np.ndarray]:
    """The stored rows in float64 and their squared norms, in one float64 pass: widening
    float16/float32 to float64 is exact, so only the rows the stored rule divides go through
    float32 (a float64 input is divided in float64)."""
    wide = arr.dtype == np.float64
    x = np.array(arr, dtype=np.float64, copy=True)
    sq = _checked(np.einsum("ij,ij->i", x, x), name, source, where)
    off = np.flatnonzero(np.abs(np.sqrt(sq) - 1) > NORM_TOL)
    if off.size:
        if wide:
            x[off] /= np.sqrt(sq[off])[:, None]
        else:
            part = np.ascontiguousarray(arr[off], dtype=np.float32)
            x[off] = _divide_off(
                part, np.sqrt(np.einsum("ij,ij->i", part, part, dtype=np.float64))
            )[0]
        sq[off] = np.einsum("ij,ij->i", x[off], x[off])
    return x, sq


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
