"""clip-retrieval folders: ``img_emb/img_emb_{i}.npy``, ``text_emb/text_emb_{i}.npy``,
``metadata/metadata_{i}.parquet`` (shards in numeric order), plus modgap's ``extra.npz``
(pairing, labels, classes) when the set has more than row-aligned pairs."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from .._array import as_float_matrix
from ..embeddings import EmbeddingSet
from ..errors import InputError, ModgapError
from ..files import output_folder
from ._errors import check_input_path, reading
from ._fields import OPTIONAL, STRING_KEYS, as_dtype, is_identity, npz_arrays, paired_flag, strings
from ._registry import Format, register
from .npy import load_npy
from .npz import open_npz
from .parquet import read_table, table_strings

__all__ = ["read_clip_retrieval", "shards", "write_clip_retrieval"]

SHARD = re.compile(r"^(img_emb|text_emb|metadata)_(\d+)\.(npy|parquet)$")
META_IDS = ("image_path", "url", "image_id", "key")
META_TEXTS = ("caption", "text")


def shards(folder: Path, kind: str, ext: str) -> list[Path]:
    """The shard files ``{kind}_{i}.{ext}`` of ``folder``, in numeric order of ``i``."""
    if not folder.is_dir():
        return []
    found = []
    for f in folder.iterdir():
        m = SHARD.match(f.name)
        if m and m.group(1) == kind and m.group(3) == ext:
            found.append((int(m.group(2)), f))
    return [f for _, f in sorted(found)]


def concat_shards(files: list[Path], name: str, dim: int | None) -> np.ndarray:
    """Concatenate memory-mapped shards into one float32 matrix, checking each shard.

    Each shard is read once, straight into its slice of the output (float16 shards are widened
    there), so the data are never held twice; a single float32 shard stays memory-mapped.
    Errors name the shard file.
    """
    maps = [load_npy(f) for f in files]
    d = dim
    for f, m in zip(files, maps, strict=True):
        if m.ndim == 2 and m.shape[0] == 0:
            raise InputError(f"'{name}' shard is empty (0 rows)", os.fspath(f))
        if m.ndim == 2 and d is None:
            d = m.shape[1]
        # type, shape, width; the full row checks come below, once the rows are in place
        as_float_matrix(m[:1], name, os.fspath(f), dim=d, normalize=False)
    if len(maps) == 1 and maps[0].dtype == np.float32:
        return as_float_matrix(maps[0], name, os.fspath(files[0]), normalize=False)
    total = sum(m.shape[0] for m in maps)
    out = np.empty((total, d), dtype=np.float32)
    start = 0
    for f, m in zip(files, maps, strict=True):
        part = out[start : start + m.shape[0]]
        with reading(os.fspath(f), ".npy shard"):
            part[...] = m
        as_float_matrix(part, name, os.fspath(f), normalize=False)
        start += m.shape[0]
    return out


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


def _metadata(meta: list[Path], n_img: list[int], fields: dict) -> dict:
    """``image_ids`` / ``texts`` from the metadata shards (only the columns that are needed)."""
    import pyarrow.parquet as pq

    ids: list[str] | None = []
    caps: list[str] | None = []
    for f, n in zip(meta, n_img, strict=True):
        check_input_path(f)
        with reading(os.fspath(f), ".parquet"):
            names = pq.read_schema(f).names
        id_col = next((c for c in META_IDS if c in names), None)
        cap_col = next((c for c in META_TEXTS if c in names), None)
        table = read_table(os.fspath(f), [c for c in (id_col, cap_col) if c])
        if (id_col or cap_col) and table.num_rows != n:
            raise InputError(
                f"{table.num_rows} metadata rows but {n} image embeddings in this shard",
                os.fspath(f),
            )
        ids = None if ids is None or id_col is None else ids + table_strings(table, (id_col,))
        caps = None if caps is None or cap_col is None else caps + table_strings(table, (cap_col,))
    out: dict[str, Any] = {}
    if ids is not None and "image_ids" not in fields:
        out["image_ids"] = ids
    if caps is not None and "texts" not in fields and len(caps) == len(fields["text_emb"]):
        out["texts"] = caps
    return out


def read_clip_retrieval(folder: str, texts=None, image_key=None, text_key=None) -> dict:
    root = Path(folder)
    with reading(folder, "clip-retrieval folder"):
        entries = [e for e in root.iterdir() if not e.name.startswith(".")]
    if not entries:
        raise InputError(
            "the folder is empty; expected a clip-retrieval layout "
            "(img_emb/img_emb_0.npy, text_emb/text_emb_0.npy, metadata/metadata_0.parquet)",
            folder,
        )
    img = shards(root / "img_emb", "img_emb", "npy")
    txt = shards(root / "text_emb", "text_emb", "npy")
    meta = shards(root / "metadata", "metadata", "parquet")
    if not img or not txt:
        which = "img_emb/img_emb_{i}.npy" if not img else "text_emb/text_emb_{i}.npy"
        found = sorted(e.name + ("/" if e.is_dir() else "") for e in entries)
        raise InputError(
            f"not a clip-retrieval folder: no {which} shards (found: {', '.join(found[:10])})",
            folder,
        )
    if len(img) != len(txt):
        raise InputError(
            f"{len(img)} image shards but {len(txt)} text shards; "
            "every img_emb_{i}.npy needs its text_emb_{i}.npy",
            folder,
        )
    for a, b in zip(img, txt, strict=True):
        if SHARD.match(a.name).group(2) != SHARD.match(b.name).group(2):
            raise InputError(f"shard numbers do not match: {a.name} vs {b.name}", folder)
    if meta and len(meta) != len(img):
        raise InputError(f"{len(img)} embedding shards but {len(meta)} metadata shards", folder)
    fields: dict[str, Any] = {}
    if (root / "extra.npz").exists():
        fields.update(read_extra(os.fspath(root / "extra.npz")))
    shapes = {f: load_npy(f).shape for f in img + txt}
    for f, shape in shapes.items():
        kind = "image_emb" if f in img else "text_emb"
        if len(shape) != 2:
            raise InputError(
                f"'{kind}' shard must be 2-D (rows, dims), got shape {shape}", os.fspath(f)
            )
        if shape[0] == 0:
            raise InputError(f"'{kind}' shard is empty (0 rows)", os.fspath(f))
    n_img = [shapes[f][0] for f in img]
    if "text_to_image" not in fields and fields.get("paired", True):
        for a, b, na in zip(img, txt, n_img, strict=True):
            nb = shapes[b][0]
            if na != nb:
                raise InputError(
                    f"{na} image rows but {nb} text rows in shard {a.name} / {b.name}; "
                    "clip-retrieval rows are image-caption pairs",
                    folder,
                )
    fields["image_emb"] = concat_shards(img, "image_emb", None)
    fields["text_emb"] = concat_shards(txt, "text_emb", fields["image_emb"].shape[1])
    if meta:
        fields.update(_metadata(meta, n_img, fields))
    return fields


def write_clip_retrieval(emb: EmbeddingSet, p: Path, *, dtype, shard_size, **_) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if dtype not in (np.float16, np.float32):
        raise ModgapError(f"{p}: clip-retrieval shards are float16 or float32, not {dtype}")
    x, y = emb.image_emb, emb.text_emb
    identity = is_identity(emb)
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
        x_parts if emb.n_images == emb.n_texts else np.array_split(np.arange(y.shape[0]), n_shards)
    )
    with output_folder(p, marker="img_emb", what="output folder") as tmp:
        for sub in ("img_emb", "text_emb", "metadata"):
            (tmp / sub).mkdir()
        for i, (xi, yi) in enumerate(zip(x_parts, y_parts, strict=True)):
            np.save(tmp / "img_emb" / f"img_emb_{i}.npy", as_dtype(x[xi], dtype))
            np.save(tmp / "text_emb" / f"text_emb_{i}.npy", as_dtype(y[yi], dtype))
            cols: dict[str, Any] = {}
            if emb.image_ids is not None:
                cols["image_path"] = pa.array([emb.image_ids[j] for j in xi], pa.string())
            if emb.texts is not None and emb.n_images == emb.n_texts:
                cols["caption"] = pa.array([emb.texts[j] for j in yi], pa.string())
            if cols:
                pq.write_table(pa.table(cols), tmp / "metadata" / f"metadata_{i}.parquet")
        extra = {
            k: v
            for k, v in npz_arrays(emb, dtype).items()
            if k not in ("image_emb", "text_emb", "image_ids")
            and not (k == "texts" and emb.n_images == emb.n_texts)
        }
        if emb.text_to_image is not None and not identity:
            extra["text_to_image"] = np.asarray(emb.text_to_image, dtype=np.int64)
        if emb.text_to_image is None:
            extra["paired"] = np.asarray(False)
        if extra:
            # modgap's own addition next to the clip-retrieval layout: pairing, labels, classes
            np.savez(tmp / "extra.npz", **extra)


def _stream(path, texts=None, **kwargs):
    """The streaming source (:mod:`modgap.stream`), imported only when asked for."""
    from ..stream.formats import clip_retrieval_source

    return clip_retrieval_source(path, texts, **kwargs)


register(
    Format(
        "clip-retrieval",
        "clip-retrieval folder (img_emb/, text_emb/, metadata/)",
        (),
        read_clip_retrieval,
        write_clip_retrieval,
        folder=True,
        stream=_stream,
    )
)
