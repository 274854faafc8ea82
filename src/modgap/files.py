"""Output files that land whole, and the check that no output destroys an input.

Everything modgap writes goes through this module:

* :func:`atomic_path` — one file: written under a temporary name beside the target, renamed
  into place (``os.replace`` is atomic on POSIX), so a reader never sees half a file.
* :func:`output_folder` — a set of files that belong together (a reduced data set with its
  model and summary; a benchmark's JSON and report): written into a staging folder beside the
  target and swapped in with one rename, so after a kill at any moment the target holds either
  the complete old set or the complete new set, never a mix. A folder that holds files modgap
  did not write is never replaced.
* :func:`write_json` — strict JSON (non-finite floats as strings), atomically.
* :func:`check_paths` — before any work starts, every path a command writes is compared with
  every path it reads (resolved: links, ``..``, hard links, folders containing files); an
  overlap is a one-line error.

Temporary names carry the writer's process id (``.NAME.<pid>.<random>.tmp``); the next run that
writes the same target removes those of processes that no longer exist.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .errors import ModgapError, notice

__all__ = [
    "atomic_path",
    "check_output_folder",
    "check_paths",
    "clean_stale",
    "output_folder",
    "swap_in",
    "write_json",
]


def _mode(path: Path, default: int) -> int:
    """The permission bits for a new ``path``: an existing file's, else ``default`` & ~umask."""
    try:
        return path.stat().st_mode & 0o777
    except OSError:
        mask = os.umask(0)
        os.umask(mask)
        return default & ~mask


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale(target: str | os.PathLike) -> None:
    """Remove the temporaries left beside ``target`` by killed runs (their process is gone)."""
    target = Path(target)
    parent = target.parent if str(target.parent) else Path(".")
    if not parent.is_dir():
        return
    prefix = f".{target.name}."
    for entry in parent.iterdir():
        name = entry.name
        if not name.startswith(prefix):
            continue
        # .NAME.<pid>.<random>.tmp[.suffix] or .NAME.<pid>.<random>.old
        parts = name[len(prefix) :].split(".")
        if len(parts) < 3 or not parts[0].isdigit() or parts[2] not in ("tmp", "old"):
            continue
        if _pid_alive(int(parts[0])):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


def _temp_name(target: Path, suffix: str) -> str:
    return f".{target.name}.{os.getpid()}."  # + mkstemp's random part + suffix


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(path)
    fd, tmp = tempfile.mkstemp(
        prefix=_temp_name(path, suffix), suffix=".tmp" + suffix, dir=path.parent
    )
    os.close(fd)
    try:
        yield Path(tmp)
        # mkstemp makes the file private (0600); give it the mode a plain open() would
        os.chmod(tmp, _mode(path, 0o666))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as strict, indented JSON, atomically (non-finite floats become strings,
    numpy/torch values plain numbers; see :func:`modgap.provenance.jsonable`)."""
    from .provenance import jsonable

    with atomic_path(path, ".json") as tmp:
        tmp.write_text(json.dumps(jsonable(obj), indent=2, allow_nan=False) + "\n", "utf-8")
    return Path(path)


def check_output_folder(
    path: str | os.PathLike, marker: str | None = None, what: str = "output"
) -> bool:
    """Whether :func:`output_folder` would replace an earlier output at ``path``; raises the
    one-line error it would raise (not a folder, someone else's files) — call it before the
    work starts."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ModgapError(f"{what} {path} exists and is not a folder; choose a folder path")
    replacing = path.is_dir() and any(path.iterdir())
    if replacing and marker is not None and not (path / marker).exists():
        raise ModgapError(
            f"{what} {path} is a folder with files modgap did not write (no {marker}); "
            "choose a new or empty folder"
        )
    return replacing


@contextmanager
def output_folder(
    path: str | os.PathLike, marker: str | None = None, what: str = "output"
) -> Iterator[Path]:
    """Yield a staging folder; on success it replaces ``path`` in one rename.

    Parameters
    ----------
    path : path
        The output folder.
    marker : str, optional
        A file name modgap always writes into this kind of folder (e.g. ``reduce.json``). An
        existing non-empty ``path`` without it holds someone else's files and is not replaced
        (:class:`~modgap.errors.ModgapError`); with it, the old set is replaced with a notice.
    what : str
        Named in the messages (``--out``).

    An existing folder at ``path`` is moved aside first and deleted only after the new one is in
    place; a failure or a kill at any point leaves the old folder or the new one, whole.
    """
    path = Path(path)
    replacing = check_output_folder(path, marker, what)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(path)
    tmp = Path(tempfile.mkdtemp(prefix=_temp_name(path, ""), suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, _mode(path, 0o777))
        swap_in(tmp, path, what, replacing)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def swap_in(staging: Path, path: Path, what: str = "output", replacing: bool = False) -> None:
    """Put the finished folder ``staging`` at ``path`` in one rename. An existing ``path`` is
    moved aside first and deleted only after the new one is in place, so a kill at any point
    leaves the old folder or the new one, whole (:func:`clean_stale` removes what is left)."""
    old = None
    if path.exists():
        old = Path(tempfile.mkdtemp(prefix=_temp_name(path, ""), suffix=".old", dir=path.parent))
        old.rmdir()
        os.replace(path, old)
    os.replace(staging, path)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    if replacing:
        notice(f"replaced the previous {what} {path}")


def _identity(p: Path) -> tuple[int, int] | None:
    try:
        st = p.stat()
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def _inside(inner: Path, outer: Path) -> bool:
    return inner == outer or outer in inner.parents


def check_paths(
    reads: Iterable[tuple[str, str | os.PathLike | None]],
    writes: Iterable[tuple[str, str | os.PathLike | None]],
) -> None:
    """Refuse, before any work, an output that would overwrite or replace an input.

    Parameters
    ----------
    reads, writes : iterable of (label, path)
        What a command reads and writes; labels name them in the message (``"--json"``,
        ``"the input"``). ``None`` paths are skipped. A written folder conflicts with every
        input inside it; a written file conflicts with an input folder that contains it; two
        outputs may not be the same path either.

    Raises
    ------
    ModgapError
        One line naming both paths.
    """
    rs = [(label, Path(p)) for label, p in reads if p is not None and str(p) != "-"]
    ws = [(label, Path(p)) for label, p in writes if p is not None and str(p) != "-"]
    resolved_r = [(label, p, p.resolve(), _identity(p)) for label, p in rs]
    resolved_w = [(label, p, p.resolve(), _identity(p)) for label, p in ws]
    for wl, wp, wr, wid in resolved_w:
        for rl, rp, rr, rid in resolved_r:
            same_file = wid is not None and wid == rid
            if same_file or _inside(rr, wr) or _inside(wr, rr):
                how = "overwrite" if same_file or wr == rr else "write inside or replace"
                raise ModgapError(
                    f"{wl} {wp} would {how} {rl} {rp}; choose another path (modgap never "
                    "writes over its inputs)"
                )
    for i, (al, ap, ar, aid) in enumerate(resolved_w):
        for bl, bp, br, bid in resolved_w[i + 1 :]:
            if (aid is not None and aid == bid) or _inside(ar, br) or _inside(br, ar):
                raise ModgapError(f"{al} {ap} and {bl} {bp} are the same place; give two paths")
