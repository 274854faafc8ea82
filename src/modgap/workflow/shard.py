"""One shard through a saved reducer, written into the staging folder of a reduce job.

:func:`transform_kernel` is the task the shard-by-shard writer (:mod:`.write`) hands to an
engine, one call per shard; like every kernel it is a module-level function of plain records
(a :class:`~modgap.stream.Source`, a job dict of absolute paths), so any engine can ship it.
Every file lands by rename (:func:`modgap.files.atomic_path`) and the shard's marker is written
last, listing its files with their sizes.
"""

from __future__ import annotations

import json
import os
import shutil
from functools import lru_cache
from typing import Any

import numpy as np

from ..compute import Compute
from ..files import atomic_path
from ..io.parquet import arrow_matrix
from ..io.source import Shard, Source, block_rows
from ..reducers import load_reducer

__all__ = ["transform_kernel"]


@lru_cache(maxsize=4)
def _load_reducer(path: str, sha: str) -> Any:
    del sha  # part of the cache key: a rewritten model is loaded again
    return load_reducer(path)


def _atomic_npy(path: str, blocks, rows: int, dim: int, dtype: np.dtype) -> None:
    from numpy.lib.format import open_memmap

    with atomic_path(path, ".npy") as tmp:
        m = open_memmap(tmp, mode="w+", dtype=dtype, shape=(rows, dim))
        for start, z in blocks:
            m[start : start + z.shape[0]] = z
        m.flush()
        del m


def _atomic_parquet(path: str, fs, part, transform, rows: int, dtype: np.dtype) -> None:
    """The input parquet shard with its ``embedding`` column replaced (other columns kept),
    batch by batch."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    with atomic_path(path, ".parquet") as tmp, fs.open(part.path) as f:
        writer = None
        try:
            start = 0
            for batch in pq.ParquetFile(f).iter_batches(batch_size=rows):
                table = pa.Table.from_batches([batch])
                col = table.column_names.index(part.column)
                m = block_rows(
                    arrow_matrix(table.column(col), part.column, part.path), "emb", part.path, start
                )
                z = np.ascontiguousarray(transform(m), dtype=dtype)
                arr = pa.FixedSizeListArray.from_arrays(pa.array(z.reshape(-1)), z.shape[1])
                table = table.set_column(col, part.column, arr)
                if writer is None:
                    writer = pq.ParquetWriter(str(tmp), table.schema)
                writer.write_table(table)
                start += m.shape[0]
        finally:
            if writer is not None:
                writer.close()


def _copy_atomic(fs, src: str, dst: str) -> None:
    with atomic_path(dst) as tmp, fs.open(src) as f, open(tmp, "wb") as g:
        shutil.copyfileobj(f, g, 1 << 22)


def transform_kernel(shard: Shard, source: Source, job: dict, compute: Compute) -> dict:
    """Transform shard ``shard`` with the saved reducer ``job["model"]`` and write it into the
    staging folder ``job["staging"]`` under the input's own names: embeddings in
    ``job["image_dtype"]`` / ``job["text_dtype"]``, metadata files copied byte for byte. Each
    file lands by rename; a marker ``.done/{name}`` is written last, so a resumed job skips
    exactly the shards that are complete. The marker lists the files behind it with their
    sizes, so a resumed job also redoes a shard whose files were removed or cut short."""
    reducer = _load_reducer(job["model"], job["model_sha256"])
    fs = source.fs()
    root = job["staging"]
    written: list[str] = []
    # float32 in and out of the reducer, four copies of a block at once
    rows = compute.rows_per_block(max(1, source.dim) * 4 * 4, share=0.5, cap=1 << 16)
    with compute.threads_limit():
        for modality, sub, tr, dt in (
            ("image", "img_emb", reducer.transform_images, job["image_dtype"]),
            ("text", "text_emb", reducer.transform_texts, job["text_dtype"]),
        ):
            part = source.part(shard, modality)
            single = job.get("single_files")
            if single:  # a pair of .npy files: this shard's rows of one pre-allocated output
                out = np.load(single[modality], mmap_mode="r+")
                g0 = shard.image_start if modality == "image" else shard.text_start
                for s, b in source.blocks(shard, modality, rows):
                    out[g0 + s : g0 + s + b.shape[0]] = tr(b).astype(dt, copy=False)
                out.flush()
                del out
                written.append(single[modality])
                continue
            name = os.path.basename(part.path)
            dst = os.path.join(root, sub, name)
            if part.kind == "npy":
                blocks = (
                    (s, tr(b).astype(dt, copy=False))
                    for s, b in source.blocks(shard, modality, rows)
                )
                _atomic_npy(dst, blocks, part.rows, job["dim_out"], np.dtype(dt))
            else:
                _atomic_parquet(dst, fs, part, tr, rows, np.dtype(dt))
            written.append(dst)
        for src, sub in ((shard.metadata, "metadata"), (shard.text_metadata, "text_metadata")):
            if src is not None:
                dst = os.path.join(root, sub, os.path.basename(src))
                _copy_atomic(fs, src, dst)
                written.append(dst)
    files = {os.path.relpath(f, root): os.path.getsize(f) for f in written}
    record = {"n_images": shard.n_images, "n_texts": shard.n_texts, "files": files}
    with atomic_path(os.path.join(root, ".done", shard.name)) as marker:
        marker.write_text(json.dumps(record) + "\n")
    return {"name": shard.name, "n_images": shard.n_images, "n_texts": shard.n_texts}
