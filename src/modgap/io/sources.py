"""Building a :class:`~modgap.io.source.Source` for each streamable format.

These are the ``stream`` slots of the format registry (:mod:`modgap.io._registry`): a
clip-retrieval folder (``.npy`` or parquet shards, the multi-caption layout included), a pair
of ``.npy`` files, and parquet files. Only headers and footers are read here.
"""

from __future__ import annotations

import os
import re
from typing import Any

import numpy as np

from .._array import check_image_index
from ..errors import InputError
from ._errors import reading
from ._fields import missing, paired_flag
from ._fs import FS, join, open_fs
from .source import Part, Shard, Source, npy_part, parquet_part

__all__ = [
    "SHARD",
    "clip_retrieval_source",
    "list_shards",
    "npy_source",
    "parquet_source",
]

#: a clip-retrieval shard file name: kind, id (kept as written: "03"), suffix
SHARD = re.compile(r"^(img_emb|text_emb|metadata|text_metadata)_(\d+)\.(npy|parquet)$")
#: rows per virtual shard of a single large file (the unit of a Dask task)
FILE_SHARD_ROWS = 1 << 20


def list_shards(fs: FS, folder: str, kind: str) -> list[tuple[str, str, str]]:
    """``(id, suffix, path)`` of the ``{kind}_{id}.{npy|parquet}`` files in ``folder``, in
    numeric order of the id (0, 1, 2, ..., 10; zero-padded ids sort the same way)."""
    found = []
    for name in fs.listdir(folder):
        m = SHARD.match(name)
        if m and m.group(1) == kind:
            found.append((int(m.group(2)), m.group(2), m.group(3), join(folder, name)))
    found.sort()
    return [(sid, ext, path) for _, sid, ext, path in found]


def check_clip_layout(
    entries: list[str], img: list[int], txt: list[int], metadata: dict[str, int], where: str
) -> None:
    """The checks every reader of a clip-retrieval folder makes before opening a shard.

    ``entries`` are the folder's visible names (for the error), ``img`` / ``txt`` the shard
    numbers of ``img_emb/`` and ``text_emb/`` in order, ``metadata`` the shard count of each
    metadata folder (0 when absent).
    """
    if not entries:
        raise InputError(
            "the folder is empty; expected a clip-retrieval layout "
            "(img_emb/img_emb_0.npy, text_emb/text_emb_0.npy, metadata/metadata_0.parquet)",
            where,
        )
    if not img or not txt:
        which = "img_emb/img_emb_{i}.npy" if not img else "text_emb/text_emb_{i}.npy"
        found = ", ".join(sorted(entries)[:10])
        raise InputError(f"not a clip-retrieval folder: no {which} shards (found: {found})", where)
    if len(img) != len(txt):
        raise InputError(
            f"{len(img)} image shards but {len(txt)} text shards; "
            "every img_emb_{i} needs its text_emb_{i}",
            where,
        )
    for a, b in zip(img, txt, strict=True):
        if a != b:
            raise InputError(f"shard numbers do not match: img_emb_{a} vs text_emb_{b}", where)
    for what, count in metadata.items():
        if count and count != len(img):
            raise InputError(f"{len(img)} embedding shards but {count} {what} shards", where)


def _embedding_part(fs: FS, path: str, ext: str, name: str) -> Part:
    if ext == "npy":
        return npy_part(fs, path, name)
    return parquet_part(fs, path, "embedding")[0]


def _basename(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1]


def _parquet_columns(fs: FS, path: str) -> list[str]:
    import pyarrow.parquet as pq

    with fs.open(path) as f, reading(path, ".parquet"):
        return list(pq.ParquetFile(f).schema_arrow.names)


def _parquet_rows(fs: FS, path: str) -> int:
    import pyarrow.parquet as pq

    with fs.open(path) as f, reading(path, ".parquet"):
        return int(pq.ParquetFile(f).metadata.num_rows)


def _read_extra(fs: FS, path: str) -> dict:
    """``text_to_image`` / ``paired`` of a legacy ``extra.npz`` (modgap < 0.2 kept the
    pairing of multi-caption sets there); other keys are only named."""
    import io
    import zipfile

    out: dict[str, Any] = {}
    with reading(path, ".npz"), fs.open(path) as f:
        data = f.read()
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            names = [n[:-4] for n in z.namelist() if n.endswith(".npy")]
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            if "paired" in names:
                out["paired"] = paired_flag(z["paired"], path)
            if "text_to_image" in names:
                out["text_to_image"] = np.asarray(z["text_to_image"], dtype=np.int64)
    out["keys"] = names
    return out


