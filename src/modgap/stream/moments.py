"""The moment pass of one shard (:func:`moment_kernel`) and how its results merge
(:func:`merge_moments`): the streamed side of :mod:`modgap.measures.moments`, the one moment
kernel of every route, on its global chunk grid; the rows are checked and normalised by
:func:`_unit_block` (the one row preparation, :func:`modgap._array.prepare_rows`)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from .._array import prepare_rows
from ..compute import Compute
from ..io.source import Shard, Source, shard_row
from ..measures.moments import CHUNK, PIECE, ChunkMoments, Moments
from .kernels import _rows_per_block

__all__ = ["merge_moments", "moment_kernel"]


def _unit_block(raw: np.ndarray, name: str, path: str, first: int) -> tuple:
    """``(x, 1/‖x‖, ‖x‖²)`` of a raw block: the float64 rows and squared norms of the one row
    preparation (:func:`modgap._array.prepare_rows`, ``unit="exact"``, ``sq_norms``), with the
    division left to the first moments' matrix-vector product."""
    x, sq = prepare_rows(
        raw, name, path, unit="exact", dtype=np.float64, sq_norms=True, where=shard_row(first)
    )
    return x, 1.0 / np.sqrt(sq), sq


def _merge_matched(a: dict | None, b: dict | None) -> dict | None:
    if a is None:
        return b
    if b is None:
        return a
    cross = None
    if a["cross"] is not None and b["cross"] is not None:
        cross = a["cross"] + b["cross"]
    return {
        "n": a["n"] + b["n"],
        "sum": a["sum"] + b["sum"],
        "sq": a["sq"] + b["sq"],
        "align": a["align"] + b["align"],
        "cross": cross,
    }


def _grid_chunks(source: Source, shard: Shard, modality: str, rows: int) -> Iterator:
    """The shard's raw blocks re-cut on the global chunk grid of
    :mod:`modgap.measures.moments`: ``(own, pieces)`` with ``pieces`` a list of ``(raw rows,
    file, first row)``. ``own=False``: the shard's rows before its first grid line (their
    chunk belongs to an earlier shard: they count for the matched sums only); ``own=True``: a
    chunk that starts in this shard, its rows past the shard's end gathered from the next
    shards (flagged ``first=None``: they count for the moments only)."""
    image = modality == "image"
    g0 = shard.image_start if image else shard.text_start
    n = shard.n_images if image else shard.n_texts
    total = source.n_images if image else source.n_texts
    a = min((-g0) % CHUNK, n)
    cur: list = []
    end = a + CHUNK  # local end of the chunk being cut
    for start, raw, path in source.raw_blocks(shard, modality, rows):
        p, stop = start, start + raw.shape[0]
        if p < a:
            q = min(a, stop)
            yield False, [(raw[: q - start], path, start)]
            p = q
        while p < stop:
            q = min(stop, end)
            cur.append((raw[p - start : q - start], path, p))
            p = q
            if q == end:
                yield True, cur
                cur, end = [], end + CHUNK
    if cur:  # the last chunk that starts here ends in the next shards
        extra = min(end, total - g0) - n
        if extra > 0:
            cur.append((source.gather(modality, np.arange(g0 + n, g0 + n + extra)), None, None))
        yield True, cur


def _unit_pieces(pieces: list, name: str, source: Source) -> Iterator:
    """``(u, ix, sq, own)`` per :data:`PIECE` rows of a chunk's pieces: float64 rows, inverse
    norms and squared norms (:func:`_unit_block`, in cache-sized pieces) and whether the rows
    are this shard's."""
    for raw, path, first in pieces:
        for p in range(0, raw.shape[0], PIECE):
            x, ix, sq = _unit_block(raw[p : p + PIECE], name, path or source.path, (first or 0) + p)
            yield x, ix, sq, first is not None


