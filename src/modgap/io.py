"""Reading and writing embeddings in every supported format, atomically and without pickle.

Formats (chosen from the suffix, or a folder; ``format=`` overrides):

========================  =====================================================================
``npy``                   a pair of ``.npy`` files, images then texts (memory-mapped reading)
``npz``                   one ``.npz`` in the canonical layout (``image_emb``, ``text_emb``, ...)
``clip-retrieval``        a folder ``img_emb/img_emb_{i}.npy``, ``text_emb/text_emb_{i}.npy``,
                          ``metadata/metadata_{i}.parquet`` (shards in numeric order)
``parquet``               one file with ``image_emb`` and ``text_emb`` list columns, or a pair
                          of files with an ``embedding`` column each
``safetensors``           the canonical keys as tensors (strings in the header metadata)
``torch``                 ``.pt`` / ``.pth``: a dict of tensors, loaded with ``weights_only=True``
========================  =====================================================================

Every failure to read becomes a one-line :class:`~modgap.errors.InputError` naming the file.
Nothing is ever unpickled: ``np.load(allow_pickle=False)``, ``torch.load(weights_only=True)``.
Inputs are opened read-only; outputs are written to a temporary name and renamed into place.
See ``docs/formats.md``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import zipfile
import zlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from ._array import as_float_matrix, to_numpy
from .embeddings import EmbeddingSet
from .errors import InputError, ModgapError, notice

__all__ = [
    "FORMATS",
    "atomic_dir",
    "atomic_path",
    "detect_format",
    "read_embeddings",
    "read_pairs",
    "write_embeddings",
    "write_json",
]

#: Format names accepted by ``format=``, with what each one is.
FORMATS: dict[str, str] = {
    "npy": "a pair of .npy files (images, texts)",
    "npz": ".npz with the canonical keys",
    "clip-retrieval": "clip-retrieval folder (img_emb/, text_emb/, metadata/)",
    "parquet": ".parquet (one file with two list columns, or a pair of files)",
    "safetensors": ".safetensors with the canonical keys",
    "torch": ".pt/.pth dict of tensors (weights_only)",
}

_SUFFIXES = {
    ".npy": "npy",
    ".npz": "npz",
    ".parquet": "parquet",
    ".safetensors": "safetensors",
    ".pt": "torch",
    ".pth": "torch",
}

# canonical optional keys (besides the two embedding matrices) and the string-valued ones
_OPTIONAL = ("text_to_image", "labels", "class_names", "class_text_emb", "image_ids", "texts")
_STRING_KEYS = ("class_names", "image_ids", "texts")


def _supported() -> str:
    return "supported: " + "; ".join(f"{k} = {v}" for k, v in FORMATS.items())


def _reason(e: BaseException) -> str:
    """The first line of an exception message, short enough for a one-line error."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return text if len(text) <= 160 else text[:157] + "..."


# everything a reader of a damaged file may raise; InputError is re-raised untouched
_READ_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,
    OSError,
    EOFError,
    RuntimeError,
    KeyError,
    IndexError,
    TypeError,
    zipfile.BadZipFile,
    zlib.error,
)


def _extra_read_errors() -> tuple[type[BaseException], ...]:
    import pickle

    from safetensors import SafetensorError

    return (pickle.UnpicklingError, SafetensorError)


def _starts_with_pickle(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return (
                f.read(1) == b"\x80"
            )  # the PROTO opcode every pickle since protocol 2 starts with
    except OSError:
        return False


_PICKLE = "which modgap never loads (no unpickling); save plain numeric arrays"


@contextmanager
def _reading(source: str, what: str) -> Iterator[None]:
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
        if "pickled" in msg:
            if _starts_with_pickle(source):
                raise InputError(f"is a pickle file, {_PICKLE}", source) from None
            raise InputError(
                f"cannot read {what}, the file looks corrupt (not a {what} file)", source
            ) from None
        if isinstance(e, FileNotFoundError):
            raise InputError("no such file or folder", source) from None
        if isinstance(e, EOFError) or "0 bytes" in msg or "header too small" in msg:
            raise InputError(
                f"cannot read {what}: the file is empty or truncated", source
            ) from None
        raise InputError(
            f"cannot read {what}, the file looks corrupt ({_reason(e)})", source
        ) from None


# -- atomic outputs -------------------------------------------------------------------------------
def _mode(path: Path, default: int) -> int:
    """The permission bits for a new ``path``: an existing file's, else ``default`` & ~umask."""
    try:
        return path.stat().st_mode & 0o777
    except OSError:
        mask = os.umask(0)
        os.umask(mask)
        return default & ~mask


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ""):
    """Yield a temporary path next to ``path``; on success rename it onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + suffix, dir=path.parent)
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


@contextmanager
def atomic_dir(path: str | os.PathLike):
    """Yield a temporary folder next to ``path``; on success it replaces ``path``.

    An existing folder at ``path`` is moved aside first and deleted only after the new one is in
    place, so a failure at any point leaves either the old or the new folder, never a mix.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and not path.is_dir():
        raise ModgapError(f"{path}: exists and is not a folder")
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, _mode(path, 0o777))
        old = None
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            old.rmdir()
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# -- dispatch ---------------------------------------------------------------------------------
def detect_format(path: str | os.PathLike) -> str:
    """The format name of ``path``: from its suffix, or ``clip-retrieval`` for a folder."""
    p = Path(path)
    if p.is_dir():
        return "clip-retrieval"
    fmt = _SUFFIXES.get(p.suffix.lower())
    if fmt is None:
        raise InputError(
            f"unknown embedding format '{p.suffix or '(no suffix)'}'; {_supported()}",
            os.fspath(path),
        )
    return fmt


