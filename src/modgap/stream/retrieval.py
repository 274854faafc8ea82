r"""Retrieval and mixed search over a streamed source: exact blocked scans of every candidate,
for all queries or a uniform sample, merged across shards.

The protocol and tie rule are those of :mod:`modgap.tasks.retrieval` and
:mod:`modgap.tasks.mixed`: ``rank = 1 + #{non-partner candidates whose exact score beats the
best partner's}``, ties in the query's favour; the mixed corpus is ``Z = [X; Y]`` minus the
query; its exact top-K puts tied items of the other modality first, then the lower index.

The partners' exact scores are computed from the gathered rows first, so one scan of the pool
suffices: each (query block, shard) task counts the candidates above every query's threshold
(:func:`modgap._ties.count_above`) and keeps its exact top-K, and the shards merge by sums and
a top-K merge under the same total order. Rows are prepared as :func:`retrieval_ranks` does
(float32, divided by their float32 norm when it is off 1 by more than 10⁻⁶), so on the whole
set the ranks are the in-memory ones.

Sampled queries give estimates with a Wilson interval (finite-population corrected); on the
whole set they are exact.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .._array import as_float_matrix
from .._progress import progress as progress_bar
from .._ties import exact_scores, merge_topk
from ..compute import Compute, resolve
from ..errors import InputError, ModgapError
from ..io.source import Source
from ..tasks.retrieval import check_ks
from .blocks import pairs_of, scan_rows, task_rows
from .corrections import correction_terms
from .engines import Engine, LocalEngine
from .intervals import LEVEL, Z, estimate, wilson
from .measures import DEFAULT_SAMPLE_QUERIES, run_scans, sample_index

__all__ = ["search_topk", "stream_retrieval", "task_rows"]


def _captions_of(source: Source, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(text rows, position in images)`` of every caption of the sorted ``images``."""
    if source.pairing == "rows":
        return images.copy(), np.arange(images.size)
    texts, owner = [], []
    for shard in source.shards:
        t2i = source.shard_pairs(shard)
        pos = np.searchsorted(images, t2i)
        pos = np.minimum(pos, max(images.size - 1, 0))
        hit = np.flatnonzero(images[pos] == t2i) if images.size else np.empty(0, np.int64)
        texts.append(hit + shard.text_start)
        owner.append(pos[hit])
    return np.concatenate(texts).astype(np.int64), np.concatenate(owner).astype(np.int64)


def _exact(Q: np.ndarray, C: np.ndarray, iq: np.ndarray, ic: np.ndarray) -> np.ndarray:
    import torch

    return exact_scores(
        torch.from_numpy(Q), torch.from_numpy(C), torch.from_numpy(iq), torch.from_numpy(ic)
    ).numpy()


def _recall(ranks: np.ndarray, k: int, n: int, what: str) -> dict:
    hits = int((ranks <= k).sum())
    s = ranks.size
    return estimate(
        hits / s if s else float("nan"),
        wilson(hits, s, n),
        s,
        n,
        f"{what}; Wilson interval",
    )


def _stratified(parts: list[tuple[np.ndarray, int]], k: int) -> tuple[float, tuple[float, float]]:
    """Recall over two strata (image and text queries) weighted by their population sizes,
    with a normal interval of the stratified mean."""
    total = sum(n for _, n in parts)
    value, var = 0.0, 0.0
    for r, n in parts:
        if r.size == 0:
            continue
        w = n / total
        p = float((r <= k).mean())
        value += w * p
        f = 0.0 if r.size >= n else (n - r.size) / max(n - 1, 1)
        var += w * w * p * (1 - p) / r.size * f
    half = Z * math.sqrt(var)
    return value, (max(0.0, value - half), min(1.0, value + half))


