"""The format registry: one :class:`Format` record per embedding file format.

Adding a format is one module that builds a :class:`Format` and calls :func:`register`, plus
its import in ``modgap/io/__init__.py`` (see ``docs/architecture.md``). Dispatch —
:func:`detect_format`, :func:`modgap.io.read_embeddings`, :func:`modgap.io.write_embeddings` and
the streaming sources — goes through :data:`FORMATS` only.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import InputError, ModgapError

__all__ = ["FORMATS", "Format", "detect_format", "get_format", "register", "supported"]


@dataclasses.dataclass(frozen=True)
class Format:
    """One embedding file format.

    Attributes
    ----------
    name : str
        Registry name (``format=`` and ``--format``).
    description : str
        One line for help texts and errors.
    suffixes : tuple of str
        File suffixes it is detected by (lower case, with the dot); empty for folders.
    read : callable
        ``read(path, texts=None, image_key=None, text_key=None) -> dict`` of
        :class:`~modgap.embeddings.EmbeddingSet` fields (plus ``"metadata"``).
    write : callable or None
        ``write(emb, path, *, texts, pairs_written, dtype, shard_size, compress, template)``.
    folder : bool
        Read from / written to a folder (detected for existing folders).
    pair_files : bool
        Images and texts may come as two files (``texts=``).
    stream : callable or None
        ``stream(path, texts=None, ...) -> modgap.io.source.Source`` for out-of-core passes
        (the format's function in :mod:`modgap.io.sources`).
    """

    name: str
    description: str
    suffixes: tuple[str, ...]
    read: Callable[..., dict]
    write: Callable[..., Any] | None = None
    folder: bool = False
    pair_files: bool = False
    stream: Callable[..., Any] | None = None


#: every registered format by name, in registration order
FORMATS: dict[str, Format] = {}


def register(fmt: Format) -> Format:
    """Add ``fmt`` to :data:`FORMATS` (a name or suffix already taken is an error)."""
    if fmt.name in FORMATS:
        raise ValueError(f"format {fmt.name!r} is already registered")
    for other in FORMATS.values():
        clash = set(other.suffixes) & set(fmt.suffixes)
        if clash:
            raise ValueError(f"suffix {sorted(clash)} of {fmt.name!r} is taken by {other.name!r}")
    FORMATS[fmt.name] = fmt
    return fmt


def supported() -> str:
    return "supported: " + "; ".join(f"{f.name} = {f.description}" for f in FORMATS.values())


def get_format(name: str, source: str | None = None) -> Format:
    if name not in FORMATS:
        raise InputError(f"unknown format '{name}'; {supported()}", source)
    return FORMATS[name]


def detect_format(path: str | os.PathLike) -> str:
    """The format name of ``path``: from its suffix, or the folder format for a folder."""
    p = Path(path)
    if p.is_dir():
        return next(f.name for f in FORMATS.values() if f.folder)
    suffix = p.suffix.lower()
    for f in FORMATS.values():
        if suffix in f.suffixes:
            return f.name
    raise InputError(
        f"unknown embedding format '{p.suffix or '(no suffix)'}'; {supported()}", os.fspath(path)
    )


def output_format(path: str | os.PathLike, format: str | None) -> Format:
    """The format to write ``path`` in: ``format``, else from the suffix; a path without a
    suffix (or an existing folder) gets the folder format."""
    p = Path(path)
    if format is not None:
        if format not in FORMATS:
            raise ModgapError(f"{os.fspath(path)}: unknown format '{format}'; {supported()}")
        return FORMATS[format]
    if p.is_dir() or p.suffix == "":
        return next(f for f in FORMATS.values() if f.folder)
    suffix = p.suffix.lower()
    for f in FORMATS.values():
        if suffix in f.suffixes:
            return f
    raise ModgapError(
        f"{os.fspath(path)}: cannot tell the output format from '{p.suffix}'; {supported()}"
    )
