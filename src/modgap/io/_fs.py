"""Paths through fsspec when it is installed, plain ``os`` otherwise.

A local path (no ``scheme://``) never needs fsspec, so ``pip install modgap`` without extras
streams local folders; ``memory://``, ``s3://``, ``gs://`` ... need ``fsspec`` (the ``scale``
extra) and, for object stores, the user's backend (``s3fs``, ``gcsfs``).
"""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Any

from .._optional import require
from ..errors import ModgapError

__all__ = ["FS", "is_remote", "join", "open_fs"]


def is_remote(path: str) -> bool:
    """Whether ``path`` names a filesystem other than the local one (``scheme://...``)."""
    s = os.fspath(path)
    return "://" in s and not s.startswith("file://")


def join(*parts: str) -> str:
    return "/".join([parts[0].rstrip("/"), *(p.strip("/") for p in parts[1:])])


class FS:
    """The few file operations the sources need, on one filesystem.

    ``local`` is True for the machine's own disks, where ``.npy`` shards are memory-mapped;
    other filesystems are read with ranged reads (``seek`` + ``read``).
    """

    def __init__(self, fs: Any = None):
        self.fs = fs  # an fsspec filesystem, or None for plain os
        self.local = fs is None or "file" in _protocols(fs) or "local" in _protocols(fs)

    def _strip(self, path: str) -> str:
        if self.fs is None:
            return path[len("file://") :] if path.startswith("file://") else path
        return path

    def listdir(self, path: str) -> list[str]:
        """Names (not paths) of the entries of folder ``path``; [] when it is not a folder."""
        if self.fs is None:
            p = self._strip(path)
            return sorted(os.listdir(p)) if os.path.isdir(p) else []
        try:
            if not self.fs.isdir(path):
                return []
            entries = self.fs.ls(path, detail=False)
        except (FileNotFoundError, NotADirectoryError):
            return []
        return sorted(str(e).rstrip("/").rsplit("/", 1)[-1] for e in entries)

    def isdir(self, path: str) -> bool:
        if self.fs is None:
            return os.path.isdir(self._strip(path))
        return bool(self.fs.isdir(path))

    def exists(self, path: str) -> bool:
        if self.fs is None:
            return os.path.exists(self._strip(path))
        return bool(self.fs.exists(path))

    def size(self, path: str) -> int:
        if self.fs is None:
            return os.stat(self._strip(path)).st_size
        return int(self.fs.size(path))

    def mtime(self, path: str) -> float | None:
        """Modification time when the filesystem keeps one (used to fingerprint inputs)."""
        if self.fs is None:
            return os.stat(self._strip(path)).st_mtime
        try:
            info = self.fs.info(path)
        except (OSError, ValueError):
            return None
        for key in ("mtime", "LastModified", "updated", "created"):
            if key in info:
                v = info[key]
                return float(v.timestamp()) if hasattr(v, "timestamp") else float(v)
        return None

    def open(self, path: str, mode: str = "rb"):
        if self.fs is None:
            return open(self._strip(path), mode)
        return self.fs.open(path, mode)

    def local_path(self, path: str) -> str:
        """The plain path of a local file (for ``np.memmap``)."""
        if self.fs is None:
            return self._strip(path)
        return self.fs._strip_protocol(path)


def _protocols(fs: Any) -> tuple[str, ...]:
    p = getattr(fs, "protocol", ())
    return (p,) if isinstance(p, str) else tuple(p)


@lru_cache(maxsize=32)
def _fsspec_fs(protocol: str, options: tuple) -> Any:
    import fsspec

    return fsspec.filesystem(protocol, **dict(options))


def open_fs(path: str, storage_options: dict | None = None) -> FS:
    """The filesystem of ``path``: plain ``os`` for a local path, fsspec for ``scheme://``."""
    if not is_remote(path):
        return FS(None)

    protocol = path.split("://", 1)[0]
    require("fsspec", "scale", f"{path}: reading '{protocol}://' paths")
    try:
        fs = _fsspec_fs(protocol, tuple(sorted((storage_options or {}).items())))
    except (ImportError, ValueError) as e:
        raise ModgapError(
            f"{path}: no fsspec backend for '{protocol}://' ({str(e).splitlines()[0][:120]}); "
            "install it (e.g. s3fs for s3://, gcsfs for gs://)"
        ) from None
    return FS(fs)
