"""A pair of ``.npy`` files, images then texts (memory-mapped, read-only)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .._array import prepare_rows
from ..embeddings import EmbeddingSet
from ..errors import InputError, ModgapError
from ..files import atomic_path
from ._errors import check_input_path, check_npy_file, reading
from ._fields import UNPAIRED_NOTE, as_dtype, canonical, dropped, is_identity, unpaired_equal
from ._registry import Format, register
from .sources import npy_source

__all__ = ["load_npy", "read_npy_pair", "write_npy_pair"]


def load_npy(path: str | os.PathLike) -> np.ndarray:
    """Memory-map a ``.npy`` read-only after checking its header against the file (large files
    are paged in, never loaded twice)."""
    source = os.fspath(path)
    check_input_path(path)
    check_npy_file(path)
    with reading(source, ".npy"):
        return np.load(path, allow_pickle=False, mmap_mode="r")


def read_npy_pair(images: str, texts: str | os.PathLike | None = None, **_) -> dict:
    if texts is None:
        raise InputError(
            "a .npy file holds one matrix: give the text embeddings file too "
            "(modgap measure IMAGES.npy TEXTS.npy), or use .npz",
            images,
        )
    texts = os.fspath(texts)
    if Path(texts).suffix.lower() != ".npy":
        raise InputError("the texts file of a .npy pair must be a .npy file too", texts)
    x = prepare_rows(load_npy(images), "image_emb", images, notice_divided=True)
    y = prepare_rows(load_npy(texts), "text_emb", texts, dim=x.shape[1], notice_divided=True)
    return {"image_emb": x, "text_emb": y}


def write_npy_pair(emb: EmbeddingSet, p: Path, *, texts, pairs_written, dtype, **_) -> None:
    if texts is None:
        raise ModgapError(
            f"{p}: a .npy file holds one matrix; pass texts=PATH for the text embeddings"
        )
    if emb.text_to_image is not None and not is_identity(emb) and not pairs_written:
        raise ModgapError(
            f"{p}: the pairing is not row-by-row and a .npy pair cannot hold it; "
            "pass pairs=PATH or write .npz"
        )
    with atomic_path(p, ".npy") as tmp:
        np.save(tmp, as_dtype(emb.image_emb, dtype))
    with atomic_path(texts, ".npy") as tmp:
        np.save(tmp, as_dtype(emb.text_emb, dtype))
    lost = [k for k in canonical(emb) if k not in ("image_emb", "text_emb", "text_to_image")]
    dropped(os.fspath(p), lost + [UNPAIRED_NOTE] * unpaired_equal(emb))


register(
    Format(
        "npy",
        "a pair of .npy files (images, texts)",
        (".npy",),
        read_npy_pair,
        write_npy_pair,
        pair_files=True,
        stream=npy_source,
    )
)
