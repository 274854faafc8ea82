"""Arrow list columns as numpy matrices, shared by the parquet reader and the shard sources."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import InputError
from ._errors import reading

__all__ = ["arrow_matrix"]


def arrow_matrix(column: Any, name: str, source: str) -> np.ndarray:
    """A list / fixed-size-list Arrow column as a (rows, d) numpy matrix (no per-row Python)."""
    import pyarrow as pa

    col = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    t = col.type
    if not (pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)):
        raise InputError(
            f"column '{name}' has type {t}; expected a list or fixed-size-list of floats", source
        )
    if col.null_count:
        raise InputError(f"column '{name}' has {col.null_count} null row(s)", source)
    n = len(col)
    if pa.types.is_fixed_size_list(t):
        d = t.list_size
    else:
        offsets = col.offsets.to_numpy()
        lengths = np.diff(offsets)
        d = int(lengths[0]) if n else 0
        if n and (lengths != d).any():
            bad = int(np.flatnonzero(lengths != d)[0])
            raise InputError(
                f"column '{name}': rows have different lengths (row 0 has {d}, row {bad} has "
                f"{int(lengths[bad])})",
                source,
            )
    values = col.flatten()
    if values.null_count:
        raise InputError(f"column '{name}' has null values inside its vectors", source)
    if not (pa.types.is_floating(values.type) or pa.types.is_integer(values.type)):
        raise InputError(f"column '{name}' holds {values.type}, expected numbers", source)
    with reading(source, ".parquet"):
        return values.to_numpy(zero_copy_only=False).reshape(n, d)
