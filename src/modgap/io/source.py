"""Streaming embedding sources: shards of image and text rows, read in bounded row blocks.

A :class:`Source` is a small, picklable description of the data — file paths, row counts,
dtypes and the pairing rule — never the data. Readers open a shard when a kernel needs it, so
the same :class:`Source` travels to Dask workers and each reads its own shards:

* ``.npy`` shards on a local disk are memory-mapped one row block at a time (the map is
  dropped after the block, so mapped pages do not pile up in the resident memory of a long
  pass); on other filesystems (``memory://``, ``s3://``) blocks come from ranged reads.
* parquet shards are read one record batch at a time (an ``embedding`` list column).
* float16 stays float16 on disk; a block is widened to float32 when it is read.

Rows are checked and prepared as they are read by the one row preparation,
:func:`modgap._array.prepare_rows` (finite, non-zero; errors name the shard file and the row;
rows whose norm is off 1 by more than 10⁻³ divided in float32), row by row, so a row's bits do
not depend on the block size or the route.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from .._array import prepare_rows
from ..errors import InputError
from ._errors import reading
from ._fs import FS, open_fs
from .parts import (  # noqa: F401 - Part, Shard and the block readers, re-exported
    Part,
    Shard,
    gather_part,
    npy_part,
    parquet_part,
    read_image_index,
    read_part,
)

__all__ = ["Part", "Shard", "Source", "block_rows", "local_fingerprint", "shard_row"]


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
        modality, ``rows`` at a time, checked and row-normalised (:func:`block_rows`)."""
        part = self.part(shard, modality)
        if part is None or part.rows == 0:
            return
        name = "image_emb" if modality == "image" else "text_emb"
        for start, raw in read_part(self.fs(), part, max(1, int(rows))):
            yield start, block_rows(raw, name, part.path, start)

    def raw_blocks(
        self, shard: Shard, modality: str, rows: int
    ) -> Iterator[tuple[int, np.ndarray, str]]:
        """``(first row, block in the storage dtype, file)``: unchecked; the moment kernel
        checks and normalises in float64 itself (``prepare_rows(..., unit="exact")``)."""
        part = self.part(shard, modality)
        if part is None or part.rows == 0:
            return
        for start, raw in read_part(self.fs(), part, max(1, int(rows))):
            yield start, raw, part.path

    def read_all(self, modality: str, rows: int = 1 << 16) -> np.ndarray:
        """Every row of one modality as one float32 matrix, read block by block
        (:func:`read_part`) straight into its place and checked shard by shard (errors name
        the shard file and its row); not normalised: the in-memory set does that, with its
        notice. A single local float32 ``.npy`` part is handed back memory-mapped, not
        copied."""
        name = "image_emb" if modality == "image" else "text_emb"
        parts = [self.part(s, modality) for s in self.shards]
        fs = self.fs()
        one = parts[0] if len(parts) == 1 else None
        if one is not None and one.kind == "npy" and one.dtype == "float32" and fs.local:
            shape = (one.rows, one.dim)
            m = np.memmap(fs.local_path(one.path), np.float32, "r", one.offset, shape)
            return prepare_rows(m, name, one.path, unit="checked")
        out = np.empty((sum(p.rows for p in parts), self.dim), dtype=np.float32)
        g0 = 0
        for part in parts:
            shard = out[g0 : g0 + part.rows]
            for start, raw in read_part(fs, part, max(1, int(rows))):
                with reading(part.path, "shard"):
                    shard[start : start + raw.shape[0]] = raw
            # checked whole, so a bad row is named by its row in the shard
            prepare_rows(shard, name, part.path, unit="checked")
            g0 += part.rows
        return out

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
                rows[j : j + 65536] = block_rows(
                    rows[j : j + 65536], name, part.path, uniq[j : j + 65536]
                )
            out[sel] = rows[inv]
        return out


# -- where a bad row is ------------------------------------------------------------------
def shard_row(first: Any = 0) -> Callable[[np.ndarray], str]:
    """The ``where`` of :func:`modgap._array.prepare_rows` for a block of a shard: names the
    shard row of the first bad row (``first`` is the shard row of the block's first row, or an
    array of the shard rows of a gathered block)."""

    def where(bad: np.ndarray) -> str:
        i = int(bad[0])
        row = int(first[i]) if isinstance(first, np.ndarray) else int(first) + i
        return f"row {row} of this shard"

    return where


def block_rows(raw: np.ndarray, name: str, path: str, first: Any = 0) -> np.ndarray:
    """A block as :meth:`Source.blocks` yields it: :func:`modgap._array.prepare_rows` (the
    stored rows) of a float32 copy, so no block keeps a memory map or a reader's buffer alive."""
    return prepare_rows(np.array(raw, dtype=np.float32), name, path, where=shard_row(first))


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
