"""Lists of webdataset shards: brace patterns (``{000..099}``, as the webdataset package and
img2dataset write them), folders and explicit files, in natural order, each shard once."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

from ..errors import InputError

__all__ = [
    "SHARD_SUFFIXES",
    "count_braces",
    "expand_braces",
    "find_shards",
    "iter_braces",
    "shard_names",
]

SHARD_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")
_INT_RANGE = re.compile(r"^(-?\d+)\.\.(-?\d+)(?:\.\.-?(\d+))?$")


def expand_braces(pattern: str) -> list[str]:
    """Expand a shard pattern the way webdataset and img2dataset write them (bash braces).

    ``{000000..000009}`` is a range (zero-padded to the wider bound when a bound starts with
    ``0``; ``{0..10..2}`` has a step), ``{a,b}`` a list; groups may repeat and nest. A brace
    group that is neither stays literal, as in bash. :func:`iter_braces` gives the same names
    one at a time (a pattern may name far more shards than exist).

    Raises
    ------
    InputError
        Unbalanced braces.
    """
    return list(iter_braces(pattern))


def iter_braces(pattern: str) -> Iterator[str]:
    """The names of :func:`expand_braces`, in the same order, one at a time: a pattern such as
    ``{0..99999999}.tar`` costs nothing until its names are asked for."""
    start = pattern.find("{")
    if start < 0:
        if "}" in pattern:
            raise InputError("unbalanced braces in shard pattern", pattern)
        yield pattern
        return
    end = _closing(pattern, start)
    head, body, tail = pattern[:start], pattern[start + 1 : end], pattern[end + 1 :]
    options = _brace_options(body)
    if options is None:  # not a range or a list: literal braces around an expanded body
        options = (f"{{{b}}}" for b in iter_braces(body))
    for o in options:
        for t in iter_braces(tail):
            yield head + o + t


def count_braces(pattern: str) -> int:
    """How many names :func:`iter_braces` gives for ``pattern``, without listing them."""
    start = pattern.find("{")
    if start < 0:
        return 1
    end = _closing(pattern, start)
    body, tail = pattern[start + 1 : end], pattern[end + 1 :]
    m = _INT_RANGE.match(body)
    if m:
        here = len(_int_range(m))
    else:
        parts = _top_level_parts(body)
        here = sum(count_braces(p) for p in parts) if parts else count_braces(body)
    return here * count_braces(tail)


def _closing(pattern: str, start: int) -> int:
    depth = 0
    for i in range(start, len(pattern)):
        depth += {"{": 1, "}": -1}.get(pattern[i], 0)
        if depth == 0:
            return i
    raise InputError("unbalanced braces in shard pattern", pattern)


def _int_range(m: re.Match) -> range:
    a, b, step = m.group(1), m.group(2), int(m.group(3) or 1) or 1
    lo, hi = int(a), int(b)
    return range(lo, hi + 1, step) if lo <= hi else range(lo, hi - 1, -step)


def _top_level_parts(body: str) -> list[str]:
    """``body`` split at its top-level commas; [] when it has none (not a list)."""
    parts, depth, last = [], 0, 0
    for i, ch in enumerate(body):
        depth += {"{": 1, "}": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            parts.append(body[last:i])
            last = i + 1
    if not parts:
        return []
    parts.append(body[last:])
    return parts


def _brace_options(body: str) -> Iterator[str] | None:
    m = _INT_RANGE.match(body)
    if m:
        a, b = m.group(1), m.group(2)
        padded = any(s.lstrip("-").startswith("0") for s in (a, b) if s not in ("0", "-0"))
        width = max(len(a), len(b)) if padded else 0
        return (f"{v:0{width}d}" for v in _int_range(m))
    parts = _top_level_parts(body)
    if not parts:
        return None
    return (e for p in parts for e in iter_braces(p))


def _natural(name: str) -> list:
    # 2.tar before 10.tar: CLIP_benchmark numbers its shards without padding
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def _is_shard_name(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(SHARD_SUFFIXES)


def find_shards(sources: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
    """The shard files named by ``sources``, in order.

    Each source is a tar file, a folder (its ``.tar`` / ``.tar.gz`` / ``.tgz`` files, in
    natural order: ``2.tar`` before ``10.tar``; not its subfolders) or a brace pattern such as
    ``shards/{000000..000009}.tar``.

    Raises
    ------
    InputError
        A missing shard (the first one of a pattern, named), a folder without shards, a shard
        listed twice.
    """
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    found: list[Path] = []
    for source in sources:
        text = os.fspath(source)
        path = Path(text)
        if "{" in text and not path.exists():
            # one name at a time, stopping at the first missing shard: a pattern may name
            # 10^8 shards where 3 exist, and listing them first would be the hang
            for k, name in enumerate(iter_braces(text)):
                shard = Path(name)
                if not shard.is_file():
                    raise InputError(
                        f"shard not found (shard {k + 1:,} of the {count_braces(text):,} that "
                        f"{text} names; the {k:,} before it exist)",
                        name,
                    )
                found.append(shard)
        elif path.is_dir():
            shards = sorted(
                (p for p in path.iterdir() if p.is_file() and _is_shard_name(p.name)),
                key=lambda p: _natural(p.name),
            )
            if not shards:
                raise InputError(_no_shards_message(path), text)
            found += shards
        elif path.is_file():
            found.append(path)
        else:
            raise InputError(
                "not found (expected a .tar shard, a folder of shards or a pattern such as "
                "shards/{000000..000009}.tar)",
                text,
            )
    if not found:
        raise InputError("no shards given")
    seen: dict[str, Path] = {}
    for p in found:
        real = os.path.realpath(p)
        if real in seen:
            raise InputError("the same shard is given twice", os.fspath(p))
        seen[real] = p
    return found


def _no_shards_message(folder: Path) -> str:
    inner = sorted(
        d.name
        for d in folder.iterdir()
        if d.is_dir() and any(_is_shard_name(p.name) for p in d.iterdir())
    )
    if inner:  # CLIP_benchmark's root folder: the shards live in test/ (and train/)
        return f"no .tar shards in this folder, but its subfolder {inner[0]}/ has some: give that"
    return (
        "no .tar shards in this folder (a folder of image files needs its captions file: "
        "modgap embed IMAGES_DIR CAPTIONS)"
    )


def shard_names(shards: list[Path]) -> list[str]:
    """Short, unique names for the ids: paths relative to the shards' common folder."""
    absolute = [os.path.abspath(p) for p in shards]
    root = os.path.commonpath([os.path.dirname(p) for p in absolute])
    return [Path(os.path.relpath(p, root)).as_posix() for p in absolute]