def read_embeddings(
    path: str | os.PathLike,
    texts: str | os.PathLike | None = None,
    *,
    pairs: str | os.PathLike | None = None,
    format: str | None = None,
    image_key: str | None = None,
    text_key: str | None = None,
    **kwargs: Any,
) -> EmbeddingSet:
    """Read an :class:`~modgap.embeddings.EmbeddingSet` from any supported format.

    Parameters
    ----------
    path : path
        An embedding file (``.npy``, ``.npz``, ``.parquet``, ``.safetensors``, ``.pt``/``.pth``)
        or a clip-retrieval folder.
    texts : path, optional
        The text embeddings when they are in a second file (``.npy`` or ``.parquet`` pairs).
    pairs : path, optional
        ``text_to_image`` from a separate file: a ``.npy`` integer vector, or a text/CSV file
        with one image index per text (see :func:`read_pairs`). Overrides a stored pairing.
    format : str, optional
        Force a format (one of :data:`FORMATS`) instead of guessing from the suffix.
    image_key, text_key : str, optional
        Key (npz, safetensors, torch) or column (parquet) names of the two embedding matrices.
        Defaults: ``image_emb`` / ``text_emb``; ``embedding`` in each file of a parquet pair.
    **kwargs
        Passed to :class:`EmbeddingSet` (e.g. ``paired=False``, ``metadata=``).

    Returns
    -------
    EmbeddingSet
        With ``source`` set to the path as given (``"images, texts"`` for a pair of files).
    """
    given = os.fspath(path)
    p = Path(path)
    if not p.exists():
        raise InputError("no such file or folder", given)
    if texts is not None and not Path(texts).exists():
        raise InputError("no such file or folder", os.fspath(texts))
    if format is not None and format not in FORMATS:
        raise InputError(f"unknown format '{format}'; {_supported()}", given)
    fmt = format or detect_format(p)
    if p.is_file() and p.stat().st_size == 0:
        raise InputError("the file is empty (0 bytes)", given)
    if texts is not None and Path(texts).is_file() and Path(texts).stat().st_size == 0:
        raise InputError("the file is empty (0 bytes)", os.fspath(texts))
    if texts is not None and fmt not in ("npy", "parquet"):
        raise InputError(
            f"a separate texts file is only read for .npy and .parquet pairs, not {fmt}", given
        )
    keys = {"image_key": image_key, "text_key": text_key}
    if fmt == "npy":
        fields = _read_npy_pair(given, texts)
    elif fmt == "npz":
        fields = _read_npz(given, **keys)
    elif fmt == "clip-retrieval":
        fields = _read_clip_retrieval(given)
    elif fmt == "parquet":
        fields = _read_parquet(given, texts, **keys)
    elif fmt == "safetensors":
        fields = _read_safetensors(given, **keys)
    else:
        fields = _read_torch(given, **keys)
    source = given if texts is None else f"{given}, {os.fspath(texts)}"
    if pairs is not None:
        fields["text_to_image"] = read_pairs(
            pairs, n_texts=len(fields["text_emb"]), n_images=len(fields["image_emb"])
        )
    metadata = {"format": fmt, "files": [given] + ([os.fspath(texts)] if texts else [])}
    if pairs is not None:
        metadata["pairs"] = os.fspath(pairs)
    metadata.update(fields.pop("metadata", {}))
    metadata.update(kwargs.pop("metadata", {}) or {})
    fields.update(kwargs)
    return EmbeddingSet(source=source, metadata=metadata, **fields)


# -- pairs ------------------------------------------------------------------------------------
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
    p = Path(path)
    if not p.exists():
        raise InputError("no such file or folder", given)
    if p.stat().st_size == 0:
        raise InputError("the pairs file is empty (0 bytes)", given)
    if p.suffix.lower() == ".npy":
        with _reading(given, "the .npy pairs file"):
            arr = np.load(p, allow_pickle=False)
    else:
        arr = _read_pairs_text(p, given)
    if arr.ndim != 1:
        raise InputError(f"pairs must be a 1-D vector, got shape {tuple(arr.shape)}", given)
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        if not np.issubdtype(arr.dtype, np.number) or not np.all(arr == np.round(arr)):
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
    with _reading(given, "the pairs file"):
        text = p.read_text(encoding="utf-8")
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
        out[k] = int(val)
    return out


