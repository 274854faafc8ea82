"""What every reader shares: one translation of low-level failures into a one-line
:class:`~modgap.errors.InputError` naming the file, and the checks made before any bytes are
trusted (regular file, declared array sizes against the file and the machine)."""

from __future__ import annotations

import os
import re
import stat
import tokenize
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from ..compute import machine_memory
from ..errors import InputError, ModgapError

__all__ = [
    "check_input_path",
    "check_npy_file",
    "check_npz_member",
    "reading",
]

_PICKLE = "which modgap never loads (no unpickling); save plain numeric arrays"

# everything a reader of a damaged file may raise; InputError is re-raised untouched
_READ_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,
    OSError,
    EOFError,
    RuntimeError,
    KeyError,
    IndexError,
    TypeError,
    AttributeError,
    OverflowError,
    MemoryError,
    UnicodeDecodeError,
    SyntaxError,
    tokenize.TokenError,  # numpy parses .npy headers with the tokenizer
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    zlib.error,
)


def _extra_read_errors() -> tuple[type[BaseException], ...]:
    import pickle

    out: list[type[BaseException]] = [pickle.UnpicklingError]
    try:
        from safetensors import SafetensorError

        out.append(SafetensorError)
    except ImportError:  # pragma: no cover - safetensors is a dependency
        pass
    try:
        import pyarrow as pa

        out.append(pa.ArrowException)
    except ImportError:  # pragma: no cover - pyarrow is a dependency
        pass
    return tuple(out)


