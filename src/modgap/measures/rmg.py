"""Relative modality gap (Schrodi et al. 2025)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ._common import as_pairs

__all__ = ["mean_pairwise_cosine", "relative_modality_gap", "rmg_from_sums"]


def mean_pairwise_cosine(sum_vec: np.ndarray, n: int) -> float:
    r"""Mean cosine over the :math:`n(n-1)` ordered distinct pairs of ``n`` unit rows.

    :math:`\sum_{i\ne j} x_i\cdot x_j = \lVert\sum_i x_i\rVert^2 - n` since every
    :math:`x_i\cdot x_i = 1`, so no :math:`n^2` matrix is needed.
    """
    if n < 2:
        return float("nan")
    return float((sum_vec @ sum_vec - n) / (n * (n - 1)))


def rmg_from_sums(
    sum_x: np.ndarray, n_x: int, sum_y: np.ndarray, n_y: int, sum_matched_cos: float, n_pairs: int
) -> float:
    """RMG from the sufficient statistics (shared with :class:`RMGAccumulator`)."""
    d_m = (1.0 - sum_matched_cos / n_pairs) / 2.0
    d_i = (1.0 - mean_pairwise_cosine(sum_x, n_x)) / 2.0
    d_t = (1.0 - mean_pairwise_cosine(sum_y, n_y)) / 2.0
    denom = d_m + (d_i + d_t) / 2.0
    return float(d_m / denom) if denom > 0 else float("nan")


def relative_modality_gap(X: Any, Y: Any, text_to_image: Any = None) -> float:
    r"""Relative modality gap (RMG).

    With :math:`\mathrm{dist}(u, v) = (1 - \cos(u, v))/2 \in [0, 1]`:

    * :math:`d_M` = mean distance over matched pairs (each text and its image; with several
      captions per image every caption counts once),
    * :math:`d_I` = mean distance over distinct image pairs, :math:`d_T` over distinct text pairs,

    .. math:: \mathrm{RMG} = \frac{d_M}{d_M + (d_I + d_T)/2}.

    RMG near 0: matched pairs are much closer than unrelated items of one modality; near 1 or
    above 0.5: the gap dominates. The mean pairwise distances come from sums
    (:func:`mean_pairwise_cosine`), so this is :math:`O((n+m)d)`.

    Source: Schrodi, Hoffmann, Argus, Fischer, Brox, "Two Effects, One Trigger: On the Modality
    Gap, Object Bias, and Information Imbalance in Contrastive Vision-Language Models",
    ICLR 2025.

    Parameters
    ----------
    X : array (n, d)
        Image embeddings (rows L2-normalised first).
    Y : array (m, d)
        Text embeddings.
    text_to_image : array (m,) of int, optional
        Image index of each text; row ``i`` <-> row ``i`` when absent (then ``n == m``).

    Returns
    -------
    float
        The RMG (``nan`` when a modality has a single row, since :math:`d_I`/:math:`d_T` are
        undefined).
    """
    X, Y, t2i = as_pairs(X, Y, text_to_image)
    matched = float(np.einsum("ij,ij->", X[t2i], Y))
    return rmg_from_sums(X.sum(0), X.shape[0], Y.sum(0), Y.shape[0], matched, Y.shape[0])
