"""Out-of-core and distributed passes over sharded embeddings (10³ → 10⁹ rows).

* :func:`open_source` — a :class:`Source` over a clip-retrieval folder, a pair of ``.npy``
  files or parquet, on a local disk or any fsspec filesystem (``memory://``, ``s3://``):
  headers only, nothing is loaded.
* :func:`stream_measures` — every gap measure in one exact moment pass plus exact scans of a
  uniform query sample against the whole pool (estimates with their interval).
* :func:`fit_streaming` — reducers fitted from full-pass moments or on a stated sample (the
  reduced folder is written by :mod:`modgap.workflow`, shard by shard, on these engines).
* :func:`stream_retrieval`, :func:`search_topk` — exact blocked retrieval and top-K search
  across shards.
* :func:`should_stream` / :func:`stream_reason` — whether a command should stream a set: the
  predicted peak of its in-memory route against the memory available (:mod:`.auto`).
* Engines (:mod:`modgap.stream.engines`): in-process, or Dask (``dask.distributed``); the same
  kernels (:mod:`modgap.stream.kernels`) either way.

See ``docs/scale.md``.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from ..errors import InputError
from .auto import in_memory_peak, should_stream, stream_reason
from .engines import ENGINES, DaskEngine, Engine, LocalEngine, get_engine, runs_in_process
from .measures import DEFAULT_SAMPLE_QUERIES, stream_measures
from .source import Part, Shard, Source

__all__ = [
    "DEFAULT_SAMPLE_QUERIES",
    "ENGINES",
    "DaskEngine",
    "Engine",
    "LocalEngine",
    "Part",
    "Shard",
    "Source",
    "absolute_paths",
    "fit_streaming",
    "get_engine",
    "in_memory_peak",
    "open_source",
    "runs_in_process",
    "search_topk",
    "should_stream",
    "stream_measures",
    "stream_reason",
    "stream_retrieval",
]


def _format_of(path: str) -> str:
    from ..io._registry import FORMATS, detect_format
    from ._fs import is_remote

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
    """A streaming :class:`Source` for ``path`` (and ``texts``), through the format registry's
    ``stream`` slot. Only headers are read; errors name the file. Local file paths in the shard
    records are absolute (a Dask worker resolves a relative one from its own folder)."""
    from ..io._registry import FORMATS, get_format

    given = os.fspath(path)
    name = format or _format_of(given)
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
        from ..io.pairs import read_pairs

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


def fit_streaming(*args: Any, **kwargs: Any):
    from .fit import fit_streaming as f

    return f(*args, **kwargs)


def stream_retrieval(*args: Any, **kwargs: Any):
    from .retrieval import stream_retrieval as f

    return f(*args, **kwargs)


def search_topk(*args: Any, **kwargs: Any):
    from .retrieval import search_topk as f

    return f(*args, **kwargs)
