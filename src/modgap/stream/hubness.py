r"""Hubness of a streamed source: the sampled queries' exact top-k over the complete pool.

The k-occurrence :math:`N_k(c)` of a pool row counts the queries that have it in their top-k
(:mod:`modgap.measures.hubness`). Streamed, a uniform sample of queries of each modality is
scored exactly against every row of the other one (:func:`~modgap.stream.kernels.scan_kernel`
with ``topk``, the top-k merge of :func:`~modgap.stream.kernels.merge_scans`), and the
statistics come from those top-k ids (:func:`~modgap.measures.hubness.hubness_from_topk`):
exact when the sample is every query, an estimate with its sample size and a bootstrap
interval otherwise. ``k`` is the in-memory route's (:func:`~modgap.measures.hubness.hubness_k`:
min(10, ⌊√n⌋) of the smaller modality; skipped under 50 rows).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._array import prepare_rows
from ..measures.hubness import hubness_from_topk, hubness_k

__all__ = ["hubness_k", "hubness_results", "hubness_specs"]


def hubness_specs(Xs: np.ndarray, Ys: np.ndarray, k: int) -> list[dict]:
    """The two scans: sampled texts against every image (``t2i``) and sampled images against
    every text (``i2t``), each keeping its exact top-``k`` pool ids."""
    # queries and pool rows: the float32 unit rows of the one row preparation, as in memory
    Qx = prepare_rows(Xs, "image_emb", unit="exact")
    Qy = prepare_rows(Ys, "text_emb", unit="exact")
    return [
        {"name": "hub_t2i", "pool": "image", "queries": Qy, "topk": k},
        {"name": "hub_i2t", "pool": "text", "queries": Qx, "topk": k},
    ]


def hubness_results(
    scanned: dict, n_images: int, n_texts: int, k: int, seed: int
) -> tuple[dict[str, Any], dict[str, tuple]]:
    """The hubness keys from :func:`hubness_specs`' scans, and ``key -> (interval, sample,
    population)`` for the estimated ones."""
    out: dict[str, Any] = {}
    est: dict[str, tuple] = {}
    for direction, n_q, n_c in (("t2i", n_texts, n_images), ("i2t", n_images, n_texts)):
        ids = scanned[f"hub_{direction}"]["top_ids"]
        values, intervals = hubness_from_topk(ids, n_q, n_c, k, direction, seed=seed)
        out.update(values)
        for key, interval in intervals.items():
            est[key] = (interval, ids.shape[0], n_q)
    return out, est
