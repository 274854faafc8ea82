r"""The per-shard kernels every engine runs, and how their results merge.

Two kinds, all module-level functions of ``(item, source, ...)`` returning plain dicts of
numbers and numpy arrays (so any engine can ship them):

* :func:`~modgap.stream.moments.moment_kernel` / ``merge_moments`` (in
  :mod:`modgap.stream.moments`, on rows prepared by :func:`unit_block`) — one pass over a
  shard: per modality the count, the float64 mean and (optionally) the scatter matrix of the
  unit rows (float32 per chunk of a fixed grid of global rows, Chan-merged in float64:
  :mod:`modgap.measures.moments`), and over the matched pairs :math:`\sum c`,
  :math:`\sum c^2` (:math:`c = \cos(x_{\pi(j)}, y_j)`),
  :math:`\sum\lVert x_{\pi(j)} - y_j\rVert^2` and optionally the cross-moment
  :math:`\sum x_{\pi(j)}^\top y_j` (Procrustes).
* :func:`scan_kernel` / :func:`merge_scans` — one block of queries against one shard's rows of
  one modality, exactly (:mod:`modgap._ties`): the exact best score, the count of rows whose
  exact score beats a per-query threshold (self and listed partners excluded), the sum of the
  uniformity kernel :math:`e^{-2\lVert q - p\rVert^2} = e^{4 q\cdot p - 4}`
  (:func:`modgap.measures.alignment.uniformity_block_sum` on float64 unit rows, as in memory),
  and the exact top-K. Merged across shards by max, sum and :func:`modgap._ties.merge_topk`,
  the order of every in-memory top-K too.

Writing a transformed shard is not a kernel of this package: it belongs to the reduce
workflow (:mod:`modgap.workflow.shard`), which the engines schedule like any other task.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .._array import prepare_rows
from .._ties import count_above, exact_scores, merge_topk, topk_rows
from ..compute import Compute
from ..io.source import Shard, Source, shard_row
from ..measures.alignment import uniformity_block_sum

__all__ = [
    "merge_scans",
    "scan_kernel",
]


def _rows_per_block(source: Source, compute: Compute, per_row: int) -> int:
    return compute.rows_per_block(max(1, source.dim) * per_row, share=0.5, cap=1 << 16)


# -- exact scans ---------------------------------------------------------------------------
def _exact(Q, P):
    def f(rows, cols):
        return exact_scores(Q, P, rows, cols)

    return f


def _ksum(Q64: Any, P64: Any, s: dict, lo: int, hi: int, p0: int, p1: int, buf: Any) -> Any:
    """The uniformity sums of one spec's queries ``lo:hi`` against pool rows ``p0:p1``, each
    query's own row (``self_index``) left out."""
    import torch

    mask = None
    if s.get("self_index") is not None:
        si = np.asarray(s["self_index"][lo:hi])
        q = np.flatnonzero((si >= p0) & (si < p1))
        if q.size:
            mask = torch.zeros((hi - lo, p1 - p0), dtype=torch.bool, device=Q64.device)
            mask[
                torch.from_numpy(q).to(Q64.device), torch.from_numpy(si[q] - p0).to(Q64.device)
            ] = True
    return uniformity_block_sum(Q64, P64, mask, out=buf)