def clip_retrieval_source(
    path: str, texts: Any = None, *, storage_options: dict | None = None, **_
) -> Source:
    """The :class:`Source` of a clip-retrieval folder.

    Layout (``docs/formats.md``): ``img_emb/img_emb_{id}.npy`` (or ``.parquet`` with an
    ``embedding`` column), ``text_emb/text_emb_{id}.npy``, optional
    ``metadata/metadata_{id}.parquet`` (row-aligned with the image shard) and, for several
    captions per image, ``text_metadata/text_metadata_{id}.parquet`` (row-aligned with the text
    shard, with a global ``image_index`` column).
    """
    root = os.fspath(path).rstrip("/") or "/"
    fs = open_fs(root, storage_options)
    if not fs.isdir(root):
        if fs.exists(root):
            raise InputError("is a file, expected a clip-retrieval folder", root)
        raise InputError("no such file or folder", root)
    entries = [
        e + ("/" if fs.isdir(join(root, e)) else "")
        for e in fs.listdir(root)
        if not e.startswith(".")
    ]
    img = list_shards(fs, join(root, "img_emb"), "img_emb")
    txt = list_shards(fs, join(root, "text_emb"), "text_emb")
    meta = list_shards(fs, join(root, "metadata"), "metadata")
    tmeta = list_shards(fs, join(root, "text_metadata"), "text_metadata")
    check_clip_layout(
        entries,
        [int(s) for s, _, _ in img],
        [int(s) for s, _, _ in txt],
        {"metadata": len(meta), "text_metadata": len(tmeta)},
        root,
    )
    exts = {e for _, e, _ in img + txt}
    if len(exts) > 1:
        raise InputError("embedding shards mix .npy and .parquet files", root)
    extra: dict[str, Any] = {}
    if fs.exists(join(root, "extra.npz")):
        extra = _read_extra(fs, join(root, "extra.npz"))
    shards = []
    i0 = t0 = 0
    dim = None
    dtypes = {"image": set(), "text": set()}
    for k, ((sid, ext, ip), (_, _, tp)) in enumerate(zip(img, txt, strict=True)):
        ipart = _embedding_part(fs, ip, ext, "image_emb")
        tpart = _embedding_part(fs, tp, ext, "text_emb")
        for key, p in (("image_emb", ipart), ("text_emb", tpart)):
            if dim is None:
                dim = p.dim
            if p.dim != dim:
                raise InputError(
                    f"'{key}' shard has {p.dim} dimensions but {dim} were expected (image and "
                    "text embeddings must come from the same joint space)",
                    p.path,
                )
        dtypes["image"].add(ipart.dtype)
        dtypes["text"].add(tpart.dtype)
        shards.append(
            Shard(
                k,
                sid,
                ipart,
                tpart,
                i0,
                t0,
                meta[k][2] if meta else None,
                tmeta[k][2] if tmeta else None,
            )
        )
        i0 += ipart.rows
        t0 += tpart.rows
    t2i = None
    multi = bool(tmeta) and "image_index" in _parquet_columns(fs, tmeta[0][2])
    if multi:
        pairing: str | None = "index"
    elif "text_to_image" in extra:
        pairing, t2i = "index", extra["text_to_image"]
        if t2i.shape != (t0,) or (t2i.size and (t2i.min() < 0 or t2i.max() >= i0)):
            raise InputError(
                f"'text_to_image' must hold {t0} image indices in [0, {i0})",
                join(root, "extra.npz"),
            )
    elif extra.get("paired", True) is False:
        pairing = None
    else:
        pairing = "rows"
        for s in shards:
            if s.n_images != s.n_texts:
                raise InputError(
                    f"{s.n_images} image rows but {s.n_texts} text rows in shard "
                    f"{_basename(s.image.path)} / {_basename(s.text.path)}; clip-retrieval rows "
                    "are image-caption pairs (several captions per image: see the multi-caption "
                    "layout in docs/formats.md)",
                    root,
                )
    for s in shards:
        if s.metadata is not None:
            n = _parquet_rows(fs, s.metadata)
            if n != s.n_images:
                raise InputError(
                    f"{n} metadata rows but {s.n_images} image embeddings in this shard",
                    s.metadata,
                )
        if s.text_metadata is not None:
            n = _parquet_rows(fs, s.text_metadata)
            if n != s.n_texts:
                raise InputError(
                    f"{n} text metadata rows but {s.n_texts} text embeddings in this shard",
                    s.text_metadata,
                )
    layout = {
        "kind": "clip-retrieval",
        "shard_format": exts.pop(),
        "names": [s.name for s in shards],
        "image_rows": [s.n_images for s in shards],
        "text_rows": [s.n_texts for s in shards],
        "image_dtype": sorted(dtypes["image"])[0] if len(dtypes["image"]) == 1 else "float32",
        "text_dtype": sorted(dtypes["text"])[0] if len(dtypes["text"]) == 1 else "float32",
        "metadata_columns": _parquet_columns(fs, meta[0][2]) if meta else [],
        "text_metadata_columns": _parquet_columns(fs, tmeta[0][2]) if tmeta else [],
        "multi_caption": multi,
        "extra": extra.get("keys", []),
    }
    return Source(
        root, "clip-retrieval", tuple(shards), pairing, layout, dict(storage_options or {}), t2i
    )


