"""Parquet: one file with ``image_emb`` and ``text_emb`` list columns, or a pair of files with
an ``embedding`` column each (clip-retrieval's parquet output)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from .._array import prepare_rows
from ..embeddings import EmbeddingSet
from ..errors import InputError, ModgapError
from ..files import atomic_path
from ._arrow import arrow_matrix
from ._errors import check_input_path, reading
from ._fields import UNPAIRED_NOTE, as_dtype, dropped, is_identity, missing, unpaired_equal
from ._registry import Format, register
from .sources import parquet_source

__all__ = ["arrow_matrix", "read_parquet", "read_table", "table_strings", "write_parquet"]

ID_COLUMNS = ("image_ids", "image_id", "image_path", "url")
TEXT_COLUMNS = ("texts", "text", "caption")


def read_table(path: str, columns: list[str] | None = None):
    import pyarrow.parquet as pq

    check_input_path(path)
    with reading(path, ".parquet"):
        table = pq.read_table(path, columns=columns)
        table.column_names  # noqa: B018 - decoded here: a damaged schema fails naming the file
        return table


def table_strings(table: Any, names: tuple[str, ...], source: str) -> list[str] | None:
    """The first of ``names`` that ``table`` has, as strings (None: none of them); a failure
    names ``source``, the file the table came from."""
    for name in names:
        if name in table.column_names:
            with reading(source, f".parquet column '{name}'"):
                return [("" if v is None else str(v)) for v in table.column(name).to_pylist()]
    return None


def _int_column(table: Any, name: str, source: str) -> np.ndarray:
    with reading(source, f".parquet column '{name}'"):
        col = table.column(name)
        if col.null_count:
            raise InputError(f"column '{name}' has {col.null_count} null value(s)", source)
        return col.to_numpy()


def read_parquet(
    path: str,
    texts: str | os.PathLike | None = None,
    image_key: str | None = None,
    text_key: str | None = None,
) -> dict:
    table = read_table(path)
    cols = list(table.column_names)
    if texts is not None:
        texts = os.fspath(texts)
        ik, tk = image_key or "embedding", text_key or "embedding"
        ttable = read_table(texts)
        if ik not in cols:
            raise missing(ik, cols, path, "; name the column with image_key=")
        if tk not in ttable.column_names:
            raise missing(tk, list(ttable.column_names), texts, "; name the column with text_key=")
        x = prepare_rows(
            arrow_matrix(table.column(ik), ik, path), "image_emb", path, notice_divided=True
        )
        y = prepare_rows(
            arrow_matrix(ttable.column(tk), tk, texts),
            "text_emb",
            texts,
            dim=x.shape[1],
            notice_divided=True,
        )
        fields: dict[str, Any] = {"image_emb": x, "text_emb": y}
        ids = table_strings(table, ID_COLUMNS, path)
        caps = table_strings(ttable, TEXT_COLUMNS, texts)
        if "text_to_image" in ttable.column_names:
            fields["text_to_image"] = _int_column(ttable, "text_to_image", texts)
        if "labels" in cols:
            fields["labels"] = _int_column(table, "labels", path)
    else:
        ik, tk = image_key or "image_emb", text_key or "text_emb"
        hint = "; name the columns with image_key=/text_key=, or give a pair of files"
        for key in (ik, tk):
            if key not in cols:
                raise missing(key, cols, path, hint)
        fields = {
            "image_emb": arrow_matrix(table.column(ik), ik, path),
            "text_emb": arrow_matrix(table.column(tk), tk, path),
        }
        ids = table_strings(table, ID_COLUMNS, path)
        caps = table_strings(table, TEXT_COLUMNS, path)
        for key in ("text_to_image", "labels"):
            if key in cols:
                fields[key] = _int_column(table, key, path)
    if ids is not None:
        fields["image_ids"] = ids
    if caps is not None:
        fields["texts"] = caps
    return fields


def fixed_list(matrix: np.ndarray):
    import pyarrow as pa

    m = np.ascontiguousarray(matrix)
    return pa.FixedSizeListArray.from_arrays(pa.array(m.reshape(-1)), m.shape[1])


def write_parquet(emb: EmbeddingSet, p: Path, *, texts, pairs_written, dtype, **_) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    lost = [k for k in ("class_names", "class_text_emb") if getattr(emb, k) is not None]
    lost += [UNPAIRED_NOTE] * unpaired_equal(emb)
    if texts is not None:
        icols: dict[str, Any] = {"embedding": fixed_list(as_dtype(emb.image_emb, dtype))}
        tcols: dict[str, Any] = {"embedding": fixed_list(as_dtype(emb.text_emb, dtype))}
        if emb.image_ids is not None:
            icols["image_id"] = pa.array(emb.image_ids, pa.string())
        if emb.labels is not None:
            icols["labels"] = pa.array(emb.labels)
        if emb.texts is not None:
            tcols["text"] = pa.array(emb.texts, pa.string())
        if emb.text_to_image is not None and not is_identity(emb):
            tcols["text_to_image"] = pa.array(emb.text_to_image)
        with atomic_path(p, ".parquet") as tmp:
            pq.write_table(pa.table(icols), tmp)
        with atomic_path(texts, ".parquet") as tmp:
            pq.write_table(pa.table(tcols), tmp)
    else:
        if emb.n_images != emb.n_texts:
            raise ModgapError(
                f"{p}: a single parquet table holds one image and one text per row, but the set "
                f"has {emb.n_images} images and {emb.n_texts} texts; pass texts=PATH to write a "
                "pair of files, or write .npz"
            )
        cols: dict[str, Any] = {
            "image_emb": fixed_list(as_dtype(emb.image_emb, dtype)),
            "text_emb": fixed_list(as_dtype(emb.text_emb, dtype)),
        }
        if emb.text_to_image is not None and not is_identity(emb):
            cols["text_to_image"] = pa.array(emb.text_to_image)
        if emb.labels is not None:
            cols["labels"] = pa.array(emb.labels)
        if emb.image_ids is not None:
            cols["image_id"] = pa.array(emb.image_ids, pa.string())
        if emb.texts is not None:
            cols["text"] = pa.array(emb.texts, pa.string())
        with atomic_path(p, ".parquet") as tmp:
            pq.write_table(pa.table(cols), tmp)
    dropped(os.fspath(p), lost)


register(
    Format(
        "parquet",
        ".parquet (one file with two list columns, or a pair of files)",
        (".parquet",),
        read_parquet,
        write_parquet,
        pair_files=True,
        stream=parquet_source,
    )
)
