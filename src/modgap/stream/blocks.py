"""Pieces shared by the streamed kernels, measures and retrieval: the pairing of sampled
texts and the size of a scan pass (the top-K merge rule of candidate lists is
:func:`modgap._ties.merge_topk`, the one of every route)."""

from __future__ import annotations

import math

import numpy as np

from ..io.source import Source

__all__ = ["QUERY_BLOCK", "has_siblings", "pairs_of", "scan_rows", "sibling_pairs"]

#: queries per scan task (a query block x one shard). Every query block reads every pool
#: shard once, so the default sample is one block (its rows cost q x d floats, ~40 MB at
#: d = 1024; the score blocks are sized from the memory budget whatever q is)
QUERY_BLOCK = 1 << 14


def pairs_of(source: Source, texts: np.ndarray) -> np.ndarray:
    """Global image index of the given texts (reads only their shards' pairing)."""
    if source.pairing == "rows":
        return texts
    starts = source.starts("text")
    out = np.empty(texts.size, dtype=np.int64)
    which = np.searchsorted(starts, texts, side="right") - 1
    for s in np.unique(which):
        sel = np.flatnonzero(which == s)
        t2i = source.shard_pairs(source.shards[int(s)])
        out[sel] = t2i[texts[sel] - starts[s]]
    return out


def has_siblings(source: Source) -> bool:
    """Whether some image of ``source`` has several captions (reads only the pairing)."""
    if source.pairing == "rows" or not source.has_pairs:
        return False
    owners = [source.shard_pairs(shard) for shard in source.shards]
    counts = np.bincount(np.concatenate(owners), minlength=1) if owners else np.zeros(1)
    return bool(counts.max() > 1)


def sibling_pairs(source: Source, texts: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """``(query position, text row)`` of every caption of each query text's own image (itself
    included): the ``exclude`` pairs of a scan that leaves a caption's siblings out. ``None``
    when no query has a sibling (one caption per image): then that scan is the plain one."""
    if source.pairing == "rows" or texts.size == 0:
        return None
    own = pairs_of(source, texts)
    images = np.unique(own)
    rows, owner = [], []
    for shard in source.shards:  # reads only the pairing columns
        t2i = source.shard_pairs(shard)
        hit = np.flatnonzero(np.isin(t2i, images))
        rows.append(hit + shard.text_start)
        owner.append(t2i[hit])
    rows_a, owner_a = np.concatenate(rows), np.concatenate(owner)
    order = np.argsort(owner_a, kind="stable")
    rows_a, owner_a = rows_a[order].astype(np.int64), owner_a[order]
    start = np.searchsorted(owner_a, own, side="left")
    count = np.searchsorted(owner_a, own, side="right") - start
    if int(count.max()) <= 1:
        return None
    qpos = np.repeat(np.arange(texts.size, dtype=np.int64), count)
    within = np.arange(qpos.size) - np.repeat(np.cumsum(count) - count, count)
    return qpos, rows_a[np.repeat(start, count) + within]


def scan_rows(source: Source, specs: list[dict]) -> int:
    """Rows one scan pass reads (query blocks × the pool rows of each pool named in
    ``specs``): the total of its progress bar."""
    n_blocks = max(math.ceil(len(s["queries"]) / s.get("block", QUERY_BLOCK)) for s in specs)
    pools = {s["pool"] for s in specs}
    per = sum(source.n_images if p == "image" else source.n_texts for p in pools)
    return n_blocks * per