# -- readers ----------------------------------------------------------------------------------
def _load_npy(path: str) -> np.ndarray:
    """Memory-map a ``.npy`` read-only (large files are paged in, never loaded twice)."""
    with _reading(path, ".npy"):
        arr = np.load(path, allow_pickle=False, mmap_mode="r")
    return arr


def _read_npy_pair(images: str, texts: str | os.PathLike | None) -> dict:
    if texts is None:
        raise InputError(
            "a .npy file holds one matrix: give the text embeddings file too "
            "(modgap measure IMAGES.npy TEXTS.npy), or use .npz",
            images,
        )
    texts = os.fspath(texts)
    if Path(texts).suffix.lower() != ".npy":
        raise InputError("the texts file of a .npy pair must be a .npy file too", texts)
    x = as_float_matrix(_load_npy(images), "image_emb", images)
    y = as_float_matrix(_load_npy(texts), "text_emb", texts, dim=x.shape[1])
    return {"image_emb": x, "text_emb": y}


def _missing(key: str, found: list[str], source: str, hint: str = "") -> InputError:
    return InputError(f"missing key '{key}' (found: {', '.join(found) or 'none'}){hint}", source)


def _strings(arr: Any, key: str, source: str) -> list[str]:
    a = np.asarray(arr)
    if a.dtype.kind == "S":
        return [s.decode("utf-8") for s in a.reshape(-1).tolist()]
    if a.dtype.kind != "U":
        raise InputError(f"'{key}' must be an array of strings, got dtype {a.dtype}", source)
    return [str(s) for s in a.reshape(-1).tolist()]


def _pick(
    available: list[str], get, source: str, image_key: str | None, text_key: str | None
) -> dict:
    """Collect the canonical fields from a key-value container (npz, safetensors, torch)."""
    ik, tk = image_key or "image_emb", text_key or "text_emb"
    hint = "; name other keys with image_key=/text_key=" if not (image_key or text_key) else ""
    for key in (ik, tk):
        if key not in available:
            raise _missing(key, available, source, hint)
    fields = {"image_emb": get(ik), "text_emb": get(tk)}
    for key in _OPTIONAL:
        if key in available and key not in (ik, tk):
            val = get(key)
            fields[key] = _strings(val, key, source) if key in _STRING_KEYS else val
    if "paired" in available:
        flag = np.asarray(get("paired"))
        if flag.size != 1:
            raise InputError(f"'paired' must be one boolean, got shape {flag.shape}", source)
        fields["paired"] = bool(flag.reshape(-1)[0])
    return fields


def _read_npz(path: str, image_key: str | None = None, text_key: str | None = None) -> dict:
    with _reading(path, ".npz"):
        z = np.load(path, allow_pickle=False)
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise InputError("is a plain .npy array saved under a .npz name; use .npy", path)

    def get(key: str) -> np.ndarray:
        with _reading(path, f".npz entry '{key}'"):
            return z[key]

    with z:
        return _pick(list(z.files), get, path, image_key, text_key)


def _read_safetensors(path: str, image_key: str | None = None, text_key: str | None = None) -> dict:
    from safetensors import safe_open

    with _reading(path, ".safetensors"):
        f = safe_open(path, framework="np")  # parses and checks the header; data stay mapped
        keys = list(f.keys())
        meta = dict(f.metadata() or {})

    def get(key: str) -> np.ndarray:
        with _reading(path, f".safetensors tensor '{key}'"):
            if f.get_slice(key).get_dtype() in ("BF16", "F8_E4M3", "F8_E5M2"):
                return _safetensors_via_torch(path, key)  # numpy has no such dtypes
            return f.get_tensor(key)

    def get_any(key: str) -> Any:
        if key in keys:
            return get(key)
        try:
            vals = json.loads(meta[key])
        except json.JSONDecodeError:
            vals = None
        if not isinstance(vals, list):
            raise InputError(f"header metadata '{key}' is not a JSON list", path)
        return np.asarray([str(v) for v in vals], dtype=str)

    available = keys + [k for k in _STRING_KEYS if k in meta and k not in keys]
    return _pick(available, get_any, path, image_key, text_key)


def _safetensors_via_torch(path: str, key: str) -> np.ndarray:
    from safetensors import safe_open

    with _reading(path, f".safetensors tensor '{key}'"), safe_open(path, framework="pt") as f:
        return to_numpy(f.get_tensor(key).float())