def stream_retrieval(
    source: Source,
    ks: Sequence[int] = (1, 5, 10),
    *,
    sample_queries: int | None = DEFAULT_SAMPLE_QUERIES,
    mixed: bool | None = None,
    engine: Engine | None = None,
    compute: Compute | None = None,
    progress: bool = False,
    correction: Any = None,
) -> dict:
    """Image → text and text → image Recall@K, ranks and rSum, and the mixed-corpus metrics
    (``mixed``, default: without a correction), on ``sample_queries`` queries per modality
    (None: all) against every candidate; the keys of
    :func:`modgap.tasks.retrieval.retrieval_metrics` and
    :func:`modgap.tasks.mixed.mixed_search_metrics`, plus ``estimates`` and ``sampling``.

    ``correction``: a fitted retrieval-time correction (:mod:`modgap.tasks.scoring`); ranks
    are those of ``retrieval_metrics(..., correction=)`` (exactly, on the whole set): the
    offsets of every candidate are computed shard by shard, QB-Norm's query weights take one
    more scan pass (:mod:`modgap.stream.corrections`). The mixed corpus has no correction."""
    if not source.has_pairs:
        raise InputError("retrieval needs image-text pairs and the set has none", source.path)
    if mixed is None:
        mixed = correction is None
    elif mixed and correction is not None:
        raise ModgapError(
            "the mixed-corpus search has no retrieval-time correction; use mixed=False with one"
        )
    ks = check_ks(ks)
    compute = resolve(compute)
    engine = engine or LocalEngine()
    n_i, n_t = source.n_images, source.n_texts
    if ks[-1] > min(n_i, n_t):
        raise ModgapError(f"K={ks[-1]} is larger than the {min(n_i, n_t)} candidates")
    seed = compute.seed
    I = sample_index(n_i, sample_queries, seed + 2)
    T = sample_index(n_t, sample_queries, seed + 3)
    cap_t, cap_owner = _captions_of(source, I)
    keep = np.unique(cap_owner)
    if keep.size < I.size:  # images without a caption have no image -> text query
        remap = np.full(I.size, -1)
        remap[keep] = np.arange(keep.size)
        I, cap_owner = I[keep], remap[cap_owner]
    Qx = task_rows(source.gather("image", I))
    Qy = task_rows(source.gather("text", T))
    Xm = task_rows(source.gather("image", pairs_of(source, T)))
    Cm = task_rows(source.gather("text", cap_t))
    t2i_T = pairs_of(source, T)
    pos_t = _exact(Qy, Xm, np.arange(T.size), np.arange(T.size))
    cap_scores = _exact(Qx, Cm, cap_owner, np.arange(cap_t.size))
    terms = None
    if correction is not None:
        terms = correction_terms(source, correction, Qx, Qy, engine=engine, compute=compute)
        # the partners' corrected scores, as retrieval_ranks forms them (float64)
        pos_t = pos_t - terms["text_active"] * terms["image_offset"][t2i_T]
        cap_scores = cap_scores - terms["image_active"][cap_owner] * terms["text_offset"][cap_t]
    best_i = np.full(I.size, -np.inf)
    np.maximum.at(best_i, cap_owner, cap_scores)
    kmax = ks[-1]
    specs = [
        {
            "name": "t2i",
            "pool": "image",
            "queries": Qy,
            "threshold": pos_t,
            "exclude": (np.arange(T.size), t2i_T),
            "norm": "task",
        },
        {
            "name": "i2t",
            "pool": "text",
            "queries": Qx,
            "threshold": best_i,
            "exclude": (cap_owner, cap_t),
            "norm": "task",
        },
    ]
    if terms is not None:
        specs[0].update(offset=terms["image_offset"], active=terms["text_active"])
        specs[1].update(offset=terms["text_offset"], active=terms["image_active"])
    if mixed:
        specs += [
            # own modality minus the query itself: counts for the mixed rank and the top-K
            {
                "name": "ii",
                "pool": "image",
                "queries": Qx,
                "threshold": best_i,
                "self_index": I,
                "topk": kmax,
                "own": True,
                "id_offset": 0,
                "norm": "task",
            },
            {
                "name": "tt",
                "pool": "text",
                "queries": Qy,
                "threshold": pos_t,
                "self_index": T,
                "topk": kmax,
                "own": True,
                "id_offset": n_i,
                "norm": "task",
            },
            {
                "name": "it_top",
                "pool": "text",
                "queries": Qx,
                "topk": kmax,
                "own": False,
                "id_offset": n_i,
                "norm": "task",
            },
            {
                "name": "ti_top",
                "pool": "image",
                "queries": Qy,
                "topk": kmax,
                "own": False,
                "id_offset": 0,
                "norm": "task",
            },
        ]

    with progress_bar(
        "retrieval: scanning every candidate", total=scan_rows(source, specs), enabled=progress
    ) as bar:
        r = run_scans(source, specs, engine=engine, compute=compute, bar=bar)
    t2i_rank = r["t2i"]["count"] + 1
    i2t_rank = r["i2t"]["count"] + 1
    out: dict[str, Any] = {}
    est: dict[str, dict] = {}
    rsum = 0.0
    for k in ks:
        a = _recall(t2i_rank, k, n_t, "text -> image recall of sampled texts")
        b = _recall(i2t_rank, k, n_i, "image -> text recall (best caption) of sampled images")
        out[f"image_retrieval_recall@{k}"] = a["value"]
        out[f"text_retrieval_recall@{k}"] = b["value"]
        est[f"image_retrieval_recall@{k}"], est[f"text_retrieval_recall@{k}"] = a, b
        rsum += 100.0 * (a["value"] + b["value"])
    out["rsum"] = rsum
    out["i2t_median_rank"] = float(np.median(i2t_rank))
    out["i2t_mean_rank"] = float(np.mean(i2t_rank))
    out["t2i_median_rank"] = float(np.median(t2i_rank))
    out["t2i_mean_rank"] = float(np.mean(t2i_rank))
    if mixed:
        img_rank = r["i2t"]["count"] + r["ii"]["count"] + 1
        txt_rank = r["t2i"]["count"] + r["tt"]["count"] + 1
        n_img_q = n_i  # every image of a row-aligned set has a partner
        for k in ks:
            v, iv = _stratified([(img_rank, n_img_q), (txt_rank, n_t)], k)
            out[f"mixed_recall@{k}"] = v
            est[f"mixed_recall@{k}"] = estimate(
                v,
                iv,
                img_rank.size + txt_rank.size,
                n_img_q + n_t,
                "image and text queries weighted by their counts; normal interval",
            )
            for key, rk, n in (
                ("mixed_image_query_recall", img_rank, n_img_q),
                ("mixed_text_query_recall", txt_rank, n_t),
            ):
                e = _recall(rk, k, n, "mixed corpus: partner in the top K")
                out[f"{key}@{k}"] = e["value"]
                est[f"{key}@{k}"] = e
        shares = []
        for own, other in (("ii", "it_top"), ("tt", "ti_top")):
            _, _, key = merge_topk(
                [
                    (r[own]["top_ids"], r[own]["top_scores"], r[own]["top_key"]),
                    (r[other]["top_ids"], r[other]["top_scores"], r[other]["top_key"]),
                ],
                kmax,
            )
            shares.append(key)
        for k in ks:
            parts = []
            for key, n in zip(shares, (n_i, n_t), strict=True):
                parts.append((key[:, :k].mean(axis=1), n))
            total = n_i + n_t
            v = sum(p.mean() * n / total for p, n in parts if p.size)
            var = 0.0
            for p, n in parts:
                if p.size > 1 and p.size < n:
                    w = n / total
                    var += w * w * p.var(ddof=1) / p.size * (n - p.size) / (n - 1)
            half = Z * math.sqrt(var)
            out[f"mixed_same_modality@{k}"] = float(v)
            est[f"mixed_same_modality@{k}"] = estimate(
                float(v),
                (v - half, v + half),
                sum(p.size for p, _ in parts),
                total,
                "share of the exact top K in the query's modality; normal interval",
            )
    out["estimates"] = est
    out["sampling"] = {"images": int(I.size), "texts": int(T.size), "level": LEVEL}
    if correction is not None:
        out["sampling"]["correction"] = {
            "name": correction.name,
            "bank_images": int(correction.image_bank_.shape[0]),
            "bank_texts": int(correction.text_bank_.shape[0]),
            "how": "offsets of every candidate against the bank, one pass"
            + ("; query weights from one more scan pass" if correction.activation_k else ""),
        }
    return out


