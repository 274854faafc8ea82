"""The canonical fields of an embedding file and how they map onto an EmbeddingSet: shared by
every format's reader and writer."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..embeddings import EmbeddingSet
from ..errors import InputError, notice

__all__ = [
    "OPTIONAL",
    "STRING_KEYS",
    "canonical",
    "dropped",
    "is_identity",
    "missing",
    "npz_arrays",
    "pick",
    "strings",
    "unpaired_equal",
]

# canonical optional keys (besides the two embedding matrices) and the string-valued ones
OPTIONAL = ("text_to_image", "labels", "class_names", "class_text_emb", "image_ids", "texts")
STRING_KEYS = ("class_names", "image_ids", "texts")
UNPAIRED_NOTE = "paired=False (equal counts read back as row-by-row pairs)"


def missing(key: str, found: list[str], source: str, hint: str = "") -> InputError:
    return InputError(f"missing key '{key}' (found: {', '.join(found) or 'none'}){hint}", source)


def strings(arr: Any, key: str, source: str) -> list[str]:
    a = np.asarray(arr)
    if a.dtype.kind == "S":
        try:
            return [s.decode("utf-8") for s in a.reshape(-1).tolist()]
        except UnicodeDecodeError:
            raise InputError(f"'{key}' holds bytes that are not UTF-8 text", source) from None
    if a.dtype.kind != "U":
        raise InputError(f"'{key}' must be an array of strings, got dtype {a.dtype}", source)
    return [str(s) for s in a.reshape(-1).tolist()]


def paired_flag(value: Any, source: str) -> bool:
    """The stored ``paired`` flag: one boolean (or 0/1), nothing else."""
    flag = np.asarray(value)
    if flag.dtype == object or flag.size != 1 or flag.dtype.kind not in "biu":
        raise InputError(
            f"'paired' must be one boolean, got {flag.dtype} of shape {flag.shape}", source
        )
    v = flag.reshape(-1)[0]
    if v not in (0, 1):
        raise InputError(f"'paired' must be true or false, got {v!r}", source)
    return bool(v)


def pick(
    available: list[str],
    get: Callable[[str], Any],
    source: str,
    image_key: str | None,
    text_key: str | None,
    *,
    require_text: bool = True,
) -> dict:
    """Collect the canonical fields from a key-value container (npz, safetensors, torch).

    Without ``text_emb``, a set with ``class_text_emb`` (zero-shot: images, labels and class
    prompts only) is accepted when ``require_text`` is false for it.
    """
    ik, tk = image_key or "image_emb", text_key or "text_emb"
    hint = "; name other keys with image_key=/text_key=" if not (image_key or text_key) else ""
    if ik not in available:
        raise missing(ik, available, source, hint)
    fields: dict[str, Any] = {"image_emb": get(ik)}
    if tk in available:
        fields["text_emb"] = get(tk)
    elif require_text or text_key or "class_text_emb" not in available:
        raise missing(
            tk,
            available,
            source,
            hint or "; a zero-shot set without captions needs 'class_text_emb'",
        )
    for key in OPTIONAL:
        if key in available and key not in (ik, tk):
            val = get(key)
            fields[key] = strings(val, key, source) if key in STRING_KEYS else val
    if "paired" in available:
        fields["paired"] = paired_flag(get("paired"), source)
    return fields


def canonical(emb: EmbeddingSet) -> dict[str, Any]:
    """The canonical fields of ``emb`` that are set (``text_to_image`` kept only when it is
    not the implicit row-by-row pairing)."""
    out: dict[str, Any] = {"image_emb": emb.image_emb, "text_emb": emb.text_emb}
    t2i = emb.text_to_image
    if t2i is not None and not is_identity(emb):
        out["text_to_image"] = t2i
    for key in ("labels", "class_names", "class_text_emb", "image_ids", "texts"):
        val = getattr(emb, key)
        if val is not None:
            out[key] = val
    return out


def is_identity(emb: EmbeddingSet) -> bool:
    t2i = emb.text_to_image
    return (
        t2i is not None
        and emb.n_images == emb.n_texts
        and bool(np.array_equal(t2i, np.arange(emb.n_texts)))
    )


def unpaired_equal(emb: EmbeddingSet) -> bool:
    return emb.text_to_image is None and emb.n_images == emb.n_texts


def dropped(target: str, fields: list[str]) -> None:
    if fields:
        notice(f"{target}: not stored by this format: {', '.join(fields)}")


def as_dtype(a: np.ndarray, dt: np.dtype) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=dt)


def npz_arrays(
    emb: EmbeddingSet, dtype: np.dtype, skip: tuple[str, ...] = ()
) -> dict[str, np.ndarray]:
    """The canonical fields of ``emb`` as arrays (embeddings in ``dtype``), but ``skip``
    (never converted: a writer that stores the embeddings elsewhere passes them here)."""
    arrays: dict[str, np.ndarray] = {}
    for key, val in canonical(emb).items():
        if key in skip:
            continue
        if key in STRING_KEYS:
            arrays[key] = np.asarray(list(val), dtype=str)
        elif key in ("image_emb", "text_emb", "class_text_emb"):
            arrays[key] = as_dtype(val, dtype)
        else:
            arrays[key] = np.asarray(val, dtype=np.int64)
    if unpaired_equal(emb):
        arrays["paired"] = np.asarray(False)  # else equal counts would read back as pairs
    return arrays