def moment_kernel(shard: Shard, source: Source, opts: dict, compute: Compute) -> dict:
    """Moments of one shard (see the module docstring). ``opts``: ``covariance``,
    ``matched``, ``cross``, ``gram64`` (booleans; ``gram64``: also the float64 scatter
    matrices ``x64``/``y64``, Chan-merged, for figures that are differences of second
    moments); ``rows="set"`` for a reducer's fit: the rows as an
    in-memory :class:`~modgap.embeddings.EmbeddingSet` holds them (``unit="stored"``,
    float32) and exact means (:class:`~modgap.measures.accumulators.Moments` with
    ``exact=True``), so a fit from moments has the bits of the in-memory fit on any route
    and block size. Otherwise rows are unit in float64, and the means and scatter matrices
    are those of :mod:`modgap.measures.moments` on its global chunk grid (float32 scatter,
    its stated bound), the kernel the in-memory measures run: the same chunks, hence the same
    bits, on any sharding, block size, engine or thread count."""
    cov, want_pairs, cross = opts.get("covariance"), opts.get("matched"), opts.get("cross")
    rows = _rows_per_block(source, compute, 3 * 8)
    exact = opts.get("rows") == "set"
    state: dict[str, Any] = {
        "x": Moments(bool(cov), exact),
        "y": Moments(bool(cov), exact),
        "pairs": None,
    }
    if exact:
        return _set_moments(shard, source, state, bool(want_pairs), bool(cross), rows, compute)
    buf = np.empty(CHUNK * source.dim, dtype=np.float32) if cov else None
    gram64 = bool(opts.get("gram64"))
    if gram64:  # float64 scatter too (the unmatched cosines' std: a difference of moments)
        state["x64"], state["y64"] = Moments(True), Moments(True)

    def matched(x, ix, sx, y, iy, sy):
        c = np.einsum("ij,ij->i", x, y) * ix * iy
        return {
            "n": int(c.size),
            "sum": float(c.sum()),
            "sq": float(c @ c),
            # ‖x̂ − ŷ‖² = ‖x̂‖² + ‖ŷ‖² − 2c, with the unit norms as computed
            "align": float((sx * ix * ix + sy * iy * iy - 2 * c).sum()),
            "cross": ((x * ix[:, None]).T @ (y * iy[:, None])) if cross else None,
        }

    def one_side(side: str, modality: str, pairs: Any = None) -> None:
        name = f"{modality}_emb"
        for own, pieces in _grid_chunks(source, shard, modality, rows):
            acc = ChunkMoments(bool(cov), buf) if own else None
            for raw, path, first in pieces:
                g = None
                if pairs is not None and first is not None:  # this shard's texts
                    g = source.gather("image", pairs[first : first + raw.shape[0]])
                for p in range(0, raw.shape[0], PIECE):
                    where = (path or source.path, (first or 0) + p)
                    y, iy, sy = _unit_block(raw[p : p + PIECE], name, *where)
                    if acc is not None:
                        acc.add(y, iy)
                        if gram64:
                            state[side + "64"].update(y * iy[:, None])
                    if g is not None:
                        x, ix, sx = _unit_block(g[p : p + PIECE], "image_emb", source.path, 0)
                        part = matched(x, ix, sx, y, iy, sy)
                        state["pairs"] = _merge_matched(state["pairs"], part)
            if acc is not None:
                state[side].merge(acc.result())

    with compute.threads_limit():
        if want_pairs and source.pairing == "rows":  # both modalities in lockstep
            texts = _grid_chunks(source, shard, "text", rows)
            buf_y = None if buf is None else np.empty_like(buf)
            for own, ipieces in _grid_chunks(source, shard, "image", rows):
                _, tpieces = next(texts)
                ax = ChunkMoments(bool(cov), buf) if own else None
                ay = ChunkMoments(bool(cov), buf_y) if own else None
                for (x, ix, sx, mine), (y, iy, sy, _) in zip(
                    _unit_pieces(ipieces, "image_emb", source),
                    _unit_pieces(tpieces, "text_emb", source),
                    strict=True,
                ):
                    if own:
                        ax.add(x, ix)
                        ay.add(y, iy)
                        if gram64:
                            state["x64"].update(x * ix[:, None])
                            state["y64"].update(y * iy[:, None])
                    if mine:
                        part = matched(x, ix, sx, y, iy, sy)
                        state["pairs"] = _merge_matched(state["pairs"], part)
                if own:
                    state["x"].merge(ax.result())
                    state["y"].merge(ay.result())
            return state
        one_side("x", "image")
        one_side("y", "text", source.shard_pairs(shard) if want_pairs else None)
    return state


def merge_moments(a: dict, b: dict) -> dict:
    """Fold two :func:`moment_kernel` results (any order; the engines use one fixed tree)."""
    out = {
        "x": a["x"].merge(b["x"]),
        "y": a["y"].merge(b["y"]),
        "pairs": _merge_matched(a["pairs"], b["pairs"]),
    }
    for side in ("x64", "y64"):
        if side in a:
            out[side] = a[side].merge(b[side])
    return out


def _set_moments(
    shard: Shard,
    source: Source,
    state: dict,
    want_pairs: bool,
    cross: bool,
    rows: int,
    compute: Compute,
) -> dict:
    """:func:`moment_kernel` with ``rows="set"``: float32 rows as the in-memory set holds
    them, widened to float64; the matched part is only the cross moment (Procrustes)."""

    def add_pairs(x: np.ndarray, y: np.ndarray) -> None:
        part = {"n": int(x.shape[0]), "sum": 0.0, "sq": 0.0, "align": 0.0}
        part["cross"] = x.T @ y if cross else None
        state["pairs"] = _merge_matched(state["pairs"], part)

    with compute.threads_limit():
        for _, b in source.blocks(shard, "image", rows):
            state["x"].update(b.astype(np.float64))
        t2i = source.shard_pairs(shard) if want_pairs else None
        for start, b in source.blocks(shard, "text", rows):
            y = b.astype(np.float64)
            state["y"].update(y)
            if t2i is not None:
                g = source.gather("image", t2i[start : start + y.shape[0]])
                add_pairs(g.astype(np.float64), y)
    return state
