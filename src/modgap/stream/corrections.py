r"""Retrieval-time corrections (:mod:`modgap.tasks.scoring`) on a streamed source.

A fitted correction ranks the candidates of query ``q`` by :math:`s(q, c) - a_q\, o(c)`. On a
source, the two ingredients are computed by the engine, with the correction's own code:

* **Offsets** ``o(c)``: a per-candidate statistic against the in-memory query bank.
  :func:`offsets_kernel` reads one shard block by block (rows prepared as the retrieval scan
  prepares them) and calls :meth:`~modgap.tasks.scoring.ScoreCorrection.candidate_offsets`,
  the method the in-memory :meth:`~modgap.tasks.scoring.ScoreCorrection.offsets` calls on the
  whole set; its value for a row depends on the row and the bank only, so the shards give
  the in-memory bits. One pass over the pool; the offsets are kept in memory (8 bytes per
  candidate) and shipped to the counting scan.
* **Query weights** ``a_q`` (QB-Norm's dynamic rule, corrections with ``activation_k``): the
  activation set is the exact top-``k`` of every bank query among the whole pool, and a query
  is corrected when its raw exact top-1 is in it. Both come from **one extra scan pass**
  before the counting one (:func:`~modgap.stream.measures.run_scans` with ``topk`` specs:
  the bank's top-``k`` and each sampled query's top-1, merged across shards by
  :func:`modgap._ties.merge_topk`, ties to the lower index as in memory), then
  :func:`modgap.tasks.bank.activation`, the rule of the in-memory route. Other corrections
  weigh every query 1 and skip that pass.

The counting scan then subtracts the offsets with :func:`modgap._ties.count_above`, the exact
rule of :func:`~modgap.tasks.retrieval.retrieval_ranks` (the float32 window widened by the
offsets' rounding).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._array import prepare_rows
from ..compute import Compute
from ..errors import ModgapError
from ..io.source import Shard, Source, shard_row
from ..tasks.bank import activation
from .engines import Engine
from .measures import run_scans

__all__ = ["check_correction", "correction_terms", "offsets_kernel"]

MODS = ("image", "text")


def check_correction(correction: Any, source: Source) -> None:
    """A fitted correction that can score ``source`` (one-line errors otherwise)."""
    if not hasattr(correction, "candidate_offsets"):
        raise ModgapError(
            f"correction must be a fitted scoring correction (modgap.tasks.scoring), "
            f"got {type(correction).__name__}"
        )
    correction.check_sizes(source.n_images, source.n_texts)
    if correction.n_features_in_ != source.dim:
        raise ModgapError(
            f"the correction was fitted on {correction.n_features_in_}-dimensional rows and "
            f"the set has {source.dim}"
        )


def offsets_kernel(shard: Shard, source: Source, correction: Any, compute: Compute) -> dict:
    """``{"image": o, "text": o}``: the offsets of every candidate row of one shard (float64,
    in row order), from the correction's
    :meth:`~modgap.tasks.scoring.ScoreCorrection.candidate_offsets`."""
    import torch

    # a read block (float32) and its prepared copy; candidate_offsets sizes its own float64
    # score blocks from the budget
    rows = compute.rows_per_block(max(1, source.dim) * 4 * 2, share=0.5, cap=1 << 15)
    out: dict[str, np.ndarray] = {}
    with torch.no_grad(), compute.threads_limit():
        for modality in MODS:
            name = f"{modality}_emb"
            parts = [np.empty(0, dtype=np.float64)]
            for start, raw, path in source.raw_blocks(shard, modality, rows):
                C = torch.from_numpy(
                    prepare_rows(raw, name, path, unit="exact", where=shard_row(start))
                )
                parts.append(correction.candidate_offsets(C, modality, compute).cpu().numpy())
            out[modality] = np.concatenate(parts)
    return out


def correction_terms(
    source: Source,
    correction: Any,
    image_queries: np.ndarray,
    text_queries: np.ndarray,
    *,
    engine: Engine,
    compute: Compute,
) -> dict:
    """The offsets of every candidate and the weights of the given queries.

    Parameters
    ----------
    source : Source
        The evaluated set.
    correction : fitted ScoreCorrection
    image_queries, text_queries : float32 arrays (q, d)
        The (sampled) image → text and text → image queries, prepared
        (:func:`~modgap._array.prepare_rows`, ``unit="exact"``).
    engine, compute
        Where the kernels run; memory budget and threads.

    Returns
    -------
    dict
        ``image_offset`` (n_images,), ``text_offset`` (n_texts,) float64; ``image_active``,
        ``text_active``: float64 0/1 weights of the image and text queries.
    """
    check_correction(correction, source)
    handle = engine.put(correction)
    parts = engine.map(offsets_kernel, list(source.shards), source, handle, compute)
    out = {f"{m}_offset": np.concatenate([np.empty(0)] + [p[m] for p in parts]) for m in MODS}
    k = correction.activation_k
    if k is None:
        out["image_active"] = np.ones(len(image_queries))
        out["text_active"] = np.ones(len(text_queries))
        return out

    def bank(modality: str) -> np.ndarray:
        return prepare_rows(correction.bank(modality).numpy(), "bank", unit="exact")

    def spec(name: str, pool: str, queries: np.ndarray, topk: int) -> dict:
        return {"name": name, "pool": pool, "queries": queries, "topk": topk}

    r = run_scans(
        source,
        [
            spec("hubs_image", "image", bank("image"), k),
            spec("hubs_text", "text", bank("text"), k),
            spec("top1_text", "image", text_queries, 1),
            spec("top1_image", "text", image_queries, 1),
        ],
        engine=engine,
        compute=compute,
    )
    for queries, pool, n in (("text", "image", source.n_images), ("image", "text", source.n_texts)):
        active = activation(r[f"hubs_{pool}"]["top_ids"], r[f"top1_{queries}"]["top_ids"], n)
        out[f"{queries}_active"] = active.astype(np.float64)
    return out