def reason(e: BaseException) -> str:
    """The first line of an exception message, short enough for a one-line error."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def _starts_with_pickle(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return (
                f.read(1) == b"\x80"
            )  # the PROTO opcode every pickle since protocol 2 starts with
    except OSError:
        return False


@contextmanager
def reading(source: str, what: str) -> Iterator[None]:
    """Turn any low-level read failure into an :class:`InputError` naming ``source``."""
    try:
        yield
    except ModgapError:
        raise
    except (*_READ_ERRORS, *_extra_read_errors()) as e:
        msg = str(e)
        if "Weights only load failed" in msg:
            glob = re.search(r"Unsupported global: GLOBAL ([\w.]+)", msg)
            what_obj = f" ({glob.group(1)})" if glob else ""
            raise InputError(
                f"holds Python objects other than tensors{what_obj}, which modgap never "
                "unpickles (torch.load weights_only=True); save a dict of tensors",
                source,
            ) from None
        if "Object arrays cannot be loaded" in msg or "Python objects in dtype" in msg:
            raise InputError(
                f"has an object array (pickled Python objects), {_PICKLE}", source
            ) from None
        if "pickled" in msg or "magic string" in msg:
            if _starts_with_pickle(source):
                raise InputError(f"is a pickle file, {_PICKLE}", source) from None
            if "pickled" in msg:
                raise InputError(
                    f"cannot read {what}, the file looks corrupt (not a {what} file)", source
                ) from None
        if isinstance(e, FileNotFoundError):
            raise InputError("no such file or folder", source) from None
        if isinstance(e, IsADirectoryError):
            raise InputError(f"is a folder, expected a {what} file", source) from None
        if isinstance(e, PermissionError):
            raise InputError("permission denied (cannot read it)", source) from None
        if isinstance(e, MemoryError):
            raise InputError(
                f"cannot read {what}: it needs more memory than this machine has", source
            ) from None
        if isinstance(e, EOFError) or "0 bytes" in msg or "header too small" in msg:
            raise InputError(
                f"cannot read {what}: the file is empty or truncated", source
            ) from None
        raise InputError(
            f"cannot read {what}, the file looks corrupt ({reason(e)})", source
        ) from None


def check_input_path(path: str | os.PathLike, *, folder_ok: bool = False) -> Path:
    """An input must exist and be a regular file (or, when ``folder_ok``, a folder): a FIFO,
    socket or device would block or stream forever. Checked with ``stat``, never opened."""
    p = Path(path)
    given = os.fspath(path)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise InputError("no such file or folder", given) from None
    except PermissionError:
        raise InputError("permission denied (cannot read it)", given) from None
    except OSError as e:
        raise InputError(f"cannot open it ({reason(e)})", given) from None
    if stat.S_ISDIR(st.st_mode):
        if folder_ok:
            return p
        raise InputError("is a folder, expected a file", given)
    if not stat.S_ISREG(st.st_mode):
        kind = (
            "a FIFO (named pipe)"
            if stat.S_ISFIFO(st.st_mode)
            else "a socket"
            if stat.S_ISSOCK(st.st_mode)
            else "a device"
            if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)
            else "not a regular file"
        )
        raise InputError(f"is {kind}, not a regular file; give a file on disk", given)
    if st.st_size == 0:
        raise InputError("the file is empty (0 bytes)", given)
    return p


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"  # pragma: no cover


def _header(fp: Any, source: str) -> tuple[tuple[int, ...], np.dtype, int]:
    """``(shape, dtype, header length)`` of a ``.npy`` stream, validated (no array read)."""
    from numpy.lib import format as npf

    with reading(source, ".npy"):
        start = fp.tell()
        version = npf.read_magic(fp)
        if version == (1, 0):
            shape, fortran, dtype = npf.read_array_header_1_0(fp, max_header_size=100_000)
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = npf.read_array_header_2_0(fp, max_header_size=100_000)
        else:
            raise InputError(f"unsupported .npy format version {version}", source)
        header_len = fp.tell() - start
    if not isinstance(shape, tuple) or any(
        not isinstance(s, int) or isinstance(s, bool) or s < 0 for s in shape
    ):
        raise InputError(f"cannot read .npy: the header declares the shape {shape!r}", source)
    if dtype.hasobject:
        raise InputError(f"has an object array (pickled Python objects), {_PICKLE}", source)
    del fortran
    return tuple(shape), dtype, header_len


def _declared_bytes(shape: tuple[int, ...], dtype: np.dtype) -> int:
    n = 1
    for s in shape:
        n *= s
    return n * dtype.itemsize


def check_npy_file(path: str | os.PathLike) -> tuple[tuple[int, ...], np.dtype]:
    """Read and check the header of a ``.npy`` file before it is mapped: a shape that is
    not a tuple of non-negative integers, an object dtype, or more declared bytes than the file
    holds are one-line errors. Returns ``(shape, dtype)``."""
    source = os.fspath(path)
    size = os.stat(path).st_size
    with reading(source, ".npy"), open(path, "rb") as fp:
        shape, dtype, header_len = _header(fp, source)
    need = _declared_bytes(shape, dtype)
    if need > size - header_len:
        raise InputError(
            f"cannot read .npy: the header declares {shape} {dtype} ({_human(need)}) but the "
            f"file holds {_human(max(size - header_len, 0))} of data (truncated or corrupt)",
            source,
        )
    return shape, dtype


def check_npz_member(zf: zipfile.ZipFile, key: str, source: str) -> tuple[tuple[int, ...], Any]:
    """Check one ``.npz`` member's declared array against the archive and the machine before
    numpy allocates it (a 4 KB archive may declare a 3.6 TiB array)."""
    name = key if key.endswith(".npy") else key + ".npy"
    with reading(source, f".npz entry '{key}'"):
        info = zf.getinfo(name)
        with zf.open(info) as fp:
            shape, dtype, header_len = _header(fp, source)
    need = _declared_bytes(shape, dtype)
    if need > max(info.file_size - header_len, 0):
        raise InputError(
            f"cannot read .npz entry '{key}': it declares a {shape} {dtype} array "
            f"({_human(need)}) but holds {_human(max(info.file_size - header_len, 0))} "
            "(truncated or corrupt)",
            source,
        )
    if info.compress_type != zipfile.ZIP_STORED and info.file_size > 1100 * max(
        info.compress_size, 1
    ):
        raise InputError(
            f"cannot read .npz entry '{key}': it claims {_human(info.file_size)} from "
            f"{_human(info.compress_size)} compressed, more than deflate can produce (corrupt)",
            source,
        )
    mem = machine_memory()
    if mem and need > mem:
        raise InputError(
            f"cannot read .npz entry '{key}': a {shape} {dtype} array ({_human(need)}) is "
            f"more than this machine's memory ({_human(mem)})",
            source,
        )
    return shape, dtype
