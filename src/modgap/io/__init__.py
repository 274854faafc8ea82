"""Reading and writing embeddings in every supported format, atomically and without pickle.

One module per format (``npy``, ``npz``, ``clip_retrieval``, ``parquet``, ``safetensors_file``,
``torch_file``), each registering a :class:`~modgap.io._registry.Format` in :data:`FORMATS`;
dispatch goes through that registry only. Shared pieces: ``_errors`` (one translation of
low-level failures into a one-line :class:`~modgap.errors.InputError` naming the file, and the
checks made before bytes are trusted), ``_fields`` (the canonical keys), ``pairs`` (pairing
files). Training inputs that are not joint-space embeddings (VSE precomputed features, frozen
tower features) are read by ``precomp`` and ``features`` with the same error translation.

Nothing is ever unpickled: ``np.load(allow_pickle=False)``, ``torch.load(weights_only=True)``.
Inputs are opened read-only; outputs are written through :mod:`modgap.files` (temporary name,
then rename). See ``docs/formats.md``.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..embeddings import EmbeddingSet
from ..errors import InputError, ModgapError

# isort: off
# each format registers itself on import; this order is the order messages list them in
from . import npy, npz, parquet, clip_retrieval, safetensors_file, torch_file  # noqa: F401

# isort: on
from ._errors import check_input_path, reading
from ._fs import is_remote
from ._registry import FORMATS, Format, detect_format, get_format, output_format, supported
from .pairs import read_pairs, write_pairs
from .source import Part, Source

__all__ = [
    "FORMATS",
    "Format",
    "absolute_paths",
    "check_input_path",
    "detect_format",
    "is_remote",
    "open_source",
    "read_embeddings",
    "read_pairs",
    "reading",
    "source_format",
    "write_embeddings",
    "write_pairs",
]


def read_embeddings(
    path: str | os.PathLike,
    texts: str | os.PathLike | None = None,
    *,
    pairs: str | os.PathLike | None = None,
    format: str | None = None,
    image_key: str | None = None,
    text_key: str | None = None,
    **kwargs: Any,
) -> EmbeddingSet:
    """Read an :class:`~modgap.embeddings.EmbeddingSet` from any supported format.

    Parameters
    ----------
    path : path
        An embedding file (``.npy``, ``.npz``, ``.parquet``, ``.safetensors``, ``.pt``/``.pth``)
        or a clip-retrieval folder.
    texts : path, optional
        The text embeddings when they are in a second file (``.npy`` or ``.parquet`` pairs).
    pairs : path, optional
        ``text_to_image`` from a separate file: a ``.npy`` integer vector, or a text/CSV file
        with one image index per text (see :func:`read_pairs`). Overrides a stored pairing.
    format : str, optional
        Force a format (one of :data:`FORMATS`) instead of guessing from the suffix.
    image_key, text_key : str, optional
        Key (npz, safetensors, torch) or column (parquet) names of the two embedding matrices.
        Defaults: ``image_emb`` / ``text_emb``; ``embedding`` in each file of a parquet pair.
    **kwargs
        Passed to :class:`EmbeddingSet` (e.g. ``paired=False``, ``metadata=``).

    Returns
    -------
    EmbeddingSet
        With ``source`` set to the path as given (``"images, texts"`` for a pair of files).
    """
    given = os.fspath(path)
    if format is not None:
        get_format(format, given)
    fmt = FORMATS[format] if format is not None else None
    check_input_path(path, folder_ok=fmt is None or fmt.folder)
    if texts is not None:
        check_input_path(texts)
    if fmt is None:
        fmt = FORMATS[detect_format(path)]
    if texts is not None and not fmt.pair_files:
        pair_formats = ", ".join(f.name for f in FORMATS.values() if f.pair_files)
        raise InputError(
            f"a separate texts file is only read for {pair_formats} pairs, not {fmt.name}", given
        )
    fields = fmt.read(given, texts, image_key=image_key, text_key=text_key)
    source = given if texts is None else f"{given}, {os.fspath(texts)}"
    if pairs is not None:
        n_texts = len(fields["text_emb"]) if "text_emb" in fields else 0
        fields["text_to_image"] = read_pairs(
            pairs, n_texts=n_texts, n_images=len(fields["image_emb"])
        )
    metadata = {"format": fmt.name, "files": [given] + ([os.fspath(texts)] if texts else [])}
    if pairs is not None:
        metadata["pairs"] = os.fspath(pairs)
    metadata.update(fields.pop("metadata", {}))
    metadata.update(kwargs.pop("metadata", {}) or {})
    fields.update(kwargs)
    return EmbeddingSet(source=source, metadata=metadata, **fields)


def write_embeddings(
    emb: EmbeddingSet,
    path: str | os.PathLike,
    format: str | None = None,
    *,
    texts: str | os.PathLike | None = None,
    pairs: str | os.PathLike | None = None,
    dtype: Any = None,
    shard_size: int | None = None,
    compress: bool = False,
    columns: dict | None = None,
) -> Path:
    """Write ``emb`` to ``path`` atomically.

    Parameters
    ----------
    emb : EmbeddingSet
    path : path
        Output file; the format is inferred from its suffix. A path without suffix (or an
        existing folder) gets the clip-retrieval layout.
    format : str, optional
        One of :data:`FORMATS`, overriding the suffix.
    texts : path, optional
        For formats stored as two files (``npy``, ``parquet``): write the text embeddings to
        this second file (required for ``npy``).
    pairs : path, optional
        Also write ``text_to_image`` to this ``.npy`` (or text file, one index per line). Needed
        by ``npy`` pairs whose pairing is not row-by-row.
    dtype : dtype, optional
        Store the embedding matrices in this float type (e.g. ``float16``); default float32
        (a set read from a clip-retrieval folder keeps that folder's dtypes).
    shard_size : int, optional
        clip-retrieval: rows per shard (default: one shard). With unequal image and text
        counts both sides get the same number of shards, so one side may hold more rows.
    compress : bool
        npz: use ``np.savez_compressed``.
    columns : dict, optional
        clip-retrieval: more per-image metadata columns (name -> one value per image), such as
        ``url`` or a webdataset sample's ``.json`` fields; other formats do not take them.

    Fields a format cannot hold (e.g. ``class_names`` in a ``.npy`` pair) are left out with a
    :class:`~modgap.errors.ModgapNotice`.
    """
    p = Path(path)
    fmt = output_format(p, format)
    if fmt.write is None:
        raise ModgapError(f"{os.fspath(path)}: modgap cannot write the {fmt.name} format")
    dt = np.dtype(dtype) if dtype is not None else np.dtype(np.float32)
    if dt.kind != "f":
        raise ModgapError(f"dtype must be a float type, got {dt}")
    if texts is not None and not fmt.pair_files:
        raise ModgapError(
            f"{os.fspath(texts)}: a separate texts file is only for formats stored as two files"
        )
    if columns and fmt.name != "clip-retrieval":
        raise ModgapError("metadata columns are written only to a clip-retrieval folder")
    if pairs is not None:
        if emb.text_to_image is None:
            raise ModgapError(f"{os.fspath(pairs)}: the set has no pairing to write")
        write_pairs(emb.text_to_image, pairs)
    fmt.write(
        emb,
        p,
        texts=texts,
        pairs_written=pairs is not None,
        dtype=dt,
        shard_size=shard_size,
        compress=compress,
        dtype_given=dtype is not None,
        columns=columns,
    )
    return p


del supported  # re-exported by the registry module only


def source_format(path: str) -> str:
    """The format name of ``path`` for a streaming source: :func:`detect_format` on a local
    disk; by suffix for a URL, the folder format when it has none (a URL cannot be listed
    cheaply here)."""
    if not is_remote(path):
        return detect_format(path)
    suffix = os.path.splitext(path.rstrip("/"))[1].lower()
    for f in FORMATS.values():
        if suffix and suffix in f.suffixes:
            return f.name
    return next(f.name for f in FORMATS.values() if f.folder)


def open_source(
    path: str | os.PathLike,
    texts: str | os.PathLike | None = None,
    *,
    pairs: str | os.PathLike | None = None,
    format: str | None = None,
    image_key: str | None = None,
    text_key: str | None = None,
    storage_options: dict | None = None,
) -> Source:
    """A streaming :class:`~modgap.io.source.Source` for ``path`` (and ``texts``), through the
    format registry's ``stream`` slot. Only headers are read; errors name the file. Local file
    paths in the shard records are absolute (a Dask worker resolves a relative one from its own
    folder)."""
    given = os.fspath(path)
    name = format or source_format(given)
    fmt = get_format(name, given)
    if fmt.stream is None:
        streamable = ", ".join(f.name for f in FORMATS.values() if f.stream is not None)
        raise InputError(
            f"the {fmt.name} format cannot be streamed (streamable: {streamable}); "
            "it is read into memory instead",
            given,
        )
    src = fmt.stream(
        given,
        None if texts is None else os.fspath(texts),
        image_key=image_key,
        text_key=text_key,
        storage_options=storage_options,
    )
    if pairs is not None:
        t2i = read_pairs(pairs, n_texts=src.n_texts, n_images=src.n_images)
        src = dataclasses.replace(src, pairing="index", text_to_image=t2i)
    return absolute_paths(src)


def absolute_paths(source: Source) -> Source:
    """``source`` with every local file of its shards (embeddings and metadata) as an absolute
    path, resolved from this process's folder; URLs (``scheme://``) stay as they are.

    The shard records travel to Dask workers, which resolve a relative path from their own
    working folder, not the user's: ``big/text_emb/text_emb_00.npy`` would not be found there.
    """

    def fix(path: str | None) -> str | None:
        return path if path is None or "://" in path else os.path.abspath(path)

    def part(p: Part | None) -> Part | None:
        return None if p is None else dataclasses.replace(p, path=fix(p.path))

    shards = tuple(
        dataclasses.replace(
            s,
            image=part(s.image),
            text=part(s.text),
            metadata=fix(s.metadata),
            text_metadata=fix(s.text_metadata),
        )
        for s in source.shards
    )
    return dataclasses.replace(source, shards=shards)
