"""The files of a streaming source and their per-format block readers: a :class:`Part` (one
modality's rows in one ``.npy`` or parquet file) and a :class:`Shard` (the parts that pair),
read in bounded row blocks (``.npy``: memory-mapped or ranged reads; parquet: record batches),
gathered by row, and described from a file's header (:func:`npy_part`, :func:`parquet_part`).
:class:`~modgap.io.source.Source` holds the shards and checks the rows read."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np

from .._array import check_image_index
from ..errors import InputError
from ._arrow import arrow_matrix
from ._errors import _header, reading
from ._fields import missing
from ._fs import FS

__all__ = [
    "Part",
    "Shard",
    "gather_part",
    "npy_part",
    "parquet_part",
    "read_image_index",
    "read_part",
]


@dataclasses.dataclass(frozen=True)
class Part:
    """One modality's rows in one file.

    Attributes
    ----------
    path : str
        The file (a local path or an fsspec URL).
    kind : {"npy", "parquet"}
    rows : int
    dim : int
    dtype : str
        Storage dtype (``float16``, ``float32``, ...).
    offset : int
        ``.npy``: bytes before the first row (the header).
    column : str or None
        parquet: the list column holding the vectors.
    """

    path: str
    kind: str
    rows: int
    dim: int
    dtype: str
    offset: int = 0
    column: str | None = None


@dataclasses.dataclass(frozen=True)
class Shard:
    """Shard ``i`` of a source: its image rows, its text rows and their metadata.

    ``name`` is the shard's id exactly as in the file names (``"03"`` for ``img_emb_03.npy``),
    so a writer can mirror it. ``image_start`` / ``text_start`` are the global row numbers of
    the shard's first image and first text.
    """

    index: int
    name: str
    image: Part | None
    text: Part | None
    image_start: int = 0
    text_start: int = 0
    metadata: str | None = None
    text_metadata: str | None = None

    @property
    def n_images(self) -> int:
        return 0 if self.image is None else self.image.rows

    @property
    def n_texts(self) -> int:
        return 0 if self.text is None else self.text.rows


# -- per-format readers --------------------------------------------------------------------
def read_part(fs: FS, part: Part, rows: int) -> Iterator[tuple[int, np.ndarray]]:
    """The raw rows of ``part`` in blocks of ``rows``: ``(first row, array in the storage
    dtype)``."""
    if part.kind == "npy":
        yield from _npy_blocks(fs, part, rows)
    else:
        yield from _parquet_blocks(fs, part, rows)


def _npy_blocks(fs: FS, part: Part, rows: int) -> Iterator[tuple[int, np.ndarray]]:
    dt = np.dtype(part.dtype)
    row_bytes = part.dim * dt.itemsize
    if fs.local:
        path = fs.local_path(part.path)
        for start in range(0, part.rows, rows):
            n = min(rows, part.rows - start)
            # a fresh map per block, dropped after it: pages of earlier blocks leave the
            # process's resident set instead of accumulating over the whole shard
            m = np.memmap(
                path,
                dtype=dt,
                mode="r",
                offset=part.offset + start * row_bytes,
                shape=(n, part.dim),
            )
            try:
                yield start, m
            finally:
                del m
        return
    with fs.open(part.path) as f:
        for start in range(0, part.rows, rows):
            n = min(rows, part.rows - start)
            f.seek(part.offset + start * row_bytes)
            buf = f.read(n * row_bytes)
            if len(buf) != n * row_bytes:
                raise InputError(
                    "the file is truncated (fewer rows than its header says)", part.path
                )
            yield start, np.frombuffer(buf, dtype=dt).reshape(n, part.dim)


def _parquet_blocks(fs: FS, part: Part, rows: int) -> Iterator[tuple[int, np.ndarray]]:
    import pyarrow.parquet as pq

    with fs.open(part.path) as f, reading(part.path, ".parquet"):
        pf = pq.ParquetFile(f)
        start = 0
        for batch in pf.iter_batches(batch_size=rows, columns=[part.column]):
            m = arrow_matrix(batch.column(0), part.column, part.path)
            yield start, m
            start += m.shape[0]


def gather_part(fs: FS, part: Part, local: np.ndarray) -> np.ndarray:
    """Rows ``local`` (sorted, unique) of ``part`` as a float32 array."""
    dt = np.dtype(part.dtype)
    out = np.empty((local.size, part.dim), dtype=np.float32)
    if local.size == 0:
        return out
    if part.kind == "npy" and fs.local:
        m = np.memmap(
            fs.local_path(part.path),
            dtype=dt,
            mode="r",
            offset=part.offset,
            shape=(part.rows, part.dim),
        )
        for j in range(0, local.size, 65536):
            out[j : j + 65536] = m[local[j : j + 65536]]
        del m
        return out
    if part.kind == "npy":
        # ranged reads of the 1 MiB windows that hold the wanted rows (no whole-file read)
        row_bytes = part.dim * dt.itemsize
        window = max(1, (1 << 20) // row_bytes)
        with fs.open(part.path) as f:
            for w in np.unique(local // window):
                sel = np.flatnonzero(local // window == w)
                first = int(w) * window
                n = min(window, part.rows - first)
                f.seek(part.offset + first * row_bytes)
                block = np.frombuffer(f.read(n * row_bytes), dtype=dt).reshape(n, part.dim)
                out[sel] = block[local[sel] - first]
        return out
    import pyarrow.parquet as pq

    with fs.open(part.path) as f, reading(part.path, ".parquet"):
        pf = pq.ParquetFile(f)
        bounds = np.cumsum(
            [0] + [pf.metadata.row_group(i).num_rows for i in range(pf.num_row_groups)]
        )
        group = np.searchsorted(bounds, local, side="right") - 1
        for g in np.unique(group):
            sel = np.flatnonzero(group == g)
            table = pf.read_row_group(int(g), columns=[part.column])
            m = arrow_matrix(table.column(0), part.column, part.path)
            out[sel] = m[local[sel] - bounds[g]]
    return out


def read_image_index(fs: FS, shard: Shard, n_images: int) -> np.ndarray:
    """The ``image_index`` column of a multi-caption shard's text metadata, checked."""
    import pyarrow.parquet as pq

    path = shard.text_metadata
    if path is None:
        raise InputError(f"shard {shard.name} has no text metadata with 'image_index'")
    with fs.open(path) as f, reading(path, ".parquet"):
        table = pq.read_table(f, columns=["image_index"])
        col = table.column(0)
        if col.null_count:
            raise InputError(f"column 'image_index' has {col.null_count} null value(s)", path)
        idx = np.asarray(col.to_numpy(), dtype=np.int64)
    if idx.size != shard.n_texts:
        raise InputError(
            f"{idx.size} text metadata rows but {shard.n_texts} text embeddings in this shard", path
        )
    return check_image_index(idx, n_images, "image_index", path)


