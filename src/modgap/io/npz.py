"""One ``.npz`` in the canonical layout (``image_emb``, ``text_emb``, optional keys)."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from ..embeddings import EmbeddingSet
from ..errors import InputError
from ..files import atomic_path
from ._errors import check_input_path, check_npz_member, reading
from ._fields import npz_arrays, pick
from ._registry import Format, register

__all__ = ["open_npz", "read_npz", "write_npz"]


class _Npz:
    """Checked access to the members of an ``.npz``: every array's declared size is compared
    with the archive and the machine before numpy allocates it."""

    def __init__(self, path: str):
        self.path = path
        check_input_path(path)
        with reading(path, ".npz"):
            if not zipfile.is_zipfile(path):
                with open(path, "rb") as f:
                    head = f.read(6)
                if head == b"\x93NUMPY":
                    raise InputError(
                        "is a plain .npy array saved under a .npz name; use .npy", path
                    )
                raise InputError(
                    "cannot read .npz, the file looks corrupt (not a zip archive)", path
                )
            self.zip = zipfile.ZipFile(path)
            names = self.zip.namelist()
        self.files = [n[:-4] for n in names if n.endswith(".npy")]

    def __contains__(self, key: str) -> bool:
        return key in self.files

    def __getitem__(self, key: str) -> np.ndarray:
        check_npz_member(self.zip, key, self.path)
        with reading(self.path, f".npz entry '{key}'"), self.zip.open(key + ".npy") as fp:
            return np.lib.format.read_array(fp, allow_pickle=False)

    def close(self) -> None:
        self.zip.close()

    def __enter__(self) -> _Npz:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def open_npz(path: str | os.PathLike) -> _Npz:
    """An ``.npz`` opened for checked reading (use as a context manager)."""
    return _Npz(os.fspath(path))


def read_npz(
    path: str, texts=None, image_key: str | None = None, text_key: str | None = None
) -> dict:
    with open_npz(path) as z:
        return pick(list(z.files), z.__getitem__, path, image_key, text_key, require_text=False)


def write_npz(emb: EmbeddingSet, p: Path, *, dtype, compress, **_) -> None:
    arrays = npz_arrays(emb, dtype)
    with atomic_path(p, ".npz") as tmp:
        # np.savez appends .npz to names without it; the temp name already ends in .npz
        (np.savez_compressed if compress else np.savez)(tmp, **arrays)


register(Format("npz", ".npz with the canonical keys", (".npz",), read_npz, write_npz))
