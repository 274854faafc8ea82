"""The data model: :class:`EmbeddingSet`, and :class:`FeatureSet` for training inputs.

An :class:`EmbeddingSet` holds image embeddings ``(n_i, d)``, text embeddings ``(n_t, d)`` and a
pairing ``text_to_image`` ``(n_t,)`` (several captions per image, as in COCO or Flickr30K), with
optional labels, class prompts, ids and metadata. A zero-shot set may have no captions at all
(images, labels and class prompt embeddings). All validation happens here, once; everything
downstream may assume finite, L2-normalised float32 rows of one width.

A :class:`FeatureSet` is the training view of the same pairs: the inputs of a matching model,
which need not live in one joint space (frozen tower features of two widths, region features
``(n_i, r, d)``, word ids with lengths). Pairing, labels, class names, subsets and splits are
validated and computed by the same helpers as for an :class:`EmbeddingSet`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from ._array import as_float_matrix, as_int_vector, check_pairing, to_numpy
from .errors import InputError

__all__ = ["EmbeddingSet", "FeatureSet"]


def _labels(labels: Any, n_images: int, src: str | None) -> np.ndarray | None:
    if labels is None:
        return None
    out = as_int_vector(labels, "labels", n_images, src)
    if out.size and out.min() < 0:
        raise InputError("'labels' must be non-negative class indices", src)
    return out


def _class_names(names: Any, labels: np.ndarray | None, src: str | None) -> list[str] | None:
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


def _class_prompts(
    cte: Any, d: int | None, names: list[str] | None, src: str | None, normalize: bool
) -> np.ndarray | None:
    """Class prompt embeddings ``(c, d)`` or ``(c, templates, d)``, validated."""
    if cte is None:
        return None
    arr = to_numpy(cte)
    if arr.dtype == object:
        raise InputError("'class_text_emb' is an object array; save plain numeric arrays", src)
    if arr.ndim == 2:
        out = as_float_matrix(arr, "class_text_emb", src, dim=d, normalize=normalize)
    elif arr.ndim == 3:
        c, t, w = arr.shape
        if c == 0 or t == 0 or w == 0:
            raise InputError(
                f"'class_text_emb' has shape {tuple(arr.shape)}: it holds no prompt "
                "embeddings (classes, templates and dimensions must all be >= 1)",
                src,
            )
        flat = as_float_matrix(
            arr.reshape(c * t, w), "class_text_emb", src, dim=d, normalize=normalize
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


def _string_list(val: Any, name: str, n: int, src: str | None) -> list[str] | None:
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


@dataclasses.dataclass(eq=False)
class EmbeddingSet:
    """Image and text embeddings in one joint space, with their pairing.

    Parameters
    ----------
    image_emb : array (n_i, d)
        Image embeddings; L2-normalised on construction (with a notice) if they are not.
    text_emb : array (n_t, d), optional
        Text embeddings, same width ``d``. A zero-shot set (images, ``labels`` and
        ``class_text_emb``, no captions) leaves it out: it becomes a ``(0, d)`` array.
    text_to_image : array (n_t,) of int, optional
        Index of the image each text describes. When absent and ``n_i == n_t`` row ``i`` of
        the texts is paired with row ``i`` of the images (pass ``paired=False`` to say the two
        sets are unrelated). When absent and the counts differ, the set is unpaired.
    labels : array (n_i,) of int, optional
        Semantic class of each image (zero-shot classification, clustering).
    class_names : sequence of str, optional
        Name of each class; ``labels`` index into it.
    class_text_emb : array (c, d) or (c, templates, d), optional
        Text embeddings of the class prompts (one row or one row per template per class).
    image_ids, texts : sequence of str, optional
        Identifiers of the images (e.g. file names) and the caption strings.
    metadata : dict, optional
        Free-form provenance (model name, source files, ...), kept in results.
    source : str, optional
        Where the data came from; named in every error message.
    paired : bool, optional
        Force the pairing interpretation when ``text_to_image`` is absent.
    """

    image_emb: np.ndarray
    text_emb: np.ndarray | None = None
    text_to_image: np.ndarray | None = None
    labels: np.ndarray | None = None
    class_names: Sequence[str] | None = None
    class_text_emb: np.ndarray | None = None
    image_ids: Sequence[str] | None = None
    texts: Sequence[str] | None = None
    metadata: dict = dataclasses.field(default_factory=dict)
    source: str | None = None
    paired: bool | None = None
    normalize: bool = True

    def __post_init__(self) -> None:
        src = self.source
        self.image_emb = as_float_matrix(self.image_emb, "image_emb", src, normalize=self.normalize)
        d = self.image_emb.shape[1]
        if (
            self.text_emb is not None
            and self.class_text_emb is not None
            and np.shape(self.text_emb)[0] == 0
            and self.text_to_image is None
        ):
            self.text_emb = None  # a zero-shot set after a transform: still no captions
        if self.text_emb is None:
            if self.class_text_emb is None:
                raise InputError(
                    "no text embeddings: give 'text_emb' (captions) or, for a zero-shot set, "
                    "'class_text_emb' with 'labels'",
                    src,
                )
            if self.text_to_image is not None:
                raise InputError("'text_to_image' given but there are no text embeddings", src)
            self.text_emb = np.empty((0, d), dtype=np.float32)
        else:
            self.text_emb = as_float_matrix(
                self.text_emb, "text_emb", src, dim=d, normalize=self.normalize
            )
        n_i, n_t = self.image_emb.shape[0], self.text_emb.shape[0]
        if self.text_to_image is not None:
            if self.paired is False:
                raise InputError("paired=False contradicts the given 'text_to_image'", src)
            self.text_to_image = check_pairing(self.text_to_image, n_i, n_t, src)
        elif n_t and (self.paired or (self.paired is None and n_i == n_t)):
            self.text_to_image = check_pairing(None, n_i, n_t, src)
        self.paired = self.text_to_image is not None
        self.labels = _labels(self.labels, n_i, src)
        self.class_names = _class_names(self.class_names, self.labels, src)
        self.class_text_emb = _class_prompts(
            self.class_text_emb, d, self.class_names, src, self.normalize
        )
        self.image_ids = _string_list(self.image_ids, "image_ids", n_i, src)
        self.texts = _string_list(self.texts, "texts", n_t, src)

    # -- shape ------------------------------------------------------------------------------
    @property
    def n_images(self) -> int:
        return int(self.image_emb.shape[0])

    @property
    def n_texts(self) -> int:
        return int(self.text_emb.shape[0])

    @property
    def dim(self) -> int:
        return int(self.image_emb.shape[1])

    @property
    def has_pairs(self) -> bool:
        return self.text_to_image is not None

    @property
    def has_labels(self) -> bool:
        return self.labels is not None

    @property
    def has_texts(self) -> bool:
        """Whether the set has captions (a zero-shot set may have only class prompts)."""
        return self.n_texts > 0

    def prompts_as_texts(self) -> EmbeddingSet:
        """For a zero-shot set without captions: the same set with the (template-averaged,
        re-normalised) class prompt embeddings as its texts, unpaired — what the gap measures
        and the reducers compare the images with. A set with captions is returned as it is."""
        if self.has_texts or self.class_text_emb is None:
            return self
        cte = self.class_text_emb
        prompts = cte.mean(axis=1) if cte.ndim == 3 else cte
        prompts = prompts / np.linalg.norm(prompts, axis=1, keepdims=True)
        meta = {**self.metadata, "texts_are": "class prompts"}
        return self.replace(text_emb=prompts, text_to_image=None, texts=None, metadata=meta)

    def describe(self) -> dict:
        """Counts for provenance records."""
        return {
            "n_images": self.n_images,
            "n_texts": self.n_texts,
            "dim": self.dim,
            "paired": self.has_pairs,
            "labelled": self.has_labels,
            "n_classes": len(self.class_names) if self.class_names is not None else None,
            "source": self.source,
            "texts_are": self.metadata.get("texts_are", "captions" if self.has_texts else None),
        }

    # -- derived sets -------------------------------------------------------------------------
    def replace(self, **changes: Any) -> EmbeddingSet:
        """A copy with some fields replaced (re-validated). Embeddings are not re-normalised
        unless ``normalize=True`` is passed: reducers may return non-unit rows on purpose."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        if not self.has_texts and "text_emb" not in changes:
            fields["text_emb"] = None
        fields.update(changes)
        if "normalize" not in changes:
            fields["normalize"] = False
        return EmbeddingSet(**fields)

    def with_embeddings(
        self, image_emb: Any, text_emb: Any, class_text_emb: Any = None
    ) -> EmbeddingSet:
        """The same set with transformed embeddings (e.g. after a reducer); keeps pairing and
        labels. Class prompts are dropped unless transformed ones are given, since they no longer
        live in the same space."""
        return self.replace(
            image_emb=image_emb, text_emb=text_emb, class_text_emb=class_text_emb, normalize=False
        )

    def subset(self, image_index: Any) -> EmbeddingSet:
        """Keep the given images (in that order) and, when paired, exactly the texts that
        describe them, re-indexed so ``text_to_image`` points into the new image rows. For an
        unpaired set, texts are kept as they are."""
        idx, keep, t2i = subset_plan(self.text_to_image, self.n_images, image_index)
        changes: dict[str, Any] = {"image_emb": self.image_emb[idx]}
        if self.labels is not None:
            changes["labels"] = self.labels[idx]
        if self.image_ids is not None:
            changes["image_ids"] = [self.image_ids[i] for i in idx]
        if keep is not None:
            changes["text_emb"] = self.text_emb[keep]
            changes["text_to_image"] = t2i
            if self.texts is not None:
                changes["texts"] = [self.texts[i] for i in keep]
        return self.replace(**changes)

    def split(self, test_fraction: float = 0.5, seed: int = 0) -> tuple[EmbeddingSet, EmbeddingSet]:
        """Split by image (all captions of an image go to the same side): ``(fit, test)``."""
        if not 0 < test_fraction < 1:
            raise InputError(f"test_fraction must be in (0, 1), got {test_fraction}")
        if self.n_images < 2:
            raise InputError("need at least 2 images to split", self.source)
        rng = np.random.default_rng(seed)
        perm = rng.permutation(self.n_images)
        n_test = min(max(1, round(self.n_images * test_fraction)), self.n_images - 1)
        return self.subset(np.sort(perm[n_test:])), self.subset(np.sort(perm[:n_test]))

    def paired_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """``(X[text_to_image], Y)``: one matched image row for every text row."""
        if self.text_to_image is None:
            raise InputError(
                "this measure needs image-text pairs, and the set has none", self.source
            )
        return self.image_emb[self.text_to_image], self.text_emb


@dataclasses.dataclass(eq=False)
class FeatureSet:
    """Training inputs of a matching model, paired like an :class:`EmbeddingSet`.

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
        As in :class:`EmbeddingSet`.
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
        self.labels = _labels(self.labels, n_i, src)
        self.class_names = _class_names(self.class_names, self.labels, src)
        if self.class_texts is not None and self.text_kind != "features":
            raise InputError("class prompt features need feature texts (n, d)", src)
        self.class_texts = _class_prompts(
            self.class_texts, self.text_dim, self.class_names, src, normalize=False
        )
        self.captions = _string_list(self.captions, "captions", n_t, src)

    @classmethod
    def from_embeddings(cls, emb: EmbeddingSet) -> FeatureSet:
        """The training view of an :class:`EmbeddingSet` (heads on frozen joint embeddings)."""
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
