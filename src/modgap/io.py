"""Reading and writing embeddings. (Minimal first version: .npz and a pair of .npy files.)"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from .embeddings import EmbeddingSet
from .errors import InputError

__all__ = ["atomic_path", "read_embeddings", "write_embeddings"]


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ""):
    """Yield a temporary path next to ``path``; on success rename it onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_embeddings(
    path: str | os.PathLike, texts: str | os.PathLike | None = None, **kwargs
) -> EmbeddingSet:
    """Read an :class:`EmbeddingSet` from ``path`` (and ``texts`` for a pair of files)."""
    path = Path(path)
    if not path.exists():
        raise InputError("no such file or folder", str(path))
    if path.suffix == ".npz":
        try:
            z = np.load(path, allow_pickle=False)
        except ValueError as e:
            raise InputError(f"cannot read .npz ({e})", str(path)) from None
        with z:
            for key in ("image_emb", "text_emb"):
                if key not in z.files:
                    raise InputError(
                        f"missing key '{key}' (found: {', '.join(z.files) or 'none'})", str(path)
                    )
            fields = {k: z[k] for k in z.files}
        return EmbeddingSet(source=str(path), **fields, **kwargs)
    if path.suffix == ".npy" and texts is not None:
        x = np.load(path, allow_pickle=False, mmap_mode="r")
        y = np.load(texts, allow_pickle=False, mmap_mode="r")
        return EmbeddingSet(np.asarray(x), np.asarray(y), source=f"{path}, {texts}", **kwargs)
    raise InputError("unsupported input format", str(path))


def write_embeddings(emb: EmbeddingSet, path: str | os.PathLike) -> Path:
    """Write ``emb`` to ``path`` atomically in the canonical .npz layout."""
    path = Path(path)
    arrays = {"image_emb": emb.image_emb, "text_emb": emb.text_emb}
    if emb.text_to_image is not None:
        arrays["text_to_image"] = emb.text_to_image
    if emb.labels is not None:
        arrays["labels"] = emb.labels
    if emb.class_names is not None:
        arrays["class_names"] = np.asarray(emb.class_names, dtype=str)
    if emb.class_text_emb is not None:
        arrays["class_text_emb"] = emb.class_text_emb
    with atomic_path(path, ".npz") as tmp:
        np.savez(tmp, **arrays)
    return path