def _read_torch(path: str, image_key: str | None = None, text_key: str | None = None) -> dict:
    import torch

    with _reading(path, "torch file"):
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=False)
    if not isinstance(obj, Mapping):
        raise InputError(
            f"expected a dict of tensors with keys image_emb, text_emb, got {type(obj).__name__}",
            path,
        )
    available = [str(k) for k in obj]

    def get(key: str) -> Any:
        val = obj[key]
        if isinstance(val, torch.Tensor):
            return to_numpy(val)
        if key in _STRING_KEYS and isinstance(val, (list, tuple)):
            return np.asarray([str(v) for v in val], dtype=str)
        if isinstance(val, (list, tuple)):
            return np.asarray(val)
        raise InputError(f"'{key}' is a {type(val).__name__}, expected a tensor", path)

    return _pick(available, get, path, image_key, text_key)


def _arrow_matrix(column: Any, name: str, source: str) -> np.ndarray:
    """A list / fixed-size-list Arrow column as a (rows, d) numpy matrix (no per-row Python)."""
    import pyarrow as pa

    col = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    t = col.type
    if not (pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)):
        raise InputError(
            f"column '{name}' has type {t}; expected a list or fixed-size-list of floats", source
        )
    if col.null_count:
        raise InputError(f"column '{name}' has {col.null_count} null row(s)", source)
    n = len(col)
    if pa.types.is_fixed_size_list(t):
        d = t.list_size
        values = col.flatten()
    else:
        offsets = col.offsets.to_numpy()
        lengths = np.diff(offsets)
        d = int(lengths[0]) if n else 0
        if n and (lengths != d).any():
            bad = int(np.flatnonzero(lengths != d)[0])
            raise InputError(
                f"column '{name}': rows have different lengths (row 0 has {d}, row {bad} has "
                f"{int(lengths[bad])})",
                source,
            )
        values = col.flatten()
    if values.null_count:
        raise InputError(f"column '{name}' has null values inside its vectors", source)
    if not (pa.types.is_floating(values.type) or pa.types.is_integer(values.type)):
        raise InputError(f"column '{name}' holds {values.type}, expected numbers", source)
    return values.to_numpy(zero_copy_only=False).reshape(n, d)


_ID_COLUMNS = ("image_ids", "image_id", "image_path", "url")
_TEXT_COLUMNS = ("texts", "text", "caption")


def _read_table(path: str, columns: list[str] | None = None):
    import pyarrow.parquet as pq

    with _reading(path, ".parquet"):
        return pq.read_table(path, columns=columns)


def _table_strings(table: Any, names: tuple[str, ...]) -> list[str] | None:
    for name in names:
        if name in table.column_names:
            return [("" if v is None else str(v)) for v in table.column(name).to_pylist()]
    return None


def _read_parquet(
    path: str,
    texts: str | os.PathLike | None,
    image_key: str | None = None,
    text_key: str | None = None,
) -> dict:
    table = _read_table(path)
    cols = list(table.column_names)
    if texts is not None:
        texts = os.fspath(texts)
        ik, tk = image_key or "embedding", text_key or "embedding"
        ttable = _read_table(texts)
        if ik not in cols:
            raise _missing(ik, cols, path, "; name the column with image_key=")
        if tk not in ttable.column_names:
            raise _missing(tk, list(ttable.column_names), texts, "; name the column with text_key=")
        x = as_float_matrix(_arrow_matrix(table.column(ik), ik, path), "image_emb", path)
        y = as_float_matrix(
            _arrow_matrix(ttable.column(tk), tk, texts), "text_emb", texts, dim=x.shape[1]
        )
        fields: dict[str, Any] = {"image_emb": x, "text_emb": y}
        ids, caps = _table_strings(table, _ID_COLUMNS), _table_strings(ttable, _TEXT_COLUMNS)
        if "text_to_image" in ttable.column_names:
            fields["text_to_image"] = ttable.column("text_to_image").to_numpy()
        if "labels" in cols:
            fields["labels"] = table.column("labels").to_numpy()
    else:
        ik, tk = image_key or "image_emb", text_key or "text_emb"
        hint = "; name the columns with image_key=/text_key=, or give a pair of files"
        for key in (ik, tk):
            if key not in cols:
                raise _missing(key, cols, path, hint)
        fields = {
            "image_emb": _arrow_matrix(table.column(ik), ik, path),
            "text_emb": _arrow_matrix(table.column(tk), tk, path),
        }
        ids, caps = _table_strings(table, _ID_COLUMNS), _table_strings(table, _TEXT_COLUMNS)
        for key in ("text_to_image", "labels"):
            if key in cols:
                fields[key] = table.column(key).to_numpy()
    if ids is not None:
        fields["image_ids"] = ids
    if caps is not None:
        fields["texts"] = caps
    return fields


_SHARD = re.compile(r"^(img_emb|text_emb|metadata)_(\d+)\.(npy|parquet)$")