def scan_kernel(item: tuple[int, Shard], source: Source, specs: list, compute: Compute) -> dict:
    """Query block ``item[0]`` of every spec in ``specs`` against shard ``item[1]``.

    A spec is a dict: ``name``; ``pool`` (``"image"``/``"text"``); ``queries`` (float32
    ``(q, d)``, unit: :func:`~modgap._array.prepare_rows` with ``unit="exact"``, the rows
    the pool's blocks are made into too); ``block`` (queries per block); optional
    ``queries64`` (the same queries as float64 unit rows, ``dtype=np.float64``: needed by
    ``ksum``);
    ``self_index`` (global pool row of each query, never counted), ``exclude`` (``(query,
    pool row)`` int64 pairs: partners, not counted), ``threshold`` (float64 per query: count
    rows scoring exactly above it; with ``offset`` (float64 per pool row) and ``active``
    (float64 0/1 per query) the corrected scores ``s - a_q o(c)`` of a retrieval-time
    correction are counted, by the rule of :func:`~modgap.tasks.retrieval.retrieval_ranks`),
    and the flags ``best``, ``ksum``, ``topk`` (K), with
    ``id_offset`` and ``own`` (whether the pool is the queries' modality: tied top-K entries
    of the own modality go last) for the top-K ids.

    Returns ``{(name, block): {...}}`` with ``best`` (float64), ``count`` (int64), ``ksum``
    (float64), ``top_ids`` / ``top_scores`` / ``top_key`` as asked.
    """
    import torch

    b, shard = item
    out: dict = {}
    todo = [s for s in specs if b * s["block"] < len(s["queries"])]
    by_pool: dict[str, list] = {}
    for s in todo:
        by_pool.setdefault(s["pool"], []).append(s)
    d = source.dim
    # the queries present in this block, not the block size: a 2,000-query sample in blocks of
    # 16,384 made pool blocks 8x shorter than the budget allows, each paying the read, the row
    # preparation and the per-block decisions again. The score buffers are shared by the specs
    # of a pool (scored one after the other), so the largest spec sizes them
    qmax = max([min(s["block"], len(s["queries"]) - b * s["block"]) for s in todo], default=1)
    # per pool row: one score block (q x p float32), its two comparison buffers (count_above's
    # near_buffer) and float32 exp temporaries; the uniformity sums add a float64 block
    # (product and exponentials in place); and the pool row itself, float32 and float64
    counting = any(s.get("threshold") is not None for s in todo)
    corrected = any(s.get("offset") is not None for s in todo)
    want_k = any(s.get("ksum") for s in todo)
    per = 4 * 3 + (8 if want_k else 0) + (4 if corrected else 0) + (4 if counting else 0)
    pool_row = max(1, d) * (4 + (8 if want_k else 0))
    # no longer than the shard's longest pool: the buffers are sized from it
    most = max([shard.n_images if s["pool"] == "image" else shard.n_texts for s in todo] or [1])
    rows = compute.rows_per_block(qmax * per + pool_row, share=0.5, cap=min(1 << 15, most))
    # score and scratch blocks allocated once per task and reused for every row block: fresh
    # (q x p) allocations each time cost a page fault per 4 KiB (seen: 40% system time)
    dev = compute.torch_device  # the same kernels on CPU and GPU workers
    dev64 = dev if dev.type != "mps" else torch.device("cpu")  # MPS has no float64
    U_buf = None
    if any(s.get("ksum") for s in todo):
        U_buf = torch.empty(qmax * rows, dtype=torch.float64, device=dev64)
    S_buf = torch.empty(qmax * rows, dtype=torch.float32, device=dev)
    G_buf = torch.empty(qmax * rows, dtype=torch.float32, device=dev)
    O_buf = torch.empty(qmax * rows, dtype=torch.float32, device=dev) if corrected else None
    # count_above's second comparison block: both comparisons in one pass each, the window
    # taken from their difference (no third comparison, no boolean block per pool block)
    N_buf = torch.empty(qmax * rows, dtype=torch.float32, device=dev) if counting else None
    with torch.no_grad(), compute.threads_limit():
        for pool, group in by_pool.items():
            g0 = shard.image_start if pool == "image" else shard.text_start
            state = {}
            Qs = {}
            for s in group:
                lo, hi = b * s["block"], min((b + 1) * s["block"], len(s["queries"]))
                Qs[s["name"]] = (
                    lo,
                    hi,
                    torch.from_numpy(np.ascontiguousarray(s["queries"][lo:hi])).to(dev),
                )
                st: dict[str, Any] = {}
                if s.get("best"):
                    st["best"] = torch.full((hi - lo,), -math.inf, dtype=torch.float64, device=dev)
                if s.get("threshold") is not None:
                    st["count"] = torch.zeros(hi - lo, dtype=torch.int64, device=dev)
                if s.get("ksum"):
                    st["ksum"] = torch.zeros(hi - lo, dtype=torch.float64, device=dev64)
                if s.get("topk"):
                    st["top_ids"] = np.full((hi - lo, 0), -1, dtype=np.int64)
                    st["top_scores"] = np.zeros((hi - lo, 0))
                    st["top_key"] = np.zeros((hi - lo, 0), dtype=np.int64)
                if s.get("ksum"):
                    Qs[s["name"]] += (torch.from_numpy(s["queries64"][lo:hi]).to(dev64),)
                state[s["name"]] = st
            name = "image_emb" if pool == "image" else "text_emb"
            want64 = any(s.get("ksum") for s in group)
            for start, raw, path in source.raw_blocks(shard, pool, rows):
                # every pool row as the queries are made (one row preparation for every
                # scan): float32 unit rows scored, float64 unit rows for the uniformity sums
                prep = {"unit": "exact", "where": shard_row(start)}
                P = torch.from_numpy(prepare_rows(raw, name, path, **prep)).to(dev)
                P64 = None
                if want64:
                    x64 = prepare_rows(raw, name, path, dtype=np.float64, **prep)
                    P64 = torch.from_numpy(x64).to(dev64)
                p0, p1 = g0 + start, g0 + start + P.shape[0]
                for s in group:
                    lo, hi, Q = Qs[s["name"]][:3]
                    st = state[s["name"]]
                    if s.get("ksum"):
                        st["ksum"] += _ksum(Qs[s["name"]][3], P64, s, lo, hi, p0, p1, U_buf)
                    if not any(s.get(f) for f in ("best", "topk")) and s.get("threshold") is None:
                        continue  # a uniformity-only spec needs no float32 score block
                    S = torch.mm(Q, P.T, out=S_buf[: Q.shape[0] * P.shape[0]].view(Q.shape[0], -1))
                    G = G_buf[: S.numel()].view(S.shape)
                    scale = torch.ones(hi - lo, dtype=torch.float64, device=dev)
                    exact = _exact(Q, P)
                    if s.get("self_index") is not None:
                        si = np.asarray(s["self_index"][lo:hi])
                        q = np.flatnonzero((si >= p0) & (si < p1))
                        if q.size:
                            S[
                                torch.from_numpy(q).to(dev), torch.from_numpy(si[q] - p0).to(dev)
                            ] = -math.inf
                    if s.get("best"):
                        _, top = topk_rows(S, 1, scale, d, exact)
                        st["best"] = torch.maximum(st["best"], top[:, 0])
                    if s.get("topk"):
                        k = min(int(s["topk"]), S.shape[1])
                        own = bool(s.get("own"))
                        ids, sc = topk_rows(S, k, scale, d, exact)
                        valid = ids >= 0
                        gid = np.where(
                            valid.cpu().numpy(), ids.cpu().numpy() + p0 + s.get("id_offset", 0), -1
                        )
                        key = np.full(gid.shape, int(own), dtype=np.int64)
                        sc = np.where(valid.cpu().numpy(), sc.cpu().numpy(), -np.inf)
                        st["top_ids"], st["top_scores"], st["top_key"] = merge_topk(
                            [
                                (st["top_ids"], st["top_scores"], st["top_key"]),
                                (gid, sc, key),
                            ],
                            int(s["topk"]),
                        )
                    if s.get("threshold") is not None:
                        ex = s.get("exclude")
                        if ex is not None:
                            qpos, prow = ex
                            sel = np.flatnonzero(
                                (qpos >= lo) & (qpos < hi) & (prow >= p0) & (prow < p1)
                            )
                            if sel.size:
                                S[
                                    torch.from_numpy(qpos[sel] - lo).to(dev),
                                    torch.from_numpy(prow[sel] - p0).to(dev),
                                ] = -math.inf
                        thr = torch.from_numpy(
                            np.asarray(s["threshold"][lo:hi], dtype=np.float64)
                        ).to(dev)
                        off: dict[str, Any] = {}
                        if s.get("offset") is not None:  # a retrieval-time correction

                            def part(v, a, b):
                                return torch.from_numpy(np.asarray(v[a:b])).to(dev)

                            off = dict(
                                offset=part(s["offset"], p0, p1),
                                active=part(s["active"], lo, hi),
                                offset_buffer=O_buf[: S.numel()].view(S.shape),
                            )
                        near = N_buf[: S.numel()].view(S.shape)
                        st["count"] += count_above(
                            S, thr, scale, d, exact, axis=1, buffer=G, near_buffer=near, **off
                        )
            for s in group:
                out[(s["name"], b)] = {
                    k: (v.cpu().numpy() if hasattr(v, "cpu") else v)
                    for k, v in state[s["name"]].items()
                }
    return out


def merge_scans(a: dict, b: dict) -> dict:
    """Fold two :func:`scan_kernel` results: max of ``best``, sums of ``count`` and
    ``ksum``, top-K merge of the lists (:func:`modgap._ties.merge_topk`)."""

    out = dict(a)
    for key, vb in b.items():
        va = out.get(key)
        if va is None:
            out[key] = vb
            continue
        m = {}
        for f, v in vb.items():
            if f == "best":
                m[f] = np.maximum(va[f], v)
            elif f in ("count", "ksum"):
                m[f] = va[f] + v
        if "top_ids" in vb:
            k = max(va["top_ids"].shape[1], vb["top_ids"].shape[1])
            m["top_ids"], m["top_scores"], m["top_key"] = merge_topk(
                [
                    (va["top_ids"], va["top_scores"], va["top_key"]),
                    (vb["top_ids"], vb["top_scores"], vb["top_key"]),
                ],
                k,
            )
        out[key] = m
    return out
