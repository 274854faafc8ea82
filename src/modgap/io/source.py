"""Streaming embedding sources: shards of image and text rows, read in bounded row blocks.

A :class:`Source` is a small, picklable description of the data — file paths, row counts,
dtypes and the pairing rule — never the data. Readers open a shard when a kernel needs it, so
the same :class:`Source` travels to Dask workers and each reads its own shards:

* ``.npy`` shards on a local disk are memory-mapped one row block at a time (the map is
  dropped after the block, so mapped pages do not pile up in the resident memory of a long
  pass); on other filesystems (``memory://``, ``s3://``) blocks come from ranged reads.
* parquet shards are read one record batch at a time (an ``embedding`` list column).
* float16 stays float16 on disk; a block is widened to float32 when it is read.

Rows are checked as they are read (finite, non-zero; errors name the shard file and the row)
and rows whose norm is off 1 by more than 10⁻³ are L2-normalised in float32, row by row — the
rule :func:`modgap._array.as_float_matrix` applies to a whole matrix, made independent of the
block size.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from typing import Any

import numpy as np

from .._array import check_image_index, checked_row_norms, normalize_off_rows
from ..errors import InputError
from ._arrow import arrow_matrix
from ._errors import _header, reading
from ._fields import missing
from ._fs import FS, open_fs

__all__ = ["Part", "Shard", "Source", "local_fingerprint", "prepare_rows"]


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


@dataclasses.dataclass(frozen=True)
class Source:
    """A sharded embedding set on some filesystem.

    Attributes
    ----------
    path : str
        What the user gave (named in messages and provenance).
    format : str
        The registry name of the format (``clip-retrieval``, ``npy``, ``parquet``).
    shards : tuple of Shard
        In clip-retrieval order (numeric order of the shard ids).
    pairing : {"rows", "index", None}
        ``rows``: text row ``i`` of a shard describes image row ``i`` of the same shard;
        ``index``: each text names its image by a global ``image_index`` (metadata column, or
        ``text_to_image``); ``None``: unpaired.
    layout : dict
        What a writer needs to mirror the input (shard format, metadata columns, extra files).
    storage_options : dict
        Passed to fsspec.
    """

    path: str
    format: str
    shards: tuple[Shard, ...]
    pairing: str | None
    layout: dict = dataclasses.field(default_factory=dict)
    storage_options: dict = dataclasses.field(default_factory=dict)
    text_to_image: np.ndarray | None = dataclasses.field(default=None, repr=False)

    # -- sizes ----------------------------------------------------------------------------
    @property
    def n_images(self) -> int:
        return sum(s.n_images for s in self.shards)

    @property
    def n_texts(self) -> int:
        return sum(s.n_texts for s in self.shards)

    @property
    def dim(self) -> int:
        for s in self.shards:
            for p in (s.image, s.text):
                if p is not None:
                    return p.dim
        return 0

    @property
    def has_pairs(self) -> bool:
        return self.pairing is not None

    @property
    def nbytes(self) -> int:
        """Bytes of embeddings on disk."""
        return sum(
            p.rows * p.dim * np.dtype(p.dtype).itemsize
            for s in self.shards
            for p in (s.image, s.text)
            if p is not None
        )

    @property
    def float32_bytes(self) -> int:
        """Bytes the embeddings take in memory as float32 (what :func:`read_embeddings`
        would allocate)."""
        return 4 * self.dim * (self.n_images + self.n_texts)

    def describe(self) -> dict:
        return {
            "n_images": self.n_images,
            "n_texts": self.n_texts,
            "dim": self.dim,
            "paired": self.has_pairs,
            "shards": len(self.shards),
            "source": self.path,
        }

    def fs(self) -> FS:
        return open_fs(self.path, self.storage_options)

    def part(self, shard: Shard, modality: str) -> Part | None:
        return shard.image if modality == "image" else shard.text

    def starts(self, modality: str) -> np.ndarray:
        """Global row number of each shard's first row, plus the total at the end."""
        counts = [s.n_images if modality == "image" else s.n_texts for s in self.shards]
        return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)

    # -- reading --------------------------------------------------------------------------
    def blocks(self, shard: Shard, modality: str, rows: int) -> Iterator[tuple[int, np.ndarray]]:
        """``(first row within the shard, float32 block)`` for the shard's rows of one
        modality, ``rows`` at a time, checked and row-normalised (:func:`prepare_rows`)."""
        part = self.part(shard, modality)
        if part is None or part.rows == 0:
            return
        name = "image_emb" if modality == "image" else "text_emb"
        for start, raw in read_part(self.fs(), part, max(1, int(rows))):
            yield start, prepare_rows(raw, name, part.path, start)

    def raw_blocks(
        self, shard: Shard, modality: str, rows: int
    ) -> Iterator[tuple[int, np.ndarray, str]]:
        """``(first row, block in the storage dtype, file)``: unchecked; the moment kernel
        checks and normalises in float64 itself (:func:`modgap.stream.kernels.unit_block`)."""
        part = self.part(shard, modality)
        if part is None or part.rows == 0:
            return
        for start, raw in read_part(self.fs(), part, max(1, int(rows))):
            yield start, raw, part.path

    def shard_pairs(self, shard: Shard) -> np.ndarray | None:
        """Global image index of each text of ``shard`` (``None`` when unpaired)."""
        if self.pairing is None:
            return None
        if self.pairing == "rows":
            return np.arange(shard.image_start, shard.image_start + shard.n_texts)
        if self.text_to_image is not None:
            return self.text_to_image[shard.text_start : shard.text_start + shard.n_texts]
        return read_image_index(self.fs(), shard, self.n_images)

    def pairs(self) -> np.ndarray | None:
        """``text_to_image`` of the whole set (int64, one per text), or ``None``."""
        if self.pairing is None:
            return None
        if self.text_to_image is not None:
            return np.asarray(self.text_to_image, dtype=np.int64)
        return np.concatenate([self.shard_pairs(s) for s in self.shards]).astype(np.int64)

    def gather(self, modality: str, index: Any) -> np.ndarray:
        """Rows at global positions ``index`` (any order, repeats allowed), float32, checked
        and row-normalised; only the shards that hold them are opened."""
        idx = np.asarray(index, dtype=np.int64).reshape(-1)
        n = self.n_images if modality == "image" else self.n_texts
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise InputError(f"row index out of range (0..{n - 1})", self.path)
        out = np.empty((idx.size, self.dim), dtype=np.float32)
        starts = self.starts(modality)
        which = np.searchsorted(starts, idx, side="right") - 1
        fs = self.fs()
        name = "image_emb" if modality == "image" else "text_emb"
        for s in np.unique(which):
            sel = np.flatnonzero(which == s)
            part = self.part(self.shards[int(s)], modality)
            local = idx[sel] - starts[s]
            uniq, inv = np.unique(local, return_inverse=True)
            rows = gather_part(fs, part, uniq)
            for j in range(0, uniq.size, 65536):
                rows[j : j + 65536] = prepare_rows(
                    rows[j : j + 65536], name, part.path, uniq[j : j + 65536]
                )
            out[sel] = rows[inv]
        return out