def _shards(folder: Path, kind: str, ext: str) -> list[Path]:
    """The shard files ``{kind}_{i}.{ext}`` of ``folder``, in numeric order of ``i``."""
    if not folder.is_dir():
        return []
    found = []
    for f in folder.iterdir():
        m = _SHARD.match(f.name)
        if m and m.group(1) == kind and m.group(3) == ext:
            found.append((int(m.group(2)), f))
    return [f for _, f in sorted(found)]


def _concat_shards(files: list[Path], name: str, dim: int | None) -> np.ndarray:
    """Concatenate memory-mapped shards into one float32 matrix, checking each shard.

    Each shard is read once, straight into its slice of the output (float16 shards are widened
    there), so the data are never held twice; a single float32 shard stays memory-mapped.
    Errors name the shard file.
    """
    maps = [_load_npy(os.fspath(f)) for f in files]
    d = dim
    for f, m in zip(files, maps, strict=True):
        if m.ndim == 2 and m.shape[0] == 0:
            raise InputError(f"'{name}' shard is empty (0 rows)", os.fspath(f))
        if m.ndim == 2 and d is None:
            d = m.shape[1]
        # type, shape, width; the full row checks come below, once the rows are in place
        as_float_matrix(m[:1], name, os.fspath(f), dim=d, normalize=False)
    if len(maps) == 1 and maps[0].dtype == np.float32:
        return as_float_matrix(maps[0], name, os.fspath(files[0]), normalize=False)
    total = sum(m.shape[0] for m in maps)
    out = np.empty((total, d), dtype=np.float32)
    start = 0
    for f, m in zip(files, maps, strict=True):
        part = out[start : start + m.shape[0]]
        with _reading(os.fspath(f), ".npy shard"):
            part[...] = m
        as_float_matrix(part, name, os.fspath(f), normalize=False)
        start += m.shape[0]
    return out


def _read_clip_retrieval(folder: str) -> dict:
    root = Path(folder)
    entries = [e for e in root.iterdir() if not e.name.startswith(".")]
    if not entries:
        raise InputError(
            "the folder is empty; expected a clip-retrieval layout "
            "(img_emb/img_emb_0.npy, text_emb/text_emb_0.npy, metadata/metadata_0.parquet)",
            folder,
        )
    img = _shards(root / "img_emb", "img_emb", "npy")
    txt = _shards(root / "text_emb", "text_emb", "npy")
    meta = _shards(root / "metadata", "metadata", "parquet")
    if not img or not txt:
        missing = "img_emb/img_emb_{i}.npy" if not img else "text_emb/text_emb_{i}.npy"
        found = sorted(e.name + ("/" if e.is_dir() else "") for e in entries)
        raise InputError(
            f"not a clip-retrieval folder: no {missing} shards (found: {', '.join(found[:10])})",
            folder,
        )
    if len(img) != len(txt):
        raise InputError(
            f"{len(img)} image shards but {len(txt)} text shards; "
            "every img_emb_{i}.npy needs its text_emb_{i}.npy",
            folder,
        )
    for a, b in zip(img, txt, strict=True):
        if _SHARD.match(a.name).group(2) != _SHARD.match(b.name).group(2):
            raise InputError(f"shard numbers do not match: {a.name} vs {b.name}", folder)
    if meta and len(meta) != len(img):
        raise InputError(f"{len(img)} embedding shards but {len(meta)} metadata shards", folder)
    fields: dict[str, Any] = {}
    if (root / "extra.npz").exists():
        fields.update(_read_npz_optional(os.fspath(root / "extra.npz")))
    shapes = {f: _load_npy(os.fspath(f)).shape for f in img + txt}
    for f, shape in shapes.items():
        kind = "image_emb" if f in img else "text_emb"
        if len(shape) != 2:
            raise InputError(
                f"'{kind}' shard must be 2-D (rows, dims), got shape {shape}", os.fspath(f)
            )
        if shape[0] == 0:
            raise InputError(f"'{kind}' shard is empty (0 rows)", os.fspath(f))
    n_img = [shapes[f][0] for f in img]
    if "text_to_image" not in fields and fields.get("paired", True):
        for a, b, na in zip(img, txt, n_img, strict=True):
            nb = shapes[b][0]
            if na != nb:
                raise InputError(
                    f"{na} image rows but {nb} text rows in shard {a.name} / {b.name}; "
                    "clip-retrieval rows are image-caption pairs",
                    folder,
                )
    fields["image_emb"] = _concat_shards(img, "image_emb", None)
    fields["text_emb"] = _concat_shards(txt, "text_emb", fields["image_emb"].shape[1])
    if meta:
        fields.update(_clip_metadata(meta, n_img, fields, folder))
    return fields


_META_IDS = ("image_path", "url", "image_id", "key")
_META_TEXTS = ("caption", "text")


