"""A source restricted to some of its images (and the texts of those images), as a view.

:class:`SubsetSource` is what :meth:`modgap.embeddings.EmbeddingSet.subset` is for a set in
memory, for a :class:`~modgap.io.source.Source` that stays on disk: it keeps a sorted array of
image rows and, when the set is paired, exactly the texts that describe them (unpaired: every
text), and offers the reading interface the streamed kernels use (``shards``, ``blocks``,
``raw_blocks``, ``gather``, ``shard_pairs``, ``pairs``, ...). Each block of the underlying
source is filtered to the kept rows and pairs are renumbered into the kept images, so every
streamed measure, task and fit runs on the subset unchanged. It holds 8 bytes per kept row
(the row numbers), never the rows themselves.

Texts keep their source order; :meth:`EmbeddingSet.subset` orders them by their image
instead. The rows and the pairs are the same, so every measure and task agrees (a sampled
estimate may draw other texts when the sample is smaller than the subset).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import numpy as np

from ..errors import InputError
from .source import Part, Shard, Source

__all__ = ["SubsetSource", "split_rows"]


def split_rows(n_images: int, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(fit images, evaluated images)``, each sorted: the rule of
    :meth:`modgap.embeddings.EmbeddingSet.split` (a permutation with the seed; ``round(n ·
    test_fraction)`` images evaluated, at least one on each side)."""
    if not 0 < test_fraction < 1:
        raise InputError(f"test_fraction must be in (0, 1), got {test_fraction}")
    if n_images < 2:
        raise InputError("need at least 2 images to split")
    perm = np.random.default_rng(seed).permutation(n_images)
    n_test = min(max(1, round(n_images * test_fraction)), n_images - 1)
    return np.sort(perm[n_test:]).astype(np.int64), np.sort(perm[:n_test]).astype(np.int64)


def _resized(part: Part | None, rows: int) -> Part | None:
    return None if part is None else dataclasses.replace(part, rows=int(rows))


