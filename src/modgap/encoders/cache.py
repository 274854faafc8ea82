"""On-disk cache of tower features, so the second embedding of the same data is fast.

Arrays live in ``$MODGAP_CACHE`` (default ``~/.cache/modgap``) as ``.npy`` files whose name is a
hash of what produced them (tower, resolution, a digest of the input data). A damaged cache file
is ignored and recomputed, never trusted.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..files import atomic_path

__all__ = ["cache_dir", "cached_array", "digest"]


def cache_dir() -> Path:
    """The cache folder: ``$MODGAP_CACHE`` or ``~/.cache/modgap``."""
    env = os.environ.get("MODGAP_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "modgap"


def digest(*parts: object) -> str:
    """A short stable hash of arrays, strings and JSON-able values."""
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, np.ndarray):
            h.update(str((part.dtype.str, part.shape)).encode())
            h.update(np.ascontiguousarray(part).tobytes())
        elif isinstance(part, (list, tuple)) and all(isinstance(p, str) for p in part):
            h.update(json.dumps(list(part)).encode())
        else:
            h.update(json.dumps(part, sort_keys=True, default=str).encode())
        h.update(b"\x00")
    return h.hexdigest()[:20]


def cached_array(
    kind: str, key: str, compute: Callable[[], np.ndarray], enabled: bool = True
) -> np.ndarray:
    """Load ``{cache_dir}/{kind}-{key}.npy`` if it is there and readable, else compute and store."""
    if not enabled:
        return compute()
    path = cache_dir() / f"{kind}-{key}.npy"
    if path.is_file():
        try:
            return np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError):
            pass  # damaged (e.g. an interrupted copy): recompute below
    array = np.ascontiguousarray(compute())
    try:
        with atomic_path(path, ".npy") as tmp:
            np.save(tmp, array, allow_pickle=False)
    except OSError:
        pass  # a read-only home must not stop the work; the next run recomputes
    return array
