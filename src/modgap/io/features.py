"""Frozen-tower feature files for training heads (LiT-style): a ``.npz`` whose image and text
features may have different widths, read into a :class:`~modgap.embeddings.FeatureSet`."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..embeddings import FeatureSet
from ..errors import InputError, ModgapError
from ..files import atomic_path
from ._fields import strings
from .npz import open_npz

__all__ = ["FEATURE_KEYS", "load_features", "write_features"]

FEATURE_KEYS = ("image_features", "text_features")


def load_features(path: str | os.PathLike) -> FeatureSet:
    """Read a ``.npz`` of frozen-tower features whose widths may differ (LiT-style heads).

    Keys: ``image_features`` (n_i, d_i) or (n_i, r, d_i), ``text_features`` (n_t, d_t) or
    (n_t, L, d_t) with ``text_lengths`` (n_t,); optional ``text_to_image`` (n_t,) (row i ↔ row i
    when absent), ``labels`` (n_i,), ``class_names`` (c,), ``class_text_features`` (c, d_t) or
    (c, templates, d_t). Written by :func:`write_features`.
    """
    source = os.fspath(path)
    with open_npz(source) as z:
        missing = [k for k in FEATURE_KEYS if k not in z.files]
        if missing:
            raise InputError(
                f"missing key(s) {', '.join(missing)} (found: {', '.join(z.files) or 'none'})",
                source,
            )
        f = {k: z[k] for k in z.files}
    names = f.get("class_names")
    # FeatureSet holds every check of shapes, widths, NaN and the pairing
    return FeatureSet(
        images=f["image_features"],
        texts=f["text_features"],
        text_to_image=f.get("text_to_image"),
        text_lengths=f.get("text_lengths"),
        labels=f.get("labels"),
        class_texts=f.get("class_text_features"),
        class_names=None if names is None else strings(names, "class_names", source),
        source=source,
    )


def write_features(path: str | os.PathLike, **arrays: np.ndarray) -> Path:
    """Write a features ``.npz`` (keys as in :func:`load_features`) atomically."""
    unknown = set(arrays) - {
        *FEATURE_KEYS,
        "text_lengths",
        "text_to_image",
        "labels",
        "class_names",
        "class_text_features",
    }
    if unknown:
        raise ModgapError(f"unknown feature keys: {', '.join(sorted(unknown))}")
    path = Path(path)
    with atomic_path(path, ".npz") as tmp:
        np.savez(tmp, **{k: np.asarray(v) for k, v in arrays.items()})
    return path
