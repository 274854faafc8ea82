"""Reducers by name (:data:`~modgap.reducers.base.REDUCERS`, filled as each reducer module is
imported by the package), for the CLI, the benchmark and ``load``."""

from __future__ import annotations

import os
from typing import Any

from ..errors import ModgapError
from .base import REDUCERS, Reducer

__all__ = ["REDUCERS", "get_reducer", "load_reducer"]


def get_reducer(name: str, **params: Any) -> Reducer:
    """A new, unfitted reducer by registry name.

    Example: ``get_reducer("spectral", n_components=30)``.
    """
    if name not in REDUCERS:
        raise ModgapError(f"unknown reducer '{name}' (choose one of: {', '.join(REDUCERS)})")
    return REDUCERS[name]().set_params(**params)


def load_reducer(path: str | os.PathLike) -> Reducer:
    """Load any reducer saved with :meth:`Reducer.save`."""
    return Reducer.load(path)
