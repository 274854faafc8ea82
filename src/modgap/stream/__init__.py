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

from ..io import absolute_paths, open_source
from ..io.auto import in_memory_peak, should_stream, stream_reason
from ..io.source import Part, Shard, Source
from .engines import ENGINES, DaskEngine, Engine, LocalEngine, get_engine, runs_in_process
from .fit import fit_streaming
from .measures import DEFAULT_SAMPLE_QUERIES, stream_measures
from .retrieval import search_topk, stream_retrieval

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
