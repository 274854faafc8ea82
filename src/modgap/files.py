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

* :func:`output_lock` — one writer per output: a lock on ``.NAME.lock`` beside the target, held
  for the whole run (the operating system releases it when the process dies); a second run
  onto the same output fails at once with one line.
* :func:`local_path` — the one reading of a path option: ``file://`` URLs are local paths,
  other URLs are refused for outputs.

Temporary names carry the writer's process id (``.NAME.<pid>.<random>.tmp``, a folder moved
aside ``.NAME.<pid>.<random>.old``); the next run that writes the same target removes those of
processes that no longer exist, and puts back an ``.old`` folder whose replacement never
landed. An output folder records the files modgap wrote in it (:data:`MANIFEST`), so a later
run replaces it only when it holds nothing else.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .errors import ModgapError, notice
from .provenance import jsonable

__all__ = [
    "MANIFEST",
    "atomic_path",
    "check_output_folder",
    "check_paths",
    "clean_stale",
    "local_path",
    "output_folder",
    "output_lock",
    "sha256_file",
    "swap_in",
    "write_json",
]

#: the list of files modgap wrote into an output folder (hidden, written at the swap-in)
MANIFEST = ".modgap-files.json"

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


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
    """Remove the temporaries left beside ``target`` by killed runs (their process is gone).

    A run killed between moving the old folder aside and renaming the new one in leaves no
    ``target`` and an ``.old`` folder: that one is put back (the newest, if several), not
    deleted. Call it holding :func:`output_lock` on ``target``.
    """
    target = Path(target)
    parent = target.parent if str(target.parent) else Path(".")
    if not parent.is_dir():
        return
    prefix = f".{target.name}."
    stale: list[tuple[Path, str]] = []
    for entry in parent.iterdir():
        name = entry.name
        if not name.startswith(prefix):
            continue
        # .NAME.<pid>.<random>.tmp[.suffix] or .NAME.<pid>.<random>.old (mkstemp's random
        # part holds letters, digits and '_', never a dot)
        parts = name[len(prefix) :].split(".")
        if len(parts) < 3 or not parts[0].isdigit() or parts[2] not in ("tmp", "old"):
            continue
        if (parts[2] == "old" and len(parts) != 3) or _pid_alive(int(parts[0])):
            continue
        stale.append((entry, parts[2]))
    olds = [e for e, kind in stale if kind == "old"]
    if olds and not os.path.lexists(target):
        keep = max(olds, key=lambda e: e.lstat().st_mtime_ns)
        os.replace(keep, target)
        notice(f"put back {target}, which an interrupted run had moved aside")
        stale = [(e, k) for e, k in stale if e != keep]
    for entry, _ in stale:
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


def _lock_file(target: Path) -> Path:
    return target.parent / f".{target.name}.lock"


# locks this process holds: lock file -> [fd, depth]; a run nests output_lock calls on one
# target (reduce_to_folder, then output_folder), and a second flock of the same file from
# this process would refuse it
_HELD: dict[str, list[int]] = {}


@contextmanager
def output_lock(target: str | os.PathLike, what: str = "--out") -> Iterator[None]:
    """Hold the exclusive lock of the output ``target`` (``.NAME.lock`` beside it) for the
    block; another process holding it is a one-line :class:`~modgap.errors.ModgapError`.

    The lock is an ``flock`` on the lock file, released by the operating system when the
    process ends however it ends, so a killed run never leaves a stale lock (only a lock file,
    which the next run takes over). A finished run removes the file while still holding it;
    a run that locked the file just removed sees so and locks the new one.
    """
    target = Path(target)
    lock = _lock_file(target)
    key = os.path.join(os.path.realpath(lock.parent), lock.name)
    if key in _HELD:
        _HELD[key][1] += 1
        try:
            yield
        finally:
            _HELD[key][1] -= 1
        return
    try:
        import fcntl
    except ImportError:  # no flock (Windows): one writer per output is the user's care
        yield
        return
    lock.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise ModgapError(
                f"another modgap run is writing {target} (pid {holder}); wait for it or choose "
                f"another {what}"
            ) from None
        # the holder before us removes the file before it lets go: a lock on a removed file
        # locks nothing, so take it again on the file now there
        try:
            same = os.stat(lock).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    _HELD[key] = [fd, 1]
    try:
        yield
    finally:
        _HELD[key][1] -= 1
        if _HELD[key][1] == 0:
            del _HELD[key]
            lock.unlink(missing_ok=True)  # still held: nobody holds a lock on it meanwhile
            os.close(fd)  # releases the lock


