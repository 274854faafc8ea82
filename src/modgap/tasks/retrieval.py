"""Cross-modal retrieval: Recall@K both ways, rSum and ranks, computed in blocks.

Protocol (VSE++ / VSE∞, Faghri et al. 2018; Chen et al. 2021; CLIP_benchmark metric names):

* ``image_retrieval_recall@K`` (text → image): each text queries all images; its one true
  image must be among the top K.
* ``text_retrieval_recall@K`` (image → text): each image queries all texts; it counts as a hit
  when the *best-ranked* of its captions is among the top K (so 5 captions per image do not
  count 5 times). Images without a caption are left out of image → text.
* ``rsum``: sum of all these recalls in percent (VSE convention; with K = 1, 5, 10 it is the
  sum of six numbers, at most 600).
* ranks are 1-based; median and mean over queries.

Rank and tie rule. The score is the cosine similarity (rows are L2-normalised unless
``normalize=False``, then the inner product). For a query q with positive score ``s⁺`` (the best
positive for an image query),

    rank(q) = 1 + #{candidates c that are not positives of q : s(q, c) > s⁺}

i.e. ties with the positive are resolved in the query's favour (optimistic ranking), and other
positives never push the best one down. Recall@K = mean over queries of [rank ≤ K].

The comparison ``s(q, c) > s⁺`` is the exact one, not whatever a float32 kernel happens to round
(:mod:`modgap._ties`): float32 blocks decide every comparison they can decide with margin, and
the few inside the float32 error window are recomputed with reproducible float64 scores; exact
scores within ``TIE_TOL`` (2⁻⁴⁰) are ties. Duplicated images therefore tie with the true image
on every machine, at every block size and thread count.

The ranks come from :func:`modgap.tasks.ranking.first_relevant_ranks`, the one ranking kernel
of instance- and class-level retrieval (a text is relevant to its image; an image's captions
share its label). Memory and time. The score matrix is never formed as a whole: images are
processed in blocks
``S_b = X_b Yᵀ`` of at most ``block_size`` rows, and one pass over those blocks gives both
directions (image → text counts along rows, text → image counts along columns), so the cost is
one matrix product plus two comparisons and two sums per score and direction. Peak extra
memory is three blocks of ``block_size × n_texts`` floats, reused across blocks, each at most
16 MiB by default (:func:`modgap._ties.score_block_rows`) and all within the memory budget.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .._array import check_pairing, prepare_rows, to_numpy, to_torch
from .._ties import score_block_rows
from ..compute import Compute, device_for
from ..errors import InputError, ModgapError
from .ranking import first_relevant_ranks

__all__ = ["average_folds", "check_ks", "fold_parts", "retrieval_metrics", "retrieval_ranks"]


def check_ks(ks: Sequence[int] | int) -> tuple[int, ...]:
    """The Recall@K cut-offs as a sorted tuple of distinct positive ints (one ``int`` allowed);
    :class:`~modgap.errors.ModgapError` naming the bad value otherwise."""
    if isinstance(ks, int | np.integer):
        ks = (int(ks),)
    ks = tuple(ks)
    if not ks:
        raise ModgapError("ks is empty; give at least one K for Recall@K")
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise ModgapError(f"every K in ks must be a positive integer, got {k!r}")
    return tuple(sorted({int(k) for k in ks}))


def fold_parts(n_images: int, folds: int | None) -> list[np.ndarray]:
    """The image rows of each retrieval fold: ``folds`` consecutive runs of images (sizes as
    ``numpy.array_split``; COCO "5-fold 1K"), each evaluated against its own captions only;
    one part holding every image when ``folds`` is None or 1. The one fold rule of the
    in-memory and the streamed retrieval."""
    if folds is None or folds == 1:
        return [np.arange(n_images)]
    if isinstance(folds, bool) or not isinstance(folds, int | np.integer) or folds < 1:
        raise ModgapError(f"folds must be a positive integer, got {folds!r}")
    if folds > n_images:
        raise ModgapError(f"folds={folds} but there are only {n_images} images")
    return np.array_split(np.arange(n_images), folds)


def average_folds(results: Sequence[dict]) -> dict:
    """Every metric averaged over the folds' results (``rsum`` too: the mean of the folds'
    sums, which is the sum of the averaged recalls)."""
    if len(results) == 1:
        return dict(results[0])
    return {key: float(np.mean([r[key] for r in results])) for key in results[0]}


def _as_tensor(x: Any, name: str, device: Any, dim: int | None, normalize: bool):
    """The float32 rows the retrieval kernels score, as a tensor on ``device``: unit rows of
    the one row preparation (:func:`modgap._array.prepare_rows`, ``unit="exact"``), or the
    checked rows for raw inner products."""
    rows = prepare_rows(x, name, dim=dim, unit="exact" if normalize else "checked")
    return to_torch(rows, device).contiguous()


def retrieval_ranks(
    image_emb: Any,
    text_emb: Any,
    text_to_image: Any = None,
    *,
    device: Any = None,
    block_size: int | None = None,
    normalize: bool = True,
    compute: Compute | None = None,
    correction: Any = None,
) -> tuple[np.ndarray, np.ndarray]:
    """1-based ranks of the positives, both ways, in one blocked pass.

    Parameters
    ----------
    image_emb : array (n_i, d)
    text_emb : array (n_t, d)
    text_to_image : array (n_t,) of int, optional
        Image index of each text; row ``i`` ↔ row ``i`` when absent (needs ``n_i == n_t``).
    device : str or torch.device, optional
        Where to compute; default: the device of a torch input, else the compute context's.
    block_size : int, optional
        Images per score block; default: three ``block × n_t`` float32 blocks (four with a
        correction) within the compute context's memory budget, one block at most
        :data:`~modgap._ties.SCORE_BLOCK_BYTES` (:func:`~modgap._ties.score_block_rows`).
    normalize : bool
        Cosine similarity (default) or, when false, the raw inner product.
    compute : Compute, optional
        Device and memory budget (default: :func:`modgap.compute.current`).
    correction : fitted ScoreCorrection, optional
        A retrieval-time hubness correction (:mod:`modgap.tasks.scoring`, fitted on another
        split): candidates are ranked by the corrected scores ``s(q, c) - a_q o(c)`` of its
        :meth:`~modgap.tasks.scoring.ScoreCorrection.offsets` for this set, with the same
        exact comparisons and tie rule (the best positive of an image query is its best
        caption by the corrected score). Needs cosine scores (``normalize=True``).

    Returns
    -------
    i2t_rank : ndarray (n_i,) of int64
        Rank of the best-ranked caption of each image among all texts; 0 for images without
        a caption (they have no image → text query).
    t2i_rank : ndarray (n_t,) of int64
        Rank of each text's image among all images.
    """
    import torch

    dev = device_for(compute, device, image_emb, text_emb)
    X = _as_tensor(image_emb, "image_emb", dev, None, normalize)
    Y = _as_tensor(text_emb, "text_emb", dev, X.shape[1], normalize)
    n_i, n_t = X.shape[0], Y.shape[0]
    t2i_np = check_pairing(text_to_image, n_i, n_t)
    if block_size is None:
        # the score block and its two comparison buffers (and the corrected block)
        buffers = 3 if correction is None else 4
        block_size = min(n_i, score_block_rows(n_t, buffers, compute))
    if block_size < 1:
        raise ModgapError(f"block_size must be positive, got {block_size}")
    if correction is not None:
        if not normalize:
            raise ModgapError(
                "a scoring correction works on cosine scores; use normalize=True with it"
            )
        with torch.no_grad():
            off = _offsets(correction, X, Y, dev, compute)

    with torch.no_grad():
        # instance relevance: a text's label is its image, an image's label is itself
        image_ids = torch.arange(n_i, device=dev)
        t2i = torch.from_numpy(t2i_np).to(dev)
        i2t_rank, t2i_rank = first_relevant_ranks(
            X, Y, image_ids, t2i, block_size=block_size, offsets=None if correction is None else off
        )
    return to_numpy(i2t_rank), to_numpy(t2i_rank)


def _offsets(correction: Any, X: Any, Y: Any, dev: Any, compute: Compute | None):
    """A correction's offsets for this set as float64 / 0-1 tensors on ``dev``, checked:
    ``(image offsets, text offsets, image-query weights, text-query weights)``."""
    import torch

    if not hasattr(correction, "offsets"):
        raise ModgapError(
            f"correction must be a fitted scoring correction (modgap.tasks.scoring), "
            f"got {type(correction).__name__}"
        )
    off = correction.offsets(X, Y, device=dev, compute=compute)
    n_i, n_t = X.shape[0], Y.shape[0]

    def vector(values, n, what):
        v = torch.as_tensor(np.asarray(values, dtype=np.float64), device=dev)
        if v.shape != (n,) or not bool(torch.isfinite(v).all()):
            raise ModgapError(f"the correction's {what} must be {n} finite numbers")
        return v

    def weights(mask, n, what):
        if mask is None:
            return torch.ones(n, dtype=torch.float64, device=dev)
        m = np.asarray(mask, dtype=bool)
        if m.shape != (n,):
            raise ModgapError(f"the correction's {what} mask must have {n} entries")
        return torch.from_numpy(m.astype(np.float64)).to(dev)

    return (
        vector(off.image_offset, n_i, "image offsets"),
        vector(off.text_offset, n_t, "text offsets"),
        weights(off.image_active, n_i, "image-query"),
        weights(off.text_active, n_t, "text-query"),
    )


def _metrics_from_ranks(i2t_rank: np.ndarray, t2i_rank: np.ndarray, ks: tuple[int, ...]) -> dict:
    i2t = i2t_rank[i2t_rank > 0].astype(np.float64)
    t2i = t2i_rank.astype(np.float64)
    out: dict[str, float] = {}
    rsum = 0.0
    for k in ks:
        r_t2i = float(np.mean(t2i <= k))
        r_i2t = float(np.mean(i2t <= k))
        out[f"image_retrieval_recall@{k}"] = r_t2i
        out[f"text_retrieval_recall@{k}"] = r_i2t
        rsum += 100.0 * (r_t2i + r_i2t)
    out["rsum"] = rsum
    out["i2t_median_rank"] = float(np.median(i2t))
    out["i2t_mean_rank"] = float(np.mean(i2t))
    out["t2i_median_rank"] = float(np.median(t2i))
    out["t2i_mean_rank"] = float(np.mean(t2i))
    return out


def retrieval_metrics(
    image_emb: Any,
    text_emb: Any,
    text_to_image: Any = None,
    ks: Sequence[int] = (1, 5, 10),
    device: Any = None,
    *,
    folds: int | None = None,
    block_size: int | None = None,
    normalize: bool = True,
    compute: Compute | None = None,
    correction: Any = None,
) -> dict:
    """Image → text and text → image Recall@K, rSum and ranks (VSE++ protocol).

    Parameters
    ----------
    image_emb : array (n_i, d)
        Image embeddings (numpy or torch).
    text_emb : array (n_t, d)
        Text embeddings.
    text_to_image : array (n_t,) of int, optional
        Image of each text (several captions per image allowed); row ``i`` ↔ row ``i`` when
        absent.
    ks : sequence of int
        The K of Recall@K (default 1, 5, 10). A K larger than the number of candidates (images
        for text → image, texts for image → text; per fold when ``folds`` is set) is an error.
    device : str or torch.device, optional
        Where to compute; default: the device of a torch input, else the compute context's.
    folds : int, optional
        COCO "5-fold 1K" style: split the images into ``folds`` consecutive folds (sizes as
        ``numpy.array_split``), evaluate each fold against its own captions only, and average
        every metric over folds (``rsum`` is the sum of the averaged recalls). ``None`` or 1:
        one evaluation on everything (the "5K" protocol for COCO test).
    block_size : int, optional
        Images per score block; default from the compute context's memory budget.
    normalize : bool
        Cosine similarity (default) or raw inner product.
    compute : Compute, optional
        Device and memory budget (default: :func:`modgap.compute.current`).
    correction : fitted ScoreCorrection, optional
        Rank with a retrieval-time hubness correction (:mod:`modgap.tasks.scoring`) fitted on
        another split; with ``folds`` each fold gets its own offsets (QB-Norm's activation set
        depends on the candidates).

    Returns
    -------
    dict
        ``image_retrieval_recall@K`` (text → image) and ``text_retrieval_recall@K`` (image →
        text, best-ranked caption) as fractions in [0, 1]; ``rsum`` (percent, sum over both
        directions and all K); ``i2t_median_rank``, ``i2t_mean_rank``, ``t2i_median_rank``,
        ``t2i_mean_rank`` (1-based). Ties with the positive count in the query's favour.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.eye(3, dtype=np.float32)
    >>> m = retrieval_metrics(X, X, ks=(1,))
    >>> m["image_retrieval_recall@1"], m["rsum"]
    (1.0, 200.0)
    """
    ks = check_ks(ks)
    if not hasattr(image_emb, "shape"):
        image_emb = np.asarray(image_emb, dtype=np.float32)
    if not hasattr(text_emb, "shape"):
        text_emb = np.asarray(text_emb, dtype=np.float32)
    n_i = int(image_emb.shape[0])
    n_t = int(text_emb.shape[0])
    t2i = check_pairing(text_to_image, n_i, n_t)
    parts = fold_parts(n_i, folds)

    results = []
    for part in parts:
        lo, hi = int(part[0]), int(part[-1]) + 1
        tsel = np.flatnonzero((t2i >= lo) & (t2i < hi))
        n_img, n_txt = hi - lo, tsel.size
        if n_txt == 0:
            raise InputError(f"images {lo}..{hi - 1} have no caption; cannot evaluate retrieval")
        where = f" (fold of images {lo}..{hi - 1})" if len(parts) > 1 else ""
        if ks[-1] > n_img:
            raise ModgapError(
                f"K={ks[-1]} is larger than the {n_img} images to retrieve from{where}; "
                f"use K <= {n_img}"
            )
        if ks[-1] > n_txt:
            raise ModgapError(
                f"K={ks[-1]} is larger than the {n_txt} texts to retrieve from{where}; "
                f"use K <= {n_txt}"
            )
        if len(parts) == 1:
            xi, yt, pair = image_emb, text_emb, t2i
        else:
            xi, yt, pair = image_emb[lo:hi], text_emb[tsel], t2i[tsel] - lo
        r_i2t, r_t2i = retrieval_ranks(
            xi,
            yt,
            pair,
            device=device,
            block_size=block_size,
            normalize=normalize,
            compute=compute,
            correction=correction,
        )
        results.append(_metrics_from_ranks(r_i2t, r_t2i, ks))
    return average_folds(results)
