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
from .source import read_part
from .sources import check_clip_layout, clip_retrieval_source

__all__ = ["read_clip_retrieval", "shards", "write_clip_retrieval"]

SHARD = re.compile(r"^(img_emb|text_emb|metadata|text_metadata)_(\d+)\.(npy|parquet)$")
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


def _shard_number(f: Path) -> int:
    return int(SHARD.match(f.name).group(2))


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
        ids = (
            None
            if ids is None or id_col is None
            else ids + table_strings(table, (id_col,), os.fspath(f))
        )
        caps = (
            None
            if caps is None or cap_col is None
            else caps + table_strings(table, (cap_col,), os.fspath(f))
        )
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
    img = shards(root / "img_emb", "img_emb", "npy")
    txt = shards(root / "text_emb", "text_emb", "npy")
    meta = shards(root / "metadata", "metadata", "parquet")
    if not img and shards(root / "img_emb", "img_emb", "parquet"):
        return _read_via_source(folder)
    if shards(root / "text_metadata", "text_metadata", "parquet"):
        return _read_via_source(folder)
    check_clip_layout(
        [e.name + ("/" if e.is_dir() else "") for e in entries],
        [_shard_number(f) for f in img],
        [_shard_number(f) for f in txt],
        {"metadata": len(meta)},
        folder,
    )
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
    fields["metadata"] = {"clip_retrieval": _layout_of(folder)}
    return fields


def _layout_of(folder: str, source: Any = None) -> dict:
    """The layout a writer mirrors: shard names, rows, dtypes, metadata columns, where."""
    src = source if source is not None else clip_retrieval_source(folder)
    layout = dict(src.layout)
    layout["root"] = os.path.abspath(folder)
    layout["metadata_files"] = [s.metadata and os.path.abspath(s.metadata) for s in src.shards]
    layout["text_metadata_files"] = [
        s.text_metadata and os.path.abspath(s.text_metadata) for s in src.shards
    ]
    return layout


def _read_via_source(folder: str) -> dict:
    """A clip-retrieval folder with parquet shards or the multi-caption layout, read whole
    through its streaming source (the same checks, shard by shard)."""
    import pyarrow.parquet as pq

    src = clip_retrieval_source(folder)
    fields: dict[str, Any] = {}
    for modality, key in (("image", "image_emb"), ("text", "text_emb")):
        n = src.n_images if modality == "image" else src.n_texts
        out = np.empty((n, src.dim), dtype=np.float32)
        for s in src.shards:
            g0 = s.image_start if modality == "image" else s.text_start
            part = src.part(s, modality)
            for start, raw in read_part(src.fs(), part, 1 << 16):
                blk = out[g0 + start : g0 + start + raw.shape[0]]
                with reading(part.path, "shard"):
                    blk[...] = raw
                as_float_matrix(blk, key, part.path, normalize=False)
        fields[key] = out
    root = Path(folder)
    if (root / "extra.npz").exists():
        extra = read_extra(os.fspath(root / "extra.npz"))
        extra.pop("text_to_image", None) if src.layout.get("multi_caption") else None
        fields.update(extra)
    if src.pairing == "index":
        fields["text_to_image"] = src.pairs()
    elif src.pairing is None:
        fields["paired"] = False
    meta = [Path(s.metadata) for s in src.shards if s.metadata]
    if meta:
        fields.update(_metadata(meta, [s.n_images for s in src.shards], {**fields, "texts": 1}))
    caps: list[str] = []
    for s in src.shards:
        if s.text_metadata is None:
            caps = []
            break
        names = pq.read_schema(s.text_metadata).names
        col = next((c for c in META_TEXTS if c in names), None)
        if col is None:
            caps = []
            break
        caps += table_strings(read_table(s.text_metadata, [col]), (col,), s.text_metadata)
    if caps and "texts" not in fields:
        fields["texts"] = caps
    fields["metadata"] = {"clip_retrieval": _layout_of(folder, src)}
    return fields


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


def write_clip_retrieval(
    emb: EmbeddingSet, p: Path, *, dtype, shard_size, dtype_given: bool = True, **_
) -> None:
    """Write the clip-retrieval layout (``docs/formats.md``).

    Shards are named as clip-retrieval names them (zero-padded ids). A set read from a
    clip-retrieval folder is written in that folder's layout (same shard names and rows, its
    dtypes unless ``dtype`` is given, its metadata files copied when they are still there and
    the rows match) unless ``shard_size`` asks for another cut. Several captions per image
    (any pairing that is not row by row) use the multi-caption layout: image rows in
    ``img_emb/`` with ``metadata/`` (``image_path``), text rows in ``text_emb/`` with
    ``text_metadata/`` (``image_index``, ``caption``), both row-aligned with their shards.
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
