"""The one data model: :class:`EmbeddingSet`.

Image embeddings ``(n_i, d)``, text embeddings ``(n_t, d)`` and a pairing ``text_to_image``
``(n_t,)`` (several captions per image, as in COCO or Flickr30K), with optional labels, class
prompts, ids and metadata. All validation happens here, once; everything downstream may assume
finite, L2-normalised float32 rows of one width.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from ._array import as_float_matrix, as_int_vector, check_pairing, to_numpy
from .errors import InputError

__all__ = ["EmbeddingSet"]


@dataclasses.dataclass(eq=False)
class EmbeddingSet:
    """Image and text embeddings in one joint space, with their pairing.

    Parameters
    ----------
    image_emb : array (n_i, d)
        Image embeddings; L2-normalised on construction (with a notice) if they are not.
    text_emb : array (n_t, d)
        Text embeddings, same width ``d``.
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
    text_emb: np.ndarray
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
        self.text_emb = as_float_matrix(
            self.text_emb, "text_emb", src, dim=d, normalize=self.normalize
        )
        n_i, n_t = self.image_emb.shape[0], self.text_emb.shape[0]
        if self.text_to_image is not None:
            if self.paired is False:
                raise InputError("paired=False contradicts the given 'text_to_image'", src)
            self.text_to_image = check_pairing(self.text_to_image, n_i, n_t, src)
        elif self.paired or (self.paired is None and n_i == n_t):
            self.text_to_image = check_pairing(None, n_i, n_t, src)
        self.paired = self.text_to_image is not None
        if self.labels is not None:
            self.labels = as_int_vector(self.labels, "labels", n_i, src)
            if self.labels.size and self.labels.min() < 0:
                raise InputError("'labels' must be non-negative class indices", src)
        if self.class_names is not None:
            names = (
                [str(c) for c in to_numpy(self.class_names).tolist()]
                if not isinstance(self.class_names, list)
                else [str(c) for c in self.class_names]
            )
            if len(names) == 0:
                raise InputError("'class_names' is empty; give at least one class", src)
            self.class_names = names
            if self.labels is not None and self.labels.size and self.labels.max() >= len(names):
                raise InputError(
                    f"'labels' go up to {int(self.labels.max())} but only {len(names)} "
                    "class names are given",
                    src,
                )
        if self.class_text_emb is not None:
            cte = to_numpy(self.class_text_emb)
            if cte.ndim == 2:
                cte = as_float_matrix(cte, "class_text_emb", src, dim=d, normalize=self.normalize)
            elif cte.ndim == 3:
                c, t, _ = cte.shape
                flat = as_float_matrix(
                    cte.reshape(c * t, -1), "class_text_emb", src, dim=d, normalize=self.normalize
                )
                cte = flat.reshape(c, t, d)
            else:
                raise InputError(
                    "'class_text_emb' must be (classes, d) or (classes, templates, d), "
                    f"got shape {tuple(cte.shape)}",
                    src,
                )
            if self.class_names is not None and cte.shape[0] != len(self.class_names):
                raise InputError(
                    f"'class_text_emb' has {cte.shape[0]} classes but 'class_names' has "
                    f"{len(self.class_names)}",
                    src,
                )
            self.class_text_emb = cte
        for name, n in (("image_ids", n_i), ("texts", n_t)):
            val = getattr(self, name)
            if val is not None:
                val = [str(v) for v in (val.tolist() if hasattr(val, "tolist") else val)]
                if len(val) != n:
                    raise InputError(f"'{name}' has {len(val)} entries, expected {n}", src)
                setattr(self, name, val)

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
        }

    # -- derived sets -------------------------------------------------------------------------
    def replace(self, **changes: Any) -> EmbeddingSet:
        """A copy with some fields replaced (re-validated). Embeddings are not re-normalised
        unless ``normalize=True`` is passed: reducers may return non-unit rows on purpose."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        fields["paired"] = None if fields["text_to_image"] is None else True
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
        """Keep the given images and, when paired, exactly the texts that describe them.

        Texts are re-indexed so ``text_to_image`` points into the new image rows. For an unpaired
        set, texts are kept as they are.
        """
        idx = np.asarray(image_index, dtype=np.int64)
        changes: dict[str, Any] = {"image_emb": self.image_emb[idx]}
        if self.labels is not None:
            changes["labels"] = self.labels[idx]
        if self.image_ids is not None:
            changes["image_ids"] = [self.image_ids[i] for i in idx]
        if self.text_to_image is not None:
            new_pos = np.full(self.n_images, -1, dtype=np.int64)
            new_pos[idx] = np.arange(idx.size)
            keep = np.flatnonzero(new_pos[self.text_to_image] >= 0)
            changes["text_emb"] = self.text_emb[keep]
            changes["text_to_image"] = new_pos[self.text_to_image[keep]]
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