def search_topk(
    source: Source,
    queries: Any,
    k: int = 10,
    *,
    modality: str | None = None,
    engine: Engine | None = None,
    compute: Compute | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The exact top ``k`` candidates of each query among every image and/or text row.

    Parameters
    ----------
    queries : array (q, d)
        Query embeddings (normalised like the candidates).
    k : int
    modality : {"image", "text", None}
        Search the images, the texts, or both (the mixed corpus: ids ``0..n_i-1`` are images,
        ``n_i..`` texts; tied scores put images first, then the lower id).

    Returns
    -------
    ids : int64 (q, k)
    scores : float64 (q, k)
        Exact scores (:func:`modgap._ties.exact_scores`).
    """
    Q = task_rows(as_float_matrix(queries, "queries", dim=source.dim, normalize=False))
    pools = ["image", "text"] if modality is None else [modality]
    specs = [
        {
            "name": p,
            "pool": p,
            "queries": Q,
            "topk": int(k),
            "own": p == "text",
            "id_offset": source.n_images if (p == "text" and modality is None) else 0,
            "norm": "task",
        }
        for p in pools
    ]
    r = run_scans(source, specs, engine=engine, compute=compute)
    ids, sc, key = r[pools[0]]["top_ids"], r[pools[0]]["top_scores"], r[pools[0]]["top_key"]
    if len(pools) == 2:
        ids, sc, key = merge_topk(
            [(ids, sc, key), (r["text"]["top_ids"], r["text"]["top_scores"], r["text"]["top_key"])],
            int(k),
        )
    return ids, sc
