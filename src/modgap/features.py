"""The training inputs of a matching model: :class:`FeatureSet`.

A :class:`FeatureSet` is the training view of the pairs of an
:class:`~modgap.embeddings.EmbeddingSet`: the inputs of a matching model, which need not live
in one joint space (frozen tower features of two widths, region features ``(n_i, r, d)``, word
ids with lengths). Pairing, labels, class names, subsets and splits are validated and computed
by the same helpers as for an :class:`~modgap.embeddings.EmbeddingSet` (:mod:`modgap._setfields`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from ._array import as_int_vector, check_pairing, to_numpy
from ._setfields import (
    attached_parts,
    check_class_names,
    check_class_prompts,
    check_labels,
    string_list,
    subset_plan,
    summary_html,
    summary_repr,
)
from .errors import InputError

__all__ = ["FeatureSet"]


@dataclasses.dataclass(eq=False)
class FeatureSet:
    """Training inputs of a matching model, paired like an :class:`~modgap.embeddings.EmbeddingSet`.

    Parameters
    ----------
    images : array (n_i, d_i) or (n_i, regions, d_i)
        Image inputs (global features, or region / grid features), float.
    texts : array (n_t, d_t), (n_t, L, d_t) float, or (n_t, L) int
        Text inputs: global features, token vectors with ``text_lengths``, or word ids with
        ``text_lengths``.
    text_to_image : array (n_t,) of int, optional
        Image of each text; row ``i`` <-> row ``i`` when absent (equal counts needed).
    text_lengths : array (n_t,) of int, optional
        Valid tokens per text (required for token vectors and word ids).
    labels, class_names : optional
        As in :class:`~modgap.embeddings.EmbeddingSet`.
    class_texts : array (c, d_t) or (c, templates, d_t), optional
        Class prompt *features* (text-tower inputs), for zero-shot evaluation.
    captions : list of str, optional
        The caption strings.
    source : str, optional
    metadata : dict, optional
        E.g. ``{"vocab": Vocabulary}`` for word ids.
    """

    images: np.ndarray
    texts: np.ndarray
    text_to_image: np.ndarray | None = None
    text_lengths: np.ndarray | None = None
    labels: np.ndarray | None = None
    class_texts: np.ndarray | None = None
    class_names: Sequence[str] | None = None
    captions: Sequence[str] | None = None
    source: str | None = None
    metadata: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        src = self.source
        self.images = _feature_array(self.images, "images", (2, 3), src)
        self.texts = _feature_array(self.texts, "texts", (2, 3), src, ints=True)
        n_i, n_t = self.n_images, self.n_texts
        if n_t == 0:
            raise InputError("no texts: a matching model needs image-text pairs", src)
        self.text_to_image = check_pairing(self.text_to_image, n_i, n_t, src)
        if self.text_kind in ("tokens", "ids"):
            if self.text_lengths is None:
                raise InputError("token or word-id texts need their lengths", src)
            lengths = as_int_vector(self.text_lengths, "text_lengths", n_t, src)
            if lengths.size and (lengths.min() < 1 or lengths.max() > self.texts.shape[1]):
                raise InputError(
                    f"'text_lengths' must be in [1, {self.texts.shape[1]}] (the padded length)",
                    src,
                )
            self.text_lengths = lengths
        elif self.text_lengths is not None:
            self.text_lengths = as_int_vector(self.text_lengths, "text_lengths", n_t, src)
        self.labels = check_labels(self.labels, n_i, src)
        self.class_names = check_class_names(self.class_names, self.labels, src)
        if self.class_texts is not None and self.text_kind != "features":
            raise InputError("class prompt features need feature texts (n, d)", src)
        self.class_texts = check_class_prompts(
            self.class_texts, self.text_dim, self.class_names, src, normalize=False
        )
        self.captions = string_list(self.captions, "captions", n_t, src)

    @classmethod
    def from_embeddings(cls, emb: Any) -> FeatureSet:
        """The training view of an :class:`~modgap.embeddings.EmbeddingSet` ``emb`` (heads on
        frozen joint embeddings); typed ``Any`` so this module stays below the data model."""
        if not emb.has_pairs:
            raise InputError(
                "training needs image-text pairs; the embedding set has none (give text_to_image)",
                emb.source,
            )
        return cls(
            images=emb.image_emb,
            texts=emb.text_emb,
            text_to_image=emb.text_to_image,
            labels=emb.labels,
            class_texts=emb.class_text_emb,
            class_names=emb.class_names,
            captions=emb.texts,
            source=emb.source,
            metadata=dict(emb.metadata),
        )

    @property
    def n_images(self) -> int:
        return int(self.images.shape[0])

    @property
    def n_texts(self) -> int:
        return int(self.texts.shape[0])

    @property
    def image_dim(self) -> int:
        return int(self.images.shape[-1])

    @property
    def text_kind(self) -> str:
        """``"features"`` (n, d), ``"tokens"`` (n, L, d) or ``"ids"`` (n, L) int."""
        if np.issubdtype(self.texts.dtype, np.integer):
            return "ids"
        return "tokens" if self.texts.ndim == 3 else "features"

    @property
    def text_dim(self) -> int | None:
        return None if self.text_kind == "ids" else int(self.texts.shape[-1])

    def _summary(self) -> list[tuple[str, str]]:
        text_shape = "×".join(str(s) for s in self.texts.shape[1:])
        counts = [
            ("images", f"{self.n_images} × {'×'.join(str(s) for s in self.images.shape[1:])}"),
            ("texts", f"{self.n_texts} × {text_shape} {self.text_kind}"),
        ]
        return counts + attached_parts(
            self.text_to_image,
            self.n_images,
            self.n_texts,
            self.labels,
            self.class_names,
            self.class_texts,
            {"captions": self.captions},
            self.metadata,
            self.source,
        )

    def __repr__(self) -> str:
        return summary_repr("FeatureSet", self._summary())

    def _repr_html_(self) -> str:
        return summary_html("FeatureSet", self._summary())

    def subset(self, image_index: Any) -> FeatureSet:
        """The given images (in that order) with exactly their captions."""
        idx, keep, t2i = subset_plan(self.text_to_image, self.n_images, image_index)
        return dataclasses.replace(
            self,
            images=np.asarray(self.images[idx]),
            texts=np.asarray(self.texts[keep]),
            text_to_image=t2i,
            text_lengths=None if self.text_lengths is None else self.text_lengths[keep],
            labels=None if self.labels is None else self.labels[idx],
            captions=None if self.captions is None else [self.captions[i] for i in keep],
            metadata=dict(self.metadata),
        )


def _feature_array(
    x: Any, name: str, ndims: tuple[int, ...], src: str | None, ints: bool = False
) -> np.ndarray:
    arr = to_numpy(x)
    if arr.dtype == object:
        raise InputError(f"'{name}' is an object array; save plain numeric arrays", src)
    if ints and np.issubdtype(arr.dtype, np.integer):
        if arr.ndim != 2:
            raise InputError(f"word-id '{name}' must be (n, L), got {tuple(arr.shape)}", src)
        if arr.size and arr.min() < 0:
            raise InputError(f"word ids in '{name}' must be >= 0", src)
        return arr
    if not np.issubdtype(arr.dtype, np.floating):
        raise InputError(f"'{name}' must hold floats, got {arr.dtype}", src)
    if arr.ndim not in ndims:
        raise InputError(
            f"'{name}' must be (n, d) or (n, regions, d), got shape {tuple(arr.shape)}", src
        )
    if arr.shape[-1] == 0:
        raise InputError(f"'{name}' has 0 dimensions", src)
    # finite check in row blocks: memory-mapped inputs are not read whole at once
    step = max(1, (64 << 20) // max(1, arr[:1].nbytes))
    for s in range(0, arr.shape[0], step):
        block = np.asarray(arr[s : s + step])
        ok = np.isfinite(block.reshape(block.shape[0], -1)).all(axis=1)
        if not ok.all():
            raise InputError(f"'{name}' has NaN/inf (first: row {s + int(np.argmin(ok))})", src)
    # models train in float32; float32 inputs (often memory-mapped) are kept as they are
    return arr if arr.dtype == np.float32 else arr.astype(np.float32)