# -- the checks and the normalisation of a block -------------------------------------------
def prepare_rows(raw: np.ndarray, name: str, path: str, first: Any = 0) -> np.ndarray:
    """A float32 copy of ``raw`` with NaN/inf and all-zero rows refused (naming ``path`` and
    the row: ``first`` is the shard row of ``raw[0]``, or an array of the shard rows) and rows
    whose norm is off 1 by more than 10⁻³ divided by it (float32)."""
    arr = (
        np.array(raw, dtype=np.float32, copy=True)
        if raw.dtype == np.float32
        else (np.asarray(raw, dtype=np.float32))
    )
    if not arr.flags.writeable:
        arr = arr.copy()

    def where(bad: np.ndarray) -> str:
        i = int(bad[0])
        shard_row = int(first[i]) if isinstance(first, np.ndarray) else int(first) + i
        return f"row {shard_row} of this shard"

    norms = checked_row_norms(arr, name, path, where)
    return normalize_off_rows(arr, norms, copy=False)[0]


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


def npy_part(fs: FS, path: str) -> Part:
    """A :class:`Part` from a ``.npy`` header, checked against the file (no rows read)."""
    with reading(path, ".npy"):
        size = fs.size(path)
        if size == 0:
            raise InputError("the file is empty (0 bytes)", path)
        with fs.open(path) as fp:
            shape, dtype, header_len = _header(fp, path)
    if len(shape) != 2:
        raise InputError(f"shard must be 2-D (rows, dims), got shape {shape}", path)
    if shape[0] == 0:
        raise InputError("shard is empty (0 rows)", path)
    if shape[1] == 0:
        raise InputError("shard has 0 dimensions", path)
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


def local_fingerprint(source: Source) -> list:
    """``(file, size, mtime)`` of every embedding and metadata file: what a resumed job
    compares to know that its input did not change."""
    fs = source.fs()
    out = []
    for s in source.shards:
        for p in (
            s.image.path if s.image else None,
            s.text.path if s.text else None,
            s.metadata,
            s.text_metadata,
        ):
            if p is not None:
                out.append([os.path.basename(p), fs.size(p), fs.mtime(p)])
    return out
