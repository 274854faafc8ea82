"""Centroid gap and its per-dimension breakdown (Liang et al. 2022, "Mind the Gap")."""

from __future__ import annotations

from typing import Any

import numpy as np

from .._array import prepare_rows
from .moments import moments_of_unit_rows

__all__ = ["centroid_gap", "gap_from_means", "per_dimension_from_delta", "per_dimension_gap"]


def gap_from_means(mu_x: np.ndarray, mu_y: np.ndarray) -> dict:
    """Centroid-gap statistics from the two modality means (shared with the accumulators)."""
    delta = mu_x - mu_y
    nx, ny = float(np.linalg.norm(mu_x)), float(np.linalg.norm(mu_y))
    cos = float(mu_x @ mu_y / (nx * ny)) if nx > 0 and ny > 0 else float("nan")
    return {
        "centroid_gap": float(np.linalg.norm(delta)),
        "centroid_cosine": cos,
        "image_centroid_norm": nx,
        "text_centroid_norm": ny,
    }


def centroid_gap(X: Any, Y: Any, return_vector: bool = False) -> dict:
    r"""Centroid (mean) gap between image and text embeddings.

    With rows L2-normalised, :math:`\mu_X = \frac1n\sum_i x_i`, :math:`\mu_Y = \frac1m\sum_j y_j`
    and :math:`\Delta = \mu_X - \mu_Y`:

    .. math:: \text{gap} = \lVert\Delta\rVert_2, \qquad
              \cos(\mu_X, \mu_Y) = \frac{\mu_X\cdot\mu_Y}{\lVert\mu_X\rVert\,\lVert\mu_Y\rVert}.

    Source: Liang et al., "Mind the Gap: Understanding the Modality Gap in Multi-modal
    Contrastive Representation Learning", NeurIPS 2022. No pairs needed.

    Parameters
    ----------
    X : array (n, d)
        Image embeddings (numpy or torch); rows are L2-normalised first.
    Y : array (m, d)
        Text embeddings.
    return_vector : bool
        Also return the gap vector :math:`\Delta` (numpy float64, key ``gap_vector``).

    Returns
    -------
    dict
        ``centroid_gap``, ``centroid_cosine``, ``image_centroid_norm``, ``text_centroid_norm``
        (floats) and, if asked, ``gap_vector``.
    """
    X = prepare_rows(X, "image_emb", unit="exact", dtype=np.float64)
    Y = prepare_rows(Y, "text_emb", dim=X.shape[1], unit="exact", dtype=np.float64)
    # the means of the one moment kernel (measures.moments), as the streamed route
    mu_x, mu_y = moments_of_unit_rows(X).mean, moments_of_unit_rows(Y).mean
    out = gap_from_means(mu_x, mu_y)
    if return_vector:
        out["gap_vector"] = mu_x - mu_y
    return out


def per_dimension_from_delta(delta: np.ndarray, top: int = 10) -> dict:
    """Per-dimension statistics of a gap vector (shared with the accumulators)."""
    sq = np.asarray(delta, dtype=np.float64) ** 2
    total = float(sq.sum())
    order = np.argsort(-sq, kind="stable")
    if total > 0:
        cum = np.cumsum(sq[order]) / total
        # smallest k whose top-k share reaches the level (tolerance for float round-off)
        dims_50 = int(np.searchsorted(cum, 0.5 - 1e-12) + 1)
        dims_90 = int(np.searchsorted(cum, 0.9 - 1e-12) + 1)
    else:
        dims_50 = dims_90 = 0
    k = min(top, sq.size)
    return {
        "dims_50": dims_50,
        "dims_90": dims_90,
        "dim": int(sq.size),
        "top_dims": [int(i) for i in order[:k]],
        "top_share": [float(sq[i] / total) if total > 0 else 0.0 for i in order[:k]],
        "gap_sq": sq,
    }


def per_dimension_gap(X: Any, Y: Any, top: int = 10) -> dict:
    r"""How the centroid gap spreads over the embedding dimensions.

    With :math:`\Delta = \mu_X - \mu_Y` (unit rows), dimension :math:`k` contributes
    :math:`\Delta_k^2` to :math:`\lVert\Delta\rVert^2`. Sorting the contributions in decreasing
    order, ``dims_50`` (``dims_90``) is the smallest number of dimensions whose contributions sum
    to at least 50% (90%) of :math:`\lVert\Delta\rVert^2`. A value far below ``d`` means the gap
    sits in a few coordinates, as reported for CLIP (Liang et al. 2022; Schrodi et al. 2025).

    This measure is about the coordinate axes, so unlike the others it is *not* invariant under
    a rotation of the embedding space.

    Parameters
    ----------
    X, Y : array (n, d), (m, d)
        Image and text embeddings (rows L2-normalised first).
    top : int
        How many of the largest dimensions to list.

    Returns
    -------
    dict
        ``dims_50``, ``dims_90``, ``dim``, ``top_dims`` (indices, largest first), ``top_share``
        (their share of :math:`\lVert\Delta\rVert^2`) and ``gap_sq`` (numpy, all
        :math:`\Delta_k^2`).
    """
    delta = centroid_gap(X, Y, return_vector=True)["gap_vector"]
    return per_dimension_from_delta(delta, top=top)
