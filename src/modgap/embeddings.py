"""The data model: :class:`EmbeddingSet`, and :class:`FeatureSet` for training inputs.

An :class:`EmbeddingSet` holds image embeddings ``(n_i, d)``, text embeddings ``(n_t, d)`` and a
pairing ``text_to_image`` ``(n_t,)`` (several captions per image, as in COCO or Flickr30K), with
optional labels, class prompts, ids and metadata. A zero-shot set may have no captions at all
(images, labels and class prompt embeddings). All validation happens here, once; everything
downstream may assume finite, L2-normalised float32 rows of one width.

A :class:`FeatureSet` (:mod:`modgap.features`, re-exported here) is the training view of the
same pairs: the inputs of a matching model, which need not live in one joint space. Both
validate their shared fields with the helpers of :mod:`modgap._setfields`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from ._array import check_pairing, prepare_rows
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
from .features import FeatureSet  # the training view, re-exported: modgap.embeddings.FeatureSet

__all__ = ["EmbeddingSet", "FeatureSet"]


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
        unit = "stored" if self.normalize else "checked"
        self.image_emb = prepare_rows(
            self.image_emb, "image_emb", src, unit=unit, notice_divided=True
        )
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
            self.text_emb = prepare_rows(
                self.text_emb, "text_emb", src, unit=unit, dim=d, notice_divided=True
            )
        n_i, n_t = self.image_emb.shape[0], self.text_emb.shape[0]
        if self.text_to_image is not None:
            if self.paired is False:
                raise InputError("paired=False contradicts the given 'text_to_image'", src)
            self.text_to_image = check_pairing(self.text_to_image, n_i, n_t, src)
        elif n_t and (self.paired or (self.paired is None and n_i == n_t)):
            self.text_to_image = check_pairing(None, n_i, n_t, src)
        self.paired = self.text_to_image is not None
        self.labels = check_labels(self.labels, n_i, src)
        self.class_names = check_class_names(self.class_names, self.labels, src)
        self.class_text_emb = check_class_prompts(
            self.class_text_emb, d, self.class_names, src, self.normalize
        )
        self.image_ids = string_list(self.image_ids, "image_ids", n_i, src)
        self.texts = string_list(self.texts, "texts", n_t, src)

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

    def _summary(self) -> list[tuple[str, str]]:
        counts = [
            ("images", str(self.n_images)),
            ("texts", str(self.n_texts)),
            ("dim", f"{self.dim} {self.image_emb.dtype}"),
        ]
        return counts + attached_parts(
            self.text_to_image,
            self.n_images,
            self.n_texts,
            self.labels,
            self.class_names,
            self.class_text_emb,
            {"image_ids": self.image_ids, "texts": self.texts},
            self.metadata,
            self.source,
        )

    def __repr__(self) -> str:
        return summary_repr("EmbeddingSet", self._summary())

    def _repr_html_(self) -> str:
        return summary_html("EmbeddingSet", self._summary())

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