def _clip_metadata(meta: list[Path], n_img: list[int], fields: dict, folder: str) -> dict:
    """``image_ids`` / ``texts`` from the metadata shards (only the columns that are needed)."""
    import pyarrow.parquet as pq

    ids: list[str] | None = []
    caps: list[str] | None = []
    for f, n in zip(meta, n_img, strict=True):
        with _reading(os.fspath(f), ".parquet"):
            names = pq.read_schema(f).names
        id_col = next((c for c in _META_IDS if c in names), None)
        cap_col = next((c for c in _META_TEXTS if c in names), None)
        table = _read_table(os.fspath(f), [c for c in (id_col, cap_col) if c])
        if id_col or cap_col:
            if table.num_rows != n:
                raise InputError(
                    f"{table.num_rows} metadata rows but {n} image embeddings in this shard",
                    os.fspath(f),
                )
        ids = None if ids is None or id_col is None else ids + _table_strings(table, (id_col,))
        caps = None if caps is None or cap_col is None else caps + _table_strings(table, (cap_col,))
    out: dict[str, Any] = {}
    if ids is not None and "image_ids" not in fields:
        out["image_ids"] = ids
    if caps is not None and "texts" not in fields and len(caps) == len(fields["text_emb"]):
        out["texts"] = caps
    return out


def _read_npz_optional(path: str) -> dict:
    """The optional canonical keys of an ``extra.npz`` kept next to a clip-retrieval layout."""
    with _reading(path, ".npz"):
        z = np.load(path, allow_pickle=False)
    out: dict[str, Any] = {}
    with z:
        if "paired" in z.files:
            out["paired"] = bool(z["paired"])
        for key in _OPTIONAL:
            if key in z.files:
                with _reading(path, f".npz entry '{key}'"):
                    val = z[key]
                out[key] = _strings(val, key, path) if key in _STRING_KEYS else val
    return out


# -- writers ----------------------------------------------------------------------------------
def _canonical(emb: EmbeddingSet) -> dict[str, Any]:
    """The canonical fields of ``emb`` that are set (``text_to_image`` kept only when it is
    not the implicit row-by-row pairing)."""
    out: dict[str, Any] = {"image_emb": emb.image_emb, "text_emb": emb.text_emb}
    t2i = emb.text_to_image
    if t2i is not None and not _is_identity(emb):
        out["text_to_image"] = t2i
    for key in ("labels", "class_names", "class_text_emb", "image_ids", "texts"):
        val = getattr(emb, key)
        if val is not None:
            out[key] = val
    return out


def _is_identity(emb: EmbeddingSet) -> bool:
    t2i = emb.text_to_image
    return (
        t2i is not None
        and emb.n_images == emb.n_texts
        and bool(np.array_equal(t2i, np.arange(emb.n_texts)))
    )


def _dropped(target: str, fields: list[str]) -> None:
    if fields:
        notice(f"{target}: not stored by this format: {', '.join(fields)}")


def write_embeddings(
    emb: EmbeddingSet,
    path: str | os.PathLike,
    format: str | None = None,
    *,
    texts: str | os.PathLike | None = None,
    pairs: str | os.PathLike | None = None,
    dtype: Any = None,
    shard_size: int | None = None,
    compress: bool = False,
) -> Path:
    """Write ``emb`` to ``path`` atomically.

    Parameters
    ----------
    emb : EmbeddingSet
    path : path
        Output file; the format is inferred from its suffix. A path without suffix (or an
        existing folder) gets the clip-retrieval layout.
    format : str, optional
        One of :data:`FORMATS`, overriding the suffix.
    texts : path, optional
        For ``npy`` and ``parquet``: write the text embeddings to this second file
        (required for ``npy``).
    pairs : path, optional
        Also write ``text_to_image`` to this ``.npy`` (or text file, one index per line). Needed
        by ``npy`` pairs whose pairing is not row-by-row.
    dtype : dtype, optional
        Store the embedding matrices in this float type (e.g. ``float16``); default float32.
    shard_size : int, optional
        clip-retrieval: rows per shard (default: one shard). With unequal image and text
        counts both sides get the same number of shards, so one side may hold more rows.
    compress : bool
        npz: use ``np.savez_compressed``.

    Fields a format cannot hold (e.g. ``class_names`` in a ``.npy`` pair) are left out with a
    :class:`~modgap.errors.ModgapNotice`.
    """
    p = Path(path)
    if format is None:
        if p.is_dir() or p.suffix == "":
            format = "clip-retrieval"
        else:
            format = _SUFFIXES.get(p.suffix.lower())
            if format is None:
                raise ModgapError(
                    f"{os.fspath(path)}: cannot tell the output format from "
                    f"'{p.suffix}'; {_supported()}"
                )
    elif format not in FORMATS:
        raise ModgapError(f"{os.fspath(path)}: unknown format '{format}'; {_supported()}")
    dt = np.dtype(dtype) if dtype is not None else np.dtype(np.float32)
    if dt.kind != "f":
        raise ModgapError(f"dtype must be a float type, got {dt}")
    if pairs is not None:
        if emb.text_to_image is None:
            raise ModgapError(f"{os.fspath(pairs)}: the set has no pairing to write")
        _write_pairs(emb.text_to_image, pairs)
    writer = {
        "npy": _write_npy,
        "npz": _write_npz,
        "clip-retrieval": _write_clip_retrieval,
        "parquet": _write_parquet,
        "safetensors": _write_safetensors,
        "torch": _write_torch,
    }[format]
    if texts is not None and format not in ("npy", "parquet"):
        raise ModgapError(f"{os.fspath(texts)}: a separate texts file is only for npy/parquet")
    opts = {
        "texts": texts,
        "pairs_written": pairs is not None,
        "dtype": dt,
        "shard_size": shard_size,
        "compress": compress,
    }
    writer(emb, p, **opts)
    return p