def _file_shards(ipart: Part, tpart: Part, rows_per_shard: int, paired: bool) -> tuple[Shard, ...]:
    """Virtual shards of ``rows_per_shard`` rows over one image file and one text file."""
    n = max(ipart.rows, tpart.rows)
    k = max(1, -(-n // rows_per_shard))
    ib = np.linspace(0, ipart.rows, k + 1).astype(np.int64)
    tb = ib if paired else np.linspace(0, tpart.rows, k + 1).astype(np.int64)
    shards = []
    for j in range(k):
        shards.append(
            Shard(
                j,
                str(j),
                _slice(ipart, int(ib[j]), int(ib[j + 1])),
                _slice(tpart, int(tb[j]), int(tb[j + 1])),
                int(ib[j]),
                int(tb[j]),
            )
        )
    return tuple(shards)


def _slice(part: Part, start: int, stop: int) -> Part:
    """Rows ``start:stop`` of an ``.npy`` part as a part of its own (a byte offset)."""
    import dataclasses

    if part.kind != "npy":
        raise ValueError("only .npy files are cut into virtual shards")
    row_bytes = part.dim * np.dtype(part.dtype).itemsize
    return dataclasses.replace(part, rows=stop - start, offset=part.offset + start * row_bytes)


def npy_source(
    images: str, texts: Any = None, *, storage_options: dict | None = None, **_
) -> Source:
    """A pair of ``.npy`` files (images, texts), cut into virtual shards of
    :data:`FILE_SHARD_ROWS` rows (row ``i`` ↔ row ``i`` when the counts are equal)."""
    if texts is None:
        raise InputError(
            "a .npy file holds one matrix: give the text embeddings file too", os.fspath(images)
        )
    images, texts = os.fspath(images), os.fspath(texts)
    fs = open_fs(images, storage_options)
    ipart, tpart = npy_part(fs, images), npy_part(fs, texts)
    if tpart.dim != ipart.dim:
        raise InputError(
            f"'text_emb' has {tpart.dim} dimensions but {ipart.dim} were expected (image and "
            "text embeddings must come from the same joint space)",
            texts,
        )
    paired = ipart.rows == tpart.rows
    shards = _file_shards(ipart, tpart, FILE_SHARD_ROWS, paired)
    layout = {"kind": "npy", "image_dtype": ipart.dtype, "text_dtype": tpart.dtype}
    return Source(
        f"{images}, {texts}",
        "npy",
        shards,
        "rows" if paired else None,
        layout,
        dict(storage_options or {}),
    )


def _index_column(fs: FS, path: str, n_images: int) -> np.ndarray:
    """A parquet file's ``text_to_image`` column, checked as the in-memory reader checks it:
    no nulls, whole numbers, every entry an image index."""
    import pyarrow.parquet as pq

    with fs.open(path) as f:
        col = pq.read_table(f, columns=["text_to_image"]).column(0)
    if col.null_count:
        raise InputError(f"'text_to_image' has {col.null_count} empty entries", path)
    values = col.to_numpy()
    if values.dtype.kind not in "iu":
        raise InputError(f"'text_to_image' must hold integers, got {values.dtype}", path)
    return check_image_index(values.astype(np.int64), n_images, "text_to_image", path)


def parquet_source(
    path: str,
    texts: Any = None,
    *,
    image_key: str | None = None,
    text_key: str | None = None,
    storage_options: dict | None = None,
    **_,
) -> Source:
    """One parquet file with two list columns (``image_emb``, ``text_emb``: one shard), or a
    pair of files with an ``embedding`` column each."""
    path = os.fspath(path)
    fs = open_fs(path, storage_options)
    if texts is None:
        ik, tk = image_key or "image_emb", text_key or "text_emb"
        ipart, names = parquet_part(fs, path, ik)
        if tk not in names:
            raise missing(tk, names, path, "; name the columns with image_key=/text_key=")
        tpart, _ = parquet_part(fs, path, tk)
        pairing = "index" if "text_to_image" in names else "rows"
        t2i = _index_column(fs, path, ipart.rows) if pairing == "index" else None
        layout = {"kind": "parquet", "columns": names}
        shards = (Shard(0, "0", ipart, tpart),)
        return Source(path, "parquet", shards, pairing, layout, dict(storage_options or {}), t2i)
    texts = os.fspath(texts)
    ipart, inames = parquet_part(fs, path, image_key or "embedding")
    tpart, tnames = parquet_part(fs, texts, text_key or "embedding")
    if tpart.dim != ipart.dim:
        raise InputError(
            f"'text_emb' has {tpart.dim} dimensions but {ipart.dim} were expected", texts
        )
    t2i = None
    if "text_to_image" in tnames:
        t2i = _index_column(fs, texts, ipart.rows)
        pairing: str | None = "index"
    else:
        pairing = "rows" if ipart.rows == tpart.rows else None
    layout = {"kind": "parquet", "columns": inames, "text_columns": tnames}
    shards = (Shard(0, "0", ipart, tpart),)
    return Source(
        f"{path}, {texts}", "parquet", shards, pairing, layout, dict(storage_options or {}), t2i
    )
