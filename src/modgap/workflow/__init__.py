"""Workflows above the methods and the engines: writing a reduced set as one unit.

* :func:`reduce_to_folder` — what ``modgap reduce`` runs: the route is decided once
  (:func:`~.reduce.choose_route`), the reducer is fitted through its own routes (in memory,
  from moments, on a stated sample) and the output is written in the input's format.
* :func:`reduce_folder` — the shard-by-shard writer (staging folder, one marker per shard,
  resume, swap-in); every shard is a task an engine of :mod:`modgap.stream` schedules.
* :func:`fitted_rows_warning` — whether a file is an output of ``modgap reduce`` fitted on its
  own rows (so scores on it are not held-out).

``reducers/`` and ``stream/`` import nothing from here. See ``docs/architecture.md``.
"""

from .reduce import Route, choose_route, reduce_to_folder
from .summary import MODEL, SUMMARY, fitted_rows_warning, reduce_summary
from .write import SHARD_FORMATS, reduce_folder, staging_path

__all__ = [
    "MODEL",
    "SHARD_FORMATS",
    "SUMMARY",
    "Route",
    "choose_route",
    "fitted_rows_warning",
    "reduce_folder",
    "reduce_summary",
    "reduce_to_folder",
    "staging_path",
]
