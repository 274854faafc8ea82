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

from ..measures.hubness import hubness_from_topk, hubness_k

__all__ = ["hubness_k", "hubness_results", "hubness_specs", "unit32_rows"]

#: how far a row's float32 norm may be off 1 before hubness divides every row of its modality
_UNIT_TOL = 1e-6


def unit32_rows(block: np.ndarray) -> np.ndarray:
    """Checked float32 rows divided by their float32 norm, as
    :func:`modgap.measures.hubness.unit32` divides them (by torch, row by row, so a row's
    bits do not depend on its block)."""
    import torch

    t = torch.from_numpy(np.ascontiguousarray(block, dtype=np.float32))
    norms = torch.linalg.vector_norm(t, dim=1)
    return (t / norms[:, None]).numpy() if t.shape[0] else block


def _norm_rule(rows: np.ndarray) -> str:
    """``"unit32"`` when one row is off unit by more than 10⁻⁶ (then hubness divides every row
    by its norm), else ``"set"``: the in-memory rule, exact when ``rows`` is the whole
    modality (on a sample, the sample decides)."""
    import torch

    norms = torch.linalg.vector_norm(torch.from_numpy(np.ascontiguousarray(rows)), dim=1)
    return "unit32" if bool(((norms - 1).abs() > _UNIT_TOL).any()) else "set"


def _prepared(rows: np.ndarray, rule: str) -> np.ndarray:
    return unit32_rows(rows) if rule == "unit32" else np.ascontiguousarray(rows, np.float32)


def hubness_specs(Xs: np.ndarray, Ys: np.ndarray, k: int) -> list[dict]:
    """The two scans: sampled texts against every image (``t2i``) and sampled images against
    every text (``i2t``), each keeping its exact top-``k`` pool ids."""
    rx, ry = _norm_rule(Xs), _norm_rule(Ys)
    return [
        {"name": "hub_t2i", "pool": "image", "queries": _prepared(Ys, ry), "topk": k, "norm": rx},
        {"name": "hub_i2t", "pool": "text", "queries": _prepared(Xs, rx), "topk": k, "norm": ry},
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
