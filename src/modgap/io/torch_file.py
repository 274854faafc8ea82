"""``.pt`` / ``.pth``: a dict of tensors, loaded with ``torch.load(weights_only=True)``."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .._array import to_numpy
from ..embeddings import EmbeddingSet
from ..errors import InputError
from ..files import atomic_path
from ._errors import check_input_path, reading
from ._fields import STRING_KEYS, npz_arrays, pick
from ._registry import Format, register

__all__ = ["read_torch", "write_torch"]


def read_torch(
    path: str, texts=None, image_key: str | None = None, text_key: str | None = None
) -> dict:
    import torch

    check_input_path(path)
    with reading(path, "torch file"):
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
        if key in STRING_KEYS and isinstance(val, (list, tuple)):
            return np.asarray([str(v) for v in val], dtype=str)
        if isinstance(val, (list, tuple)):
            with reading(path, f"torch entry '{key}'"):
                return np.asarray(val)
        if isinstance(val, bool | int) and key == "paired":
            return np.asarray(val)
        raise InputError(f"'{key}' is a {type(val).__name__}, expected a tensor", path)

    return pick(available, get, path, image_key, text_key, require_text=False)


def write_torch(emb: EmbeddingSet, p: Path, *, dtype, **_) -> None:
    import torch

    obj: dict[str, Any] = {}
    for key, val in npz_arrays(emb, dtype).items():
        obj[key] = val.tolist() if key in STRING_KEYS else torch.from_numpy(val)
    with atomic_path(p, p.suffix) as tmp:
        torch.save(obj, tmp)


register(
    Format(
        "torch",
        ".pt/.pth dict of tensors (weights_only)",
        (".pt", ".pth"),
        read_torch,
        write_torch,
    )
)