def _write_pairs(t2i: np.ndarray, path: str | os.PathLike) -> None:
    p = Path(path)
    if p.suffix.lower() == ".npy":
        with atomic_path(p, ".npy") as tmp:
            np.save(tmp, np.asarray(t2i, dtype=np.int64))
    else:
        with atomic_path(p) as tmp:
            tmp.write_text("".join(f"{int(i)}\n" for i in t2i), encoding="utf-8")


def _emb(a: np.ndarray, dt: np.dtype) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=dt)


def _write_npy(emb: EmbeddingSet, p: Path, *, texts, pairs_written, dtype, **_) -> None:
    if texts is None:
        raise ModgapError(
            f"{p}: a .npy file holds one matrix; pass texts=PATH for the text embeddings"
        )
    if emb.text_to_image is not None and not _is_identity(emb) and not pairs_written:
        raise ModgapError(
            f"{p}: the pairing is not row-by-row and a .npy pair cannot hold it; "
            "pass pairs=PATH or write .npz"
        )
    with atomic_path(p, ".npy") as tmp:
        np.save(tmp, _emb(emb.image_emb, dtype))
    with atomic_path(texts, ".npy") as tmp:
        np.save(tmp, _emb(emb.text_emb, dtype))
    dropped = [k for k in _canonical(emb) if k not in ("image_emb", "text_emb", "text_to_image")]
    _dropped(os.fspath(p), dropped + [_UNPAIRED_NOTE] * _unpaired_equal(emb))


def _npz_arrays(emb: EmbeddingSet, dtype: np.dtype) -> dict[str, np.ndarray]:
    arrays: dict[str, np.ndarray] = {}
    for key, val in _canonical(emb).items():
        if key in _STRING_KEYS:
            arrays[key] = np.asarray(list(val), dtype=str)
        elif key in ("image_emb", "text_emb", "class_text_emb"):
            arrays[key] = _emb(val, dtype)
        else:
            arrays[key] = np.asarray(val, dtype=np.int64)
    if _unpaired_equal(emb):
        arrays["paired"] = np.asarray(False)  # else equal counts would read back as pairs
    return arrays


def _unpaired_equal(emb: EmbeddingSet) -> bool:
    return emb.text_to_image is None and emb.n_images == emb.n_texts


_UNPAIRED_NOTE = "paired=False (equal counts read back as row-by-row pairs)"


def _write_npz(emb: EmbeddingSet, p: Path, *, dtype, compress, **_) -> None:
    arrays = _npz_arrays(emb, dtype)
    with atomic_path(p, ".npz") as tmp:
        # np.savez appends .npz to names without it; the temp name already ends in .npz
        (np.savez_compressed if compress else np.savez)(tmp, **arrays)


def _write_safetensors(emb: EmbeddingSet, p: Path, *, dtype, **_) -> None:
    from safetensors.numpy import save_file

    arrays = _npz_arrays(emb, dtype)
    meta = {k: json.dumps(arrays.pop(k).tolist()) for k in _STRING_KEYS if k in arrays}
    with atomic_path(p, ".safetensors") as tmp:
        save_file(arrays, os.fspath(tmp), metadata=meta or None)


def _write_torch(emb: EmbeddingSet, p: Path, *, dtype, **_) -> None:
    import torch

    obj: dict[str, Any] = {}
    for key, val in _npz_arrays(emb, dtype).items():
        obj[key] = val.tolist() if key in _STRING_KEYS else torch.from_numpy(val)
    with atomic_path(p, p.suffix) as tmp:
        torch.save(obj, tmp)


def _fixed_list(matrix: np.ndarray):
    import pyarrow as pa

    m = np.ascontiguousarray(matrix)
    return pa.FixedSizeListArray.from_arrays(pa.array(m.reshape(-1)), m.shape[1])