def npy_part(fs: FS, path: str, name: str | None = None) -> Part:
    """A :class:`Part` from a ``.npy`` header, checked against the file (no rows read);
    ``name`` (``image_emb`` / ``text_emb``) is said in the messages when given."""
    what = f"'{name}' shard" if name else "shard"
    with reading(path, ".npy"):
        size = fs.size(path)
        if size == 0:
            raise InputError("the file is empty (0 bytes)", path)
        with fs.open(path) as fp:
            shape, dtype, header_len = _header(fp, path)
    if len(shape) != 2:
        raise InputError(f"{what} must be 2-D (rows, dims), got shape {shape}", path)
    if shape[0] == 0:
        raise InputError(f"{what} is empty (0 rows)", path)
    if shape[1] == 0:
        raise InputError(f"{what} has 0 dimensions", path)
    if dtype.kind != "f" or dtype.byteorder == ">":
        raise InputError(f"embeddings must be little-endian floats, got {dtype}", path)
    if shape[0] * shape[1] * dtype.itemsize > size - header_len:
        raise InputError("the file is truncated (fewer rows than its header says)", path)
    return Part(path, "npy", int(shape[0]), int(shape[1]), dtype.name, offset=header_len)


def parquet_part(fs: FS, path: str, column: str) -> tuple[Part, list[str]]:
    """A :class:`Part` for the list column ``column`` of a parquet file, and the file's column
    names (reads the footer and one row only)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    with fs.open(path) as f, reading(path, ".parquet"):
        pf = pq.ParquetFile(f)
        names = list(pf.schema_arrow.names)
        if column not in names:
            raise missing(column, names, path, "; name the column with image_key=/text_key=")
        t = pf.schema_arrow.field(column).type
        rows = pf.metadata.num_rows
        if rows == 0:  # before the first row is looked at: there is none
            raise InputError("no rows (the file holds a table of 0 rows)", path)
        if pa.types.is_fixed_size_list(t):
            dim, vt = t.list_size, t.value_type
        else:
            if not (pa.types.is_list(t) or pa.types.is_large_list(t)):
                raise InputError(f"column '{column}' has type {t}; expected a list of floats", path)
            first = next(pf.iter_batches(batch_size=1, columns=[column])).column(0)[0]
            if not first.is_valid:
                raise InputError(f"column '{column}' has a null first row", path)
            dim, vt = len(first), t.value_type
    return Part(
        path, "parquet", int(rows), int(dim), np.dtype(vt.to_pandas_dtype()).name, column=column
    ), names
