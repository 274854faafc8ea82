"""Out-of-core and distributed passes over sharded embeddings (10³ → 10⁹ rows).

* :func:`open_source` (from :mod:`modgap.io`) — a :class:`Source` over a clip-retrieval
  folder, a pair of ``.npy`` files or parquet, on a local disk or any fsspec filesystem
  (``memory://``, ``s3://``): headers only, nothing is loaded.
* :func:`stream_measures` — every gap measure in one exact moment pass plus exact scans of a
  uniform query sample against the whole pool (estimates with their interval).
* :func:`fit_streaming` — reducers fitted from full-pass moments or on a stated sample (the
  reduced folder is written by :mod:`modgap.workflow`, shard by shard, on these engines).
* :func:`stream_retrieval`, :func:`search_topk` — exact blocked retrieval and top-K search
  across shards.
* :func:`should_stream` / :func:`stream_reason` — whether a command should stream a set: the
  predicted peak of its in-memory route against the memory available
  (:mod:`modgap.io.auto`).
* Engines (:mod:`modgap.stream.engines`): in-process, or Dask (``dask.distributed``); the same
  kernels (:mod:`modgap.stream.kernels`) either way.

See ``docs/scale.md``.
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> module that defines it, imported on first use: ``modgap measure --help`` reads
# the engine names (:data:`ENGINES`) without importing the readers, the kernels or numpy
_EXPORTS: dict[str, str] = {
    "DEFAULT_SAMPLE_QUERIES": ".measures",
    "ENGINES": ".engines",
    "DaskEngine": ".engines",
    "Engine": ".engines",
    "LocalEngine": ".engines",
    "Part": "..io.source",
    "Shard": "..io.source",
    "Source": "..io.source",
    "absolute_paths": "..io",
    "fit_streaming": ".fit",
    "get_engine": ".engines",
    "in_memory_peak": "..io.auto",
    "open_source": "..io",
    "runs_in_process": ".engines",
    "search_topk": ".retrieval",
    "should_stream": "..io.auto",
    "stream_measures": ".measures",
    "stream_reason": "..io.auto",
    "stream_retrieval": ".retrieval",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
