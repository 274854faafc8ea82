"""``text_to_image`` from a file of its own: a ``.npy`` integer vector, or text/CSV with one
image index per text."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..files import atomic_path
from ._errors import check_input_path, check_npy_file, reading

__all__ = ["read_pairs", "write_pairs"]

_PAIR_COLUMNS = ("text_to_image", "image_index", "image_idx", "image")


def read_pairs(
    path: str | os.PathLike, n_texts: int | None = None, n_images: int | None = None
) -> np.ndarray:
    """Read a ``text_to_image`` vector: one image index per text.

    ``.npy``: a 1-D integer array. Anything else is read as text: one integer per line, or a
    CSV whose header names a column ``text_to_image`` (or ``image_index``, ``image_idx``,
    ``image``). With ``n_texts`` / ``n_images`` the length and range are checked, and errors
    name this file.
    """
    given = os.fspath(path)
    p = check_input_path(path)
    if p.suffix.lower() == ".npy":
        check_npy_file(p)
        with reading(given, "the .npy pairs file"):
            arr = np.load(p, allow_pickle=False)
    else:
        arr = _read_pairs_text(p, given)
    if arr.ndim != 1:
        raise InputError(f"pairs must be a 1-D vector, got shape {tuple(arr.shape)}", given)
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        if not np.issubdtype(arr.dtype, np.number) or not np.all(np.isfinite(arr)):
            raise InputError("pairs must hold integer image indices", given)
        if not np.all(arr == np.round(arr)):
            raise InputError("pairs must hold integer image indices", given)
    arr = arr.astype(np.int64)
    if n_texts is not None and arr.size != n_texts:
        raise InputError(
            f"{arr.size} pairs for {n_texts} texts; give exactly one image index per text", given
        )
    if n_images is not None and arr.size and (arr.min() < 0 or arr.max() >= n_images):
        bad = int(np.flatnonzero((arr < 0) | (arr >= n_images))[0])
        raise InputError(
            f"pairing index out of range: text {bad} -> image {int(arr[bad])}, "
            f"but there are {n_images} images (valid: 0..{n_images - 1})",
            given,
        )
    return arr


def _is_number(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def _read_pairs_text(p: Path, given: str) -> np.ndarray:
    with reading(given, "the pairs file"):
        text = p.read_text(encoding="utf-8-sig")  # a byte-order mark is not the first entry
    # (line number in the file, content): blank lines and # comments are skipped
    lines = [(i + 1, ln.strip()) for i, ln in enumerate(text.splitlines())]
    lines = [(i, ln) for i, ln in lines if ln and not ln.startswith("#")]
    if not lines:
        raise InputError("the pairs file has no entries", given)
    first = lines[0][1]
    delim = "," if "," in first else ("\t" if "\t" in first else None)
    rows = [
        (i, [c.strip().strip('"') for c in ln.split(delim)] if delim else [ln]) for i, ln in lines
    ]
    header = not all(_is_number(c) for c in rows[0][1])
    col = 0
    if len(rows[0][1]) > 1:
        names = [c.lower() for c in rows[0][1]]
        found = [c for c in _PAIR_COLUMNS if c in names]
        if not header or not found:
            raise InputError(
                f"pairs CSV with {len(names)} columns needs a header naming the column "
                f"{' / '.join(_PAIR_COLUMNS)}"
                + (f" (found: {', '.join(names)})" if header else ""),
                given,
            )
        col = names.index(found[0])
    if header:
        rows = rows[1:]
    out = np.empty(len(rows), dtype=np.int64)
    for k, (lineno, row) in enumerate(rows):
        try:
            val = float(row[col])
        except (ValueError, IndexError):
            raise InputError(
                f"line {lineno}: expected an image index, got {','.join(row)!r}", given
            ) from None
        if not np.isfinite(val) or val != int(val):
            raise InputError(f"line {lineno}: image index {row[col]} is not an integer", given)
        if abs(val) >= 2**62:
            raise InputError(f"line {lineno}: image index {row[col]} is out of range", given)
        out[k] = int(val)
    return out


def write_pairs(t2i: np.ndarray, path: str | os.PathLike) -> None:
    """Write ``text_to_image`` as ``.npy`` (by suffix) or as text, one index per line."""
    p = Path(path)
    if p.suffix.lower() == ".npy":
        with atomic_path(p, ".npy") as tmp:
            np.save(tmp, np.asarray(t2i, dtype=np.int64))
    else:
        with atomic_path(p) as tmp:
            tmp.write_text("".join(f"{int(i)}\n" for i in t2i), encoding="utf-8")