def local_path(label: str, text: str | os.PathLike | None, *, output: bool = True) -> str | None:
    """The local path a path option names: ``file:///abs/p`` is ``/abs/p``.

    Parameters
    ----------
    label : str
        The option, for the message (``--out``).
    text : str or None
        What the user gave; ``None`` and ``-`` (stdout) pass through.
    output : bool
        Outputs are written to local paths only: any other URL (``s3://``, ``memory://``)
        is refused. Inputs keep them (the streaming readers open them through fsspec).

    Raises
    ------
    ModgapError
        One line naming the option and the fix.
    """
    if text is None:
        return None
    s = os.fspath(text)
    if not _URL.match(s):
        return s
    scheme = s.split(":", 1)[0].lower()
    if scheme == "file":
        from urllib.parse import unquote, urlsplit

        parts = urlsplit(s)
        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
            raise ModgapError(
                f"{label} {s}: a file:// URL names an absolute local path (file:///abs/path)"
            )
        return unquote(parts.path)
    if output:
        raise ModgapError(
            f"{label} {s}: modgap writes outputs to local paths only; write locally and copy"
        )
    return s


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
    with atomic_path(path, ".json") as tmp:
        tmp.write_text(json.dumps(jsonable(obj), indent=2, allow_nan=False) + "\n", "utf-8")
    return Path(path)


def _listing(folder: Path) -> list[str]:
    """Every file and folder under ``folder``, as sorted relative POSIX paths."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))


def check_output_folder(
    path: str | os.PathLike, marker: str | None = None, what: str = "output"
) -> bool:
    """Whether :func:`output_folder` would replace an earlier output at ``path``; raises the
    one-line error it would raise (not a folder, someone else's files) — call it before the
    work starts.

    A folder is replaced only when modgap wrote every file in it: its :data:`MANIFEST` lists
    them all (and, with ``marker``, the marker is there). Any other file — a note the user
    added, a folder written before modgap kept a manifest — refuses it, naming that file."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ModgapError(f"{what} {path} exists and is not a folder; choose a folder path")
    replacing = path.is_dir() and any(path.iterdir())
    if not replacing:
        return False
    if marker is not None and not (path / marker).exists():
        raise ModgapError(
            f"{what} {path} is a folder with files modgap did not write (no {marker}); "
            "choose a new or empty folder"
        )
    try:
        written = set(json.loads((path / MANIFEST).read_text("utf-8"))["files"])
    except (OSError, ValueError, KeyError, TypeError):
        raise ModgapError(
            f"{what} {path} has no readable {MANIFEST}, the list of the files modgap wrote there "
            "(an earlier version's output, or edited), so replacing it could delete files that "
            "are not modgap's; move it away or choose a new or empty folder"
        ) from None
    foreign = [name for name in _listing(path) if name != MANIFEST and name not in written]
    if foreign:
        raise ModgapError(
            f"{what} {path} holds {path / foreign[0]}, which modgap did not write (replacing "
            "the folder would delete it); move it away or choose a new or empty folder"
        )
    return True


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
    place; a failure or a kill at any point leaves the old folder or the new one, whole. The
    whole block holds :func:`output_lock` on ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with output_lock(path, what):
        clean_stale(path)
        replacing = check_output_folder(path, marker, what)
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
    leaves the old folder or the new one, whole (:func:`clean_stale` removes what is left, or
    puts the old folder back). The files of ``staging`` are listed in its :data:`MANIFEST`
    first. Call it holding :func:`output_lock` on ``path``."""
    (staging / MANIFEST).write_text(json.dumps({"files": _listing(staging)}) + "\n", "utf-8")
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
    writes = list(writes)
    for label, p in writes:
        # a URL here would land in a local folder named like it (``./s3:/bucket/o``)
        if p is not None and _URL.match(os.fspath(p)):
            local = local_path(label, p)
            raise ModgapError(f"{label} {p}: give the local path {local}, not a file:// URL")
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


def sha256_file(path: str | os.PathLike) -> str:
    """The SHA-256 hex digest of the file at ``path``, read in 1 MiB chunks (a model file is
    named by it in ``reduce.json`` and checked by it before a worker applies it)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
