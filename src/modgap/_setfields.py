"""The fields an :class:`~modgap.embeddings.EmbeddingSet` and a
:class:`~modgap.features.FeatureSet` share, validated by one set of helpers: labels, class
names, class prompts, string lists (ids, captions) and the index plan of a subset (which
images and texts a subset keeps, re-paired), and the short summary both show as their repr."""

from __future__ import annotations

from typing import Any

import numpy as np

from ._array import as_int_vector, prepare_rows, to_numpy
from .errors import InputError

__all__ = [
    "attached_parts",
    "check_class_names",
    "check_class_prompts",
    "check_labels",
    "string_list",
    "subset_plan",
    "summary_html",
    "summary_repr",
]

#: longest ``source`` a repr shows (its tail: the file name is the informative end)
_SOURCE_CHARS = 60


def check_labels(labels: Any, n_images: int, src: str | None) -> np.ndarray | None:
    """One non-negative class index per image (int64), or ``None``."""
    if labels is None:
        return None
    out = as_int_vector(labels, "labels", n_images, src)
    if out.size and out.min() < 0:
        raise InputError("'labels' must be non-negative class indices", src)
    return out


def check_class_names(names: Any, labels: np.ndarray | None, src: str | None) -> list[str] | None:
    """The class names as strings, at least one, and enough for every label; or ``None``."""
    if names is None:
        return None
    arr = names if isinstance(names, list) else to_numpy(names).tolist()
    if not isinstance(arr, list):
        raise InputError("'class_names' must be a list of strings", src)
    out = [str(c) for c in arr]
    if not out:
        raise InputError("'class_names' is empty; give at least one class", src)
    if labels is not None and labels.size and labels.max() >= len(out):
        raise InputError(
            f"'labels' go up to {int(labels.max())} but only {len(out)} class names are given",
            src,
        )
    return out


def check_class_prompts(
    cte: Any, d: int | None, names: list[str] | None, src: str | None, normalize: bool
) -> np.ndarray | None:
    """Class prompt embeddings ``(c, d)`` or ``(c, templates, d)``, validated."""
    if cte is None:
        return None
    arr = to_numpy(cte)
    unit = "stored" if normalize else "checked"
    if arr.dtype == object:
        raise InputError("'class_text_emb' is an object array; save plain numeric arrays", src)
    if arr.ndim == 2:
        out = prepare_rows(arr, "class_text_emb", src, unit=unit, dim=d, notice_divided=True)
    elif arr.ndim == 3:
        c, t, w = arr.shape
        if c == 0 or t == 0 or w == 0:
            raise InputError(
                f"'class_text_emb' has shape {tuple(arr.shape)}: it holds no prompt "
                "embeddings (classes, templates and dimensions must all be >= 1)",
                src,
            )
        flat = prepare_rows(
            arr.reshape(c * t, w), "class_text_emb", src, unit=unit, dim=d, notice_divided=True
        )
        out = flat.reshape(c, t, w)
    else:
        raise InputError(
            "'class_text_emb' must be (classes, d) or (classes, templates, d), "
            f"got shape {tuple(arr.shape)}",
            src,
        )
    if names is not None and out.shape[0] != len(names):
        raise InputError(
            f"'class_text_emb' has {out.shape[0]} classes but 'class_names' has {len(names)}",
            src,
        )
    return out


def string_list(val: Any, name: str, n: int, src: str | None) -> list[str] | None:
    """``n`` strings (ids, captions) from a list or an array, or ``None``."""
    if val is None:
        return None
    out = [str(v) for v in (val.tolist() if hasattr(val, "tolist") else val)]
    if len(out) != n:
        raise InputError(f"'{name}' has {len(out)} entries, expected {n}", src)
    return out


def subset_plan(
    text_to_image: np.ndarray | None, n_images: int, image_index: Any
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """``(images kept, texts kept, new text_to_image)`` for keeping ``image_index`` (in that
    order) and exactly the texts that describe them, re-indexed. Unpaired: texts as they are
    (``None``, ``None``)."""
    idx = np.asarray(image_index, dtype=np.int64)
    if text_to_image is None:
        return idx, None, None
    new_pos = np.full(n_images, -1, dtype=np.int64)
    new_pos[idx] = np.arange(idx.size)
    keep = np.flatnonzero(new_pos[text_to_image] >= 0)
    keep = keep[np.argsort(new_pos[text_to_image[keep]], kind="stable")]
    return idx, keep, new_pos[text_to_image[keep]]


def attached_parts(
    text_to_image: np.ndarray | None,
    n_images: int,
    n_texts: int,
    labels: np.ndarray | None,
    class_names: Any,
    class_prompts: np.ndarray | None,
    strings: dict[str, Any],
    metadata: dict,
    source: str | None,
) -> list[tuple[str, str]]:
    """What a set holds beside its arrays, as ``(field, short value)`` pairs for
    :func:`summary_repr` and :func:`summary_html`: pairing, labels, class prompts, the string
    lists present, metadata keys and the source (its last characters)."""
    parts: list[tuple[str, str]] = []
    if text_to_image is not None:
        per = n_texts / max(n_images, 1)
        parts.append(("pairing", "1 text per image" if per == 1 else f"{per:.3g} texts per image"))
    else:
        parts.append(("pairing", "unpaired"))
    if labels is not None:
        n_classes = len(class_names) if class_names is not None else int(labels.max()) + 1
        parts.append(("labels", f"{n_classes} classes"))
    if class_prompts is not None:
        shape = "×".join(str(s) for s in class_prompts.shape[:-1])
        parts.append(("class prompts", shape))
    present = [name for name, value in strings.items() if value is not None]
    if present:
        parts.append(("strings", ", ".join(present)))
    if metadata:
        keys = list(metadata)
        parts.append(("metadata", ", ".join(keys[:4]) + (", …" if len(keys) > 4 else "")))
    if source:
        text = str(source)
        parts.append(
            ("source", text if len(text) <= _SOURCE_CHARS else "…" + text[-_SOURCE_CHARS:])
        )
    return parts


def summary_repr(kind: str, parts: list[tuple[str, str]]) -> str:
    """``Kind(field: value; ...)``: one line of counts and what is attached, never the arrays
    (a notebook cell showing a set prints this, not kilobytes of numbers)."""
    return f"{kind}(" + "; ".join(f"{k}: {v}" for k, v in parts) + ")"


def summary_html(kind: str, parts: list[tuple[str, str]]) -> str:
    """The same summary as a small HTML table, for notebooks (``_repr_html_``)."""
    from html import escape

    rows = "".join(
        f"<tr><th style='text-align:left'>{escape(k)}</th><td style='text-align:left'>"
        f"{escape(v)}</td></tr>"
        for k, v in parts
    )
    return f"<table><caption style='text-align:left'><b>{escape(kind)}</b></caption>{rows}</table>"