class SubsetSource:
    """The images ``images`` of ``base`` (global row numbers, any order: they are sorted)
    and their texts, as a source.

    Parameters
    ----------
    base : Source
        The source on disk.
    images : array of int
        Image rows kept.
    classes : dict, optional
        ``labels`` (one per image of ``base``) and ``class_text_emb`` of the base set; the
        view's :meth:`classes` keeps the labels of its images.
    """

    def __init__(self, base: Source, images: Any, classes: dict | None = None) -> None:
        keep = np.unique(np.asarray(images, dtype=np.int64).reshape(-1))
        if keep.size and (keep[0] < 0 or keep[-1] >= base.n_images):
            raise InputError(f"image row out of range (0..{base.n_images - 1})", base.path)
        self.base = base
        self.path = base.path
        self.format = base.format
        self.pairing = base.pairing
        self.layout = {k: v for k, v in base.layout.items() if k != "extra"}
        self.storage_options = base.storage_options
        self.text_to_image = None
        self._classes = dict(classes or {})
        self.image_rows = keep
        new_pos = np.full(base.n_images, -1, dtype=np.int64)
        new_pos[keep] = np.arange(keep.size)
        i_starts = base.starts("image")
        shards, local_i, local_t, pairs, text_rows = [], {}, {}, {}, []
        n_i = n_t = 0
        for k, shard in enumerate(base.shards):
            lo, hi = np.searchsorted(keep, [i_starts[k], i_starts[k + 1]])
            li = keep[lo:hi] - i_starts[k]
            t2i = base.shard_pairs(shard) if shard.n_texts else None
            if base.pairing == "rows":
                lt, p = li.copy(), None
            elif t2i is not None and base.pairing is not None:
                lt = np.flatnonzero(new_pos[t2i] >= 0)
                p = new_pos[t2i[lt]]
            else:  # unpaired: every text, as EmbeddingSet.subset keeps them
                lt, p = np.arange(shard.n_texts, dtype=np.int64), None
            if li.size == 0 and lt.size == 0:
                continue
            view = Shard(
                index=len(shards),
                name=shard.name,
                image=_resized(shard.image, li.size),
                text=_resized(shard.text, lt.size),
                image_start=n_i,
                text_start=n_t,
                metadata=shard.metadata,
                text_metadata=shard.text_metadata,
            )
            local_i[view.index], local_t[view.index] = li, lt
            pairs[view.index] = p
            text_rows.append(lt + shard.text_start)
            shards.append((view, shard))
            n_i += li.size
            n_t += lt.size
        self.shards = tuple(v for v, _ in shards)
        self._base_shard = {v.index: b for v, b in shards}
        self._local = {"image": local_i, "text": local_t}
        self._pairs = pairs
        self.text_rows = (
            np.concatenate(text_rows).astype(np.int64) if text_rows else np.empty(0, np.int64)
        )

    # -- sizes ----------------------------------------------------------------------------
    @property
    def n_images(self) -> int:
        return int(self.image_rows.size)

    @property
    def n_texts(self) -> int:
        return int(self.text_rows.size)

    @property
    def dim(self) -> int:
        return self.base.dim

    @property
    def has_pairs(self) -> bool:
        return self.pairing is not None

    # the same definitions as a whole source's, on this view's counts
    float32_bytes = Source.float32_bytes

    def describe(self) -> dict:
        base = {"n_images": self.base.n_images, "n_texts": self.base.n_texts}
        return {**Source.describe(self), "subset_of": base}

    def fs(self) -> Any:
        return self.base.fs()

    def part(self, shard: Shard, modality: str) -> Part | None:
        return shard.image if modality == "image" else shard.text

    def starts(self, modality: str) -> np.ndarray:
        """Global row number (in the view) of each shard's first row, plus the total."""
        counts = [s.n_images if modality == "image" else s.n_texts for s in self.shards]
        return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)

    def classes(self) -> dict:
        """``labels`` of the kept images and the ``class_text_emb`` of the base set (absent
        keys left out)."""
        out = {}
        if self._classes.get("labels") is not None:
            out["labels"] = np.asarray(self._classes["labels"])[self.image_rows]
        if self._classes.get("class_text_emb") is not None:
            out["class_text_emb"] = self._classes["class_text_emb"]
        return out

    # -- reading --------------------------------------------------------------------------
    def _filtered(self, shard: Shard, modality: str, blocks: Iterator) -> Iterator[tuple]:
        """The kept rows of each block, with its first row renumbered within the view
        shard; empty blocks are dropped (on both modalities alike, so row-paired blocks stay
        in lockstep)."""
        local = self._local[modality][shard.index]
        for start, block, *rest in blocks:
            lo, hi = np.searchsorted(local, [start, start + block.shape[0]])
            if hi > lo:
                yield (int(lo), np.asarray(block[local[lo:hi] - start]), *rest)

    def blocks(self, shard: Shard, modality: str, rows: int) -> Iterator[tuple[int, np.ndarray]]:
        """As :meth:`Source.blocks`, on the kept rows."""
        base = self._base_shard[shard.index]
        yield from self._filtered(shard, modality, self.base.blocks(base, modality, rows))

    def raw_blocks(
        self, shard: Shard, modality: str, rows: int
    ) -> Iterator[tuple[int, np.ndarray, str]]:
        """As :meth:`Source.raw_blocks`, on the kept rows."""
        base = self._base_shard[shard.index]
        yield from self._filtered(shard, modality, self.base.raw_blocks(base, modality, rows))

    def shard_pairs(self, shard: Shard) -> np.ndarray | None:
        """Image index (in the view) of each text of ``shard``, or ``None`` when unpaired."""
        if self.pairing is None:
            return None
        if self.pairing == "rows":
            return np.arange(shard.image_start, shard.image_start + shard.n_texts)
        return self._pairs[shard.index]

    def pairs(self) -> np.ndarray | None:
        """``text_to_image`` of the view (int64), or ``None``."""
        if self.pairing is None:
            return None
        if not self.shards:
            return np.empty(0, np.int64)
        return np.concatenate([self.shard_pairs(s) for s in self.shards]).astype(np.int64)

    def gather(self, modality: str, index: Any) -> np.ndarray:
        """Rows at view positions ``index``, read from the base source."""
        idx = np.asarray(index, dtype=np.int64).reshape(-1)
        rows = self.image_rows if modality == "image" else self.text_rows
        if idx.size and (idx.min() < 0 or idx.max() >= rows.size):
            raise InputError(f"row index out of range (0..{rows.size - 1})", self.path)
        return self.base.gather(modality, rows[idx])
