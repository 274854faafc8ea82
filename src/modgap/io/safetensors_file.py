"""``.safetensors`` with the canonical keys as tensors (string lists in the header metadata)."""

from __future__ import annotations

import json
import os
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

__all__ = ["read_safetensors", "write_safetensors"]


def _via_torch(path: str, key: str) -> np.ndarray:
    from safetensors import safe_open

    with reading(path, f".safetensors tensor '{key}'"), safe_open(path, framework="pt") as f:
        return to_numpy(f.get_tensor(key).float())


def read_safetensors(
    path: str, texts=None, image_key: str | None = None, text_key: str | None = None
) -> dict:
    from safetensors import safe_open

    check_input_path(path)
    with reading(path, ".safetensors"):
        f = safe_open(path, framework="np")  # parses and checks the header; data stay mapped
        keys = list(f.keys())
        meta = dict(f.metadata() or {})

    def get(key: str) -> np.ndarray:
        with reading(path, f".safetensors tensor '{key}'"):
            if f.get_slice(key).get_dtype() in ("BF16", "F8_E4M3", "F8_E5M2"):
                return _via_torch(path, key)  # numpy has no such dtypes
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

    available = keys + [k for k in STRING_KEYS if k in meta and k not in keys]
    return pick(available, get_any, path, image_key, text_key, require_text=False)


def write_safetensors(emb: EmbeddingSet, p: Path, *, dtype, **_) -> None:
    from safetensors.numpy import save_file

    arrays = npz_arrays(emb, dtype)
    meta = {k: json.dumps(arrays.pop(k).tolist()) for k in STRING_KEYS if k in arrays}
    with atomic_path(p, ".safetensors") as tmp:
        save_file(arrays, os.fspath(tmp), metadata=meta or None)


register(
    Format(
        "safetensors",
        ".safetensors with the canonical keys",
        (".safetensors",),
        read_safetensors,
        write_safetensors,
    )
)
