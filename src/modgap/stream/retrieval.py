r"""Retrieval and mixed search over a streamed source: exact blocked scans of every candidate,
for all queries or a uniform sample, merged across shards.

The protocol and tie rule are those of :mod:`modgap.tasks.retrieval` and
:mod:`modgap.tasks.mixed`: ``rank = 1 + #{non-partner candidates whose exact score beats the
best partner's}``, ties in the query's favour; the mixed corpus is ``Z = [X; Y]`` minus the
query; its exact top-K puts tied items of the other modality first, then the lower index.

The partners' exact scores are computed from the gathered rows first, so one scan of the pool
suffices: each (query block, shard) task counts the candidates above every query's threshold
(:func:`modgap._ties.count_above`) and keeps its exact top-K, and the shards merge by sums and
a top-K merge under the same total order. Rows are prepared as :func:`retrieval_ranks` prepares
them (:func:`modgap._array.prepare_rows`, ``unit="exact"``: float32 unit rows, row by row), so
on the whole set the ranks are the in-memory ones.

Sampled queries give estimates with a Wilson interval (finite-population corrected); on the
whole set they are exact.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .._array import prepare_rows
from .._progress import progress as progress_bar
from .._ties import exact_scores, merge_topk
from ..compute import Compute, resolve
from ..errors import InputError, ModgapError
from ..io.source import Source
from ..tasks.retrieval import check_ks
from .blocks import pairs_of, scan_rows
from .corrections import correction_terms
from .engines import Engine, LocalEngine
from .intervals import LEVEL, Z, estimate, wilson
from .measures import DEFAULT_SAMPLE_QUERIES, run_scans, sample_index

__all__ = ["merge_modalities", "search_topk", "stream_retrieval"]


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


def _n_captioned(source: Source, images: np.ndarray, with_caption: np.ndarray) -> int:
    """Images of the whole source that have at least one caption (the population of the
    image queries of image -> text and mixed recall): exact from the sample when it is every
    image, else one look at the pairing columns (one byte per image)."""
    if source.pairing == "rows" or images.size == source.n_images:
        return int(with_caption.size) if source.pairing != "rows" else source.n_images
    seen = np.zeros(source.n_images, dtype=bool)
    for shard in source.shards:
        seen[source.shard_pairs(shard)] = True
    return int(seen.sum())


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


def _stratified_mean(counts: list[tuple[int, int, int]], unit: int = 1) -> float:
    """``Σ_s n_s · count_s / size_s / (unit · Σ_s n_s)``: the mean over two strata (image
    and text queries) of ``count_s`` successes out of ``unit`` per query on ``size_s``
    sampled queries of ``n_s``. On whole strata every term is the integer ``count_s``, so
    the value is the in-memory ``Σ count / (unit · N)`` to the bit."""
    total = sum(n for _, _, n in counts)
    return sum(n * c / s for c, s, n in counts if s) / (unit * total)


def _stratified(parts: list[tuple[np.ndarray, int]], k: int) -> tuple[float, tuple[float, float]]:
    """Recall over two strata (image and text queries) weighted by their population sizes,
    with a normal interval of the stratified mean."""
    total = sum(n for _, n in parts)
    value = _stratified_mean([(int((r <= k).sum()), r.size, n) for r, n in parts])
    var = 0.0
    for r, n in parts:
        if r.size == 0:
            continue
        w = n / total
        p = float((r <= k).mean())
        f = 0.0 if r.size >= n else (n - r.size) / max(n - 1, 1)
        var += w * w * p * (1 - p) / r.size * f
    half = Z * math.sqrt(var)
    return value, (max(0.0, value - half), min(1.0, value + half))


def merge_modalities(image: dict, text: dict, k: int) -> tuple[np.ndarray, ...]:
    """``(ids, exact scores, tie keys)``: the top ``k`` of a mixed corpus, the explicit merge
    of an image top-k and a text top-k (scan results with ``top_ids`` / ``top_scores`` /
    ``top_key``; text ids offset by the number of images) under the one top-k order of
    :func:`modgap._ties.merge_topk` — exact score, then the tie key (the queries' own
    modality, or texts for outside queries, last), then the id: the order
    :func:`modgap.tasks.mixed.mixed_search_metrics` gives its joint score blocks."""
    return merge_topk(
        [(r["top_ids"], r["top_scores"], r["top_key"]) for r in (image, text)], int(k)
    )


def stream_retrieval(
    source: Source,
    ks: Sequence[int] = (1, 5, 10),
    *,
    sample_queries: int | None = DEFAULT_SAMPLE_QUERIES,
    mixed: bool | None = None,
    engine: Engine | None = None,
    compute: Compute | None = None,
    progress: bool = False,
    label: str = "",
    correction: Any = None,
) -> dict:
    """Image → text and text → image Recall@K, ranks and rSum, and the mixed-corpus metrics
    (``mixed``, default: without a correction), on ``sample_queries`` queries per modality
    (None: all) against every candidate; the keys of
    :func:`modgap.tasks.retrieval.retrieval_metrics` and
    :func:`modgap.tasks.mixed.mixed_search_metrics`, plus ``estimates`` and ``sampling``
    (``label``: added to the progress bar's title).

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
    n_cap = _n_captioned(source, I, keep)
    # every sampled image queries the mixed corpus for its top-K (as in memory); only those
    # with a caption have a partner, so an image -> text or mixed rank
    # the rows every retrieval kernel scores (the one row preparation, unit="exact")
    I_all = I
    Qx_all = prepare_rows(source.gather("image", I), "image_emb", unit="exact")
    Qx = Qx_all
    if keep.size < I.size:
        remap = np.full(I.size, -1)
        remap[keep] = np.arange(keep.size)
        I, cap_owner, Qx = I[keep], remap[cap_owner], Qx_all[keep]
    Qy = prepare_rows(source.gather("text", T), "text_emb", unit="exact")
    Xm = prepare_rows(source.gather("image", pairs_of(source, T)), "image_emb", unit="exact")
    Cm = prepare_rows(source.gather("text", cap_t), "text_emb", unit="exact")
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
        },
        {
            "name": "i2t",
            "pool": "text",
            "queries": Qx,
            "threshold": best_i,
            "exclude": (cap_owner, cap_t),
        },
    ]
    if terms is not None:
        specs[0].update(offset=terms["image_offset"], active=terms["text_active"])
        specs[1].update(offset=terms["text_offset"], active=terms["image_active"])
    if mixed:
        specs += [
            # own modality minus the query itself: counts for the mixed rank and the top-K
            # (of every sampled image: a separate spec when some have no caption)
            {
                "name": "ii",
                "pool": "image",
                "queries": Qx,
                "threshold": best_i,
                "self_index": I,
                **({"topk": kmax, "own": True, "id_offset": 0} if Qx is Qx_all else {}),
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
            },
            {
                "name": "it_top",
                "pool": "text",
                "queries": Qx_all,
                "topk": kmax,
                "own": False,
                "id_offset": n_i,
            },
            {
                "name": "ti_top",
                "pool": "image",
                "queries": Qy,
                "topk": kmax,
                "own": False,
                "id_offset": 0,
            },
        ]
        if Qx is not Qx_all:
            specs.append(
                {
                    "name": "ii_top",
                    "pool": "image",
                    "queries": Qx_all,
                    "self_index": I_all,
                    "topk": kmax,
                    "own": True,
                    "id_offset": 0,
                }
            )

    with progress_bar(
        f"retrieval: scanning every candidate{label}",
        total=scan_rows(source, specs),
        enabled=progress,
    ) as bar:
        r = run_scans(source, specs, engine=engine, compute=compute, bar=bar)
    t2i_rank = r["t2i"]["count"] + 1
    i2t_rank = r["i2t"]["count"] + 1
    out: dict[str, Any] = {}
    est: dict[str, dict] = {}
    rsum = 0.0
    for k in ks:
        a = _recall(t2i_rank, k, n_t, "text -> image recall of sampled texts")
        b = _recall(i2t_rank, k, n_cap, "image -> text recall (best caption) of sampled images")
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
        n_img_q = n_cap  # image queries with a partner
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
        # tie key 1: the query's own modality (of "ii" and "tt"), so key = same modality
        shares = [
            merge_modalities(r["ii_top" if "ii_top" in r else "ii"], r["it_top"], kmax)[2],
            merge_modalities(r["ti_top"], r["tt"], kmax)[2],
        ]
        for k in ks:
            parts = []
            for key, n in zip(shares, (n_i, n_t), strict=True):
                parts.append((key[:, :k].mean(axis=1), n))
            total = n_i + n_t
            counts = [
                (int(key[:, :k].sum()), key.shape[0], n)
                for key, n in zip(shares, (n_i, n_t), strict=True)
            ]
            v = _stratified_mean(counts, unit=k)
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
    Q = prepare_rows(queries, "queries", dim=source.dim, unit="exact")
    pools = ["image", "text"] if modality is None else [modality]
    specs = [
        {
            "name": p,
            "pool": p,
            "queries": Q,
            "topk": int(k),
            "own": p == "text",
            "id_offset": source.n_images if (p == "text" and modality is None) else 0,
        }
        for p in pools
    ]
    r = run_scans(source, specs, engine=engine, compute=compute)
    if len(pools) == 2:
        ids, sc, _ = merge_modalities(r["image"], r["text"], k)
        return ids, sc
    return r[pools[0]]["top_ids"], r[pools[0]]["top_scores"]