def _write_parquet(emb: EmbeddingSet, p: Path, *, texts, pairs_written, dtype, **_) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    dropped = [k for k in ("class_names", "class_text_emb") if getattr(emb, k) is not None]
    dropped += [_UNPAIRED_NOTE] * _unpaired_equal(emb)
    if texts is not None:
        icols: dict[str, Any] = {"embedding": _fixed_list(_emb(emb.image_emb, dtype))}
        tcols: dict[str, Any] = {"embedding": _fixed_list(_emb(emb.text_emb, dtype))}
        if emb.image_ids is not None:
            icols["image_id"] = pa.array(emb.image_ids, pa.string())
        if emb.labels is not None:
            icols["labels"] = pa.array(emb.labels)
        if emb.texts is not None:
            tcols["text"] = pa.array(emb.texts, pa.string())
        if emb.text_to_image is not None and not _is_identity(emb):
            tcols["text_to_image"] = pa.array(emb.text_to_image)
        with atomic_path(p, ".parquet") as tmp:
            pq.write_table(pa.table(icols), tmp)
        with atomic_path(texts, ".parquet") as tmp:
            pq.write_table(pa.table(tcols), tmp)
    else:
        if emb.n_images != emb.n_texts:
            raise ModgapError(
                f"{p}: a single parquet table holds one image and one text per row, but the set "
                f"has {emb.n_images} images and {emb.n_texts} texts; pass texts=PATH to write a "
                "pair of files, or write .npz"
            )
        cols: dict[str, Any] = {
            "image_emb": _fixed_list(_emb(emb.image_emb, dtype)),
            "text_emb": _fixed_list(_emb(emb.text_emb, dtype)),
        }
        if emb.text_to_image is not None and not _is_identity(emb):
            cols["text_to_image"] = pa.array(emb.text_to_image)
        if emb.labels is not None:
            cols["labels"] = pa.array(emb.labels)
        if emb.image_ids is not None:
            cols["image_id"] = pa.array(emb.image_ids, pa.string())
        if emb.texts is not None:
            cols["text"] = pa.array(emb.texts, pa.string())
        with atomic_path(p, ".parquet") as tmp:
            pq.write_table(pa.table(cols), tmp)
    _dropped(os.fspath(p), dropped)


def _write_clip_retrieval(emb: EmbeddingSet, p: Path, *, dtype, shard_size, **_) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if dtype not in (np.float16, np.float32):
        raise ModgapError(f"{p}: clip-retrieval shards are float16 or float32, not {dtype}")
    x, y = emb.image_emb, emb.text_emb
    identity = _is_identity(emb)
    n_shards = 1
    if shard_size is not None:
        if shard_size < 1:
            raise ModgapError(f"shard_size must be at least 1, got {shard_size}")
        # images and texts get the same number of shards (the layout pairs shard i with
        # shard i), none of them empty: with unequal counts the smaller side bounds it
        n_rows = max(emb.n_images, emb.n_texts)
        n_shards = max(1, min(-(-n_rows // shard_size), emb.n_images, emb.n_texts))
    x_parts = np.array_split(np.arange(x.shape[0]), n_shards)
    y_parts = (
        x_parts if emb.n_images == emb.n_texts else np.array_split(np.arange(y.shape[0]), n_shards)
    )
    with atomic_dir(p) as tmp:
        for sub in ("img_emb", "text_emb", "metadata"):
            (tmp / sub).mkdir()
        for i, (xi, yi) in enumerate(zip(x_parts, y_parts, strict=True)):
            np.save(tmp / "img_emb" / f"img_emb_{i}.npy", _emb(x[xi], dtype))
            np.save(tmp / "text_emb" / f"text_emb_{i}.npy", _emb(y[yi], dtype))
            cols: dict[str, Any] = {}
            if emb.image_ids is not None:
                cols["image_path"] = pa.array([emb.image_ids[j] for j in xi], pa.string())
            if emb.texts is not None and emb.n_images == emb.n_texts:
                cols["caption"] = pa.array([emb.texts[j] for j in yi], pa.string())
            if cols:
                pq.write_table(pa.table(cols), tmp / "metadata" / f"metadata_{i}.parquet")
        extra = {
            k: v
            for k, v in _npz_arrays(emb, dtype).items()
            if k not in ("image_emb", "text_emb", "image_ids")
            and not (k == "texts" and emb.n_images == emb.n_texts)
        }
        if emb.text_to_image is not None and not identity:
            extra["text_to_image"] = np.asarray(emb.text_to_image, dtype=np.int64)
        if emb.text_to_image is None:
            extra["paired"] = np.asarray(False)
        if extra:
            # modgap's own addition next to the clip-retrieval layout: pairing, labels, classes
            np.savez(tmp / "extra.npz", **extra)
