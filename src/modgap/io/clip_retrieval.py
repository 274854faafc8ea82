"""clip-retrieval folders: ``img_emb/img_emb_{i}.npy``, ``text_emb/text_emb_{i}.npy``,
``metadata/metadata_{i}.parquet`` (shards in numeric order), plus modgap's ``extra.npz``
(pairing, labels, classes) when the set has more than row-aligned pairs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..embeddings import EmbeddingSet
from ..errors import ModgapError
from ..files import output_folder
from ._errors import reading
from ._fields import OPTIONAL, STRING_KEYS, as_dtype, is_identity, npz_arrays, paired_flag, strings
from ._registry import Format, register
from .npz import open_npz
from .parquet import read_table, table_strings
from .sources import clip_retrieval_source

__all__ = ["read_clip_retrieval", "write_clip_retrieval"]

META_IDS = ("image_path", "url", "image_id", "key")
META_TEXTS = ("caption", "text")


def read_extra(path: str) -> dict:
    """The optional canonical keys of an ``extra.npz`` kept next to a clip-retrieval layout."""
    out: dict[str, Any] = {}
    with open_npz(path) as z:
        if "paired" in z:
            out["paired"] = paired_flag(z["paired"], path)
        for key in OPTIONAL:
            if key in z:
                val = z[key]
                out[key] = strings(val, key, path) if key in STRING_KEYS else val
    return out


def _strings(files: list[str | None], columns: tuple[str, ...]) -> list[str] | None:
    """The first of ``columns`` that each metadata file has, read as strings and joined in
    shard order; ``None`` when a shard has no such file or column."""
    import pyarrow.parquet as pq

    out: list[str] = []
    for f in files:
        if f is None:
            return None
        with reading(f, ".parquet"):
            names = pq.read_schema(f).names
        col = next((c for c in columns if c in names), None)
        if col is None:
            return None
        out += table_strings(read_table(f, [col]), (col,), f)
    return out


def read_clip_retrieval(folder: str, texts=None, image_key=None, text_key=None) -> dict:
    """A clip-retrieval folder in memory: every block of its :class:`~modgap.io.source.Source`
    (the one the streamed route reads, so both routes make the same checks and say the same
    thing), every layout (``.npy`` or parquet shards, several captions per image).

    ``image_ids`` come from ``metadata/`` (row-aligned with the image shards), ``texts`` from
    ``metadata/`` when rows are image-caption pairs and from ``text_metadata/`` in the
    multi-caption layout; keys of ``extra.npz`` (labels, classes) are kept as they are.
    """
    src = clip_retrieval_source(folder)
    fields: dict[str, Any] = {"image_emb": src.read_all("image"), "text_emb": src.read_all("text")}
    extra_path = os.path.join(folder, "extra.npz")
    if os.path.exists(extra_path):
        extra = read_extra(extra_path)
        # the pairing is the source's (checked there): text metadata, extra.npz or rows
        extra.pop("text_to_image", None)
        extra.pop("paired", None)
        fields.update(extra)
    if src.pairing == "index":
        fields["text_to_image"] = src.pairs()
    elif src.pairing is None:
        fields["paired"] = False
    multi = src.layout.get("multi_caption")
    meta = [s.metadata for s in src.shards]
    ids = _strings(meta, META_IDS) if any(meta) else None
    if ids is not None and "image_ids" not in fields:
        fields["image_ids"] = ids
    caps = _strings([s.text_metadata for s in src.shards] if multi else meta, META_TEXTS)
    if caps is not None and "texts" not in fields and len(caps) == src.n_texts:
        fields["texts"] = caps
    fields["metadata"] = {"clip_retrieval": _layout_of(folder, src)}
    return fields


def _layout_of(folder: str, source: Any) -> dict:
    """The layout a writer mirrors: shard names, rows, dtypes, metadata columns, where."""
    layout = dict(source.layout)
    layout["root"] = os.path.abspath(folder)
    layout["metadata_files"] = [s.metadata and os.path.abspath(s.metadata) for s in source.shards]
    layout["text_metadata_files"] = [
        s.text_metadata and os.path.abspath(s.text_metadata) for s in source.shards
    ]
    return layout


def _shard_name(i: int, n: int) -> str:
    """clip-retrieval's shard ids: zero-padded to the width of the shard count
    (``img_emb_00`` ... ``img_emb_12`` for 13 shards), so a sort by name is the row order."""
    return str(i).zfill(len(str(n)))


def _mirror(emb: EmbeddingSet, shard_size) -> dict | None:
    """The layout of the folder ``emb`` was read from, when the writer can mirror it: same
    counts, no explicit shard size."""
    layout = (emb.metadata or {}).get("clip_retrieval")
    if not isinstance(layout, dict) or shard_size is not None or "names" not in layout:
        return None
    if sum(layout["image_rows"]) != emb.n_images or sum(layout["text_rows"]) != emb.n_texts:
        return None
    multi = emb.text_to_image is not None and not is_identity(emb)
    if multi != bool(layout.get("multi_caption")) or layout.get("shard_format") != "npy":
        return None
    return layout


def _column_arrays(columns: dict | None, n: int, taken: set[str]) -> dict:
    """``columns`` (name -> one value per image) as arrow arrays; names the writer fills itself
    are left out (clip-retrieval drops ``.json`` fields named like its own columns). A column
    arrow cannot type (mixed kinds, nested lists of objects) is kept as JSON text."""
    import json

    import pyarrow as pa

    out = {}
    for name, values in (columns or {}).items():
        if name in taken:
            continue
        if len(values) != n:
            raise ModgapError(f"metadata column {name!r} has {len(values)} rows, not {n}")
        try:
            out[name] = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError):
            out[name] = pa.array(
                [None if v is None else json.dumps(v, default=str) for v in values], pa.string()
            )
        if pa.types.is_null(out[name].type):
            out[name] = out[name].cast(pa.string())  # all missing: a string column of nulls
    return out


def write_clip_retrieval(
    emb: EmbeddingSet,
    p: Path,
    *,
    dtype,
    shard_size,
    dtype_given: bool = True,
    columns: dict | None = None,
    **_,
) -> None:
    """Write the clip-retrieval layout (``docs/formats.md``).

    Shards are named as clip-retrieval names them (zero-padded ids). A set read from a
    clip-retrieval folder is written in that folder's layout (same shard names and rows, its
    dtypes unless ``dtype`` is given, its metadata files copied when they are still there and
    the rows match) unless ``shard_size`` asks for another cut. Several captions per image
    (any pairing that is not row by row) use the multi-caption layout: image rows in
    ``img_emb/`` with ``metadata/`` (``image_path``), text rows in ``text_emb/`` with
    ``text_metadata/`` (``image_index``, ``caption``), both row-aligned with their shards.
    ``columns`` (name -> one value per image: ``url``, a webdataset sample's ``.json`` fields)
    are added to ``metadata/`` after ``image_path`` and ``caption``.
    """
    import shutil

    import pyarrow as pa
    import pyarrow.parquet as pq

    if dtype not in (np.float16, np.float32):
        raise ModgapError(f"{p}: clip-retrieval shards are float16 or float32, not {dtype}")
    x, y = emb.image_emb, emb.text_emb
    identity = is_identity(emb)
    multi = emb.text_to_image is not None and not identity
    layout = _mirror(emb, shard_size)
    if layout is not None:
        names = list(layout["names"])
        ib = np.concatenate([[0], np.cumsum(layout["image_rows"])])
        tb = np.concatenate([[0], np.cumsum(layout["text_rows"])])
        x_parts = [np.arange(ib[i], ib[i + 1]) for i in range(len(names))]
        y_parts = [np.arange(tb[i], tb[i + 1]) for i in range(len(names))]
        dt_img = np.dtype(dtype if dtype_given else layout.get("image_dtype", "float32"))
        dt_txt = np.dtype(dtype if dtype_given else layout.get("text_dtype", "float32"))
        if dt_img not in (np.float16, np.float32):
            dt_img = np.dtype(np.float32)
        if dt_txt not in (np.float16, np.float32):
            dt_txt = np.dtype(np.float32)
    else:
        n_shards = 1
        if shard_size is not None:
            if shard_size < 1:
                raise ModgapError(f"shard_size must be at least 1, got {shard_size}")
            # images and texts get the same number of shards (the layout pairs shard i with
            # shard i), none of them empty: with unequal counts the smaller side bounds it
            n_rows = max(emb.n_images, emb.n_texts)
            n_shards = max(1, min(-(-n_rows // shard_size), emb.n_images, emb.n_texts))
        x_parts = np.array_split(np.arange(x.shape[0]), n_shards)
        y_parts = (
            x_parts
            if emb.n_images == emb.n_texts and not multi
            else np.array_split(np.arange(y.shape[0]), n_shards)
        )
        names = [_shard_name(i, n_shards) for i in range(n_shards)]
        dt_img = dt_txt = np.dtype(dtype)
    extra_cols = _column_arrays(columns, emb.n_images, {"image_path", "caption", "metadata"})
    with output_folder(p, marker="img_emb", what="output folder") as tmp:
        for sub in ("img_emb", "text_emb", "metadata") + (("text_metadata",) if multi else ()):
            (tmp / sub).mkdir()
        for i, (name, xi, yi) in enumerate(zip(names, x_parts, y_parts, strict=True)):
            np.save(tmp / "img_emb" / f"img_emb_{name}.npy", as_dtype(x[xi], dt_img))
            np.save(tmp / "text_emb" / f"text_emb_{name}.npy", as_dtype(y[yi], dt_txt))
            src_meta = layout["metadata_files"][i] if layout else None
            if src_meta and os.path.exists(src_meta):
                # every column of the input's metadata, byte for byte (url, similarity, ...)
                shutil.copyfile(src_meta, tmp / "metadata" / f"metadata_{name}.parquet")
            else:
                cols: dict[str, Any] = {}
                if emb.image_ids is not None:
                    cols["image_path"] = pa.array([emb.image_ids[j] for j in xi], pa.string())
                if emb.texts is not None and emb.n_images == emb.n_texts and not multi:
                    cols["caption"] = pa.array([emb.texts[j] for j in yi], pa.string())
                for col, arr in extra_cols.items():
                    cols[col] = arr.take(pa.array(np.asarray(xi, dtype=np.int64)))
                if cols:
                    pq.write_table(pa.table(cols), tmp / "metadata" / f"metadata_{name}.parquet")
            if multi:
                src_tm = layout["text_metadata_files"][i] if layout else None
                if src_tm and os.path.exists(src_tm):
                    shutil.copyfile(src_tm, tmp / "text_metadata" / f"text_metadata_{name}.parquet")
                else:
                    tcols: dict[str, Any] = {
                        "image_index": pa.array(
                            np.asarray(emb.text_to_image[yi], dtype=np.int64), pa.int64()
                        )
                    }
                    if emb.texts is not None:
                        tcols["caption"] = pa.array([emb.texts[j] for j in yi], pa.string())
                    pq.write_table(
                        pa.table(tcols),
                        tmp / "text_metadata" / f"text_metadata_{name}.parquet",
                    )
        extra = {
            k: v
            for k, v in npz_arrays(emb, dtype, skip=("image_emb", "text_emb")).items()
            if k not in ("image_ids", "text_to_image")
            and not (k == "texts" and (emb.n_images == emb.n_texts or multi))
        }
        if emb.text_to_image is None:
            extra["paired"] = np.asarray(False)
        if extra:
            # modgap's own addition next to the clip-retrieval layout: labels, classes
            np.savez(tmp / "extra.npz", **extra)


register(
    Format(
        "clip-retrieval",
        "clip-retrieval folder (img_emb/, text_emb/, metadata/)",
        (),
        read_clip_retrieval,
        write_clip_retrieval,
        folder=True,
        stream=clip_retrieval_source,
    )
)
