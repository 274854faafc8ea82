r"""Relative modality gap (Schrodi et al. 2025), and the value it takes when pairs carry no
information.

Three incompatible formulas circulate under the name "RMG": Schrodi et al.'s cosine form (the
one computed here), a Euclidean :math:`D_\mathrm{pair}/(D_\mathrm{pair}+D_\mathrm{intra})`,
and the centroid distance over the root mean covariance trace. Only the first is ``rmg``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._array import prepare_rows
from ._common import as_pairs

__all__ = [
    "mean_pairwise_cosine",
    "relative_modality_gap",
    "rmg_chance_from_sums",
    "rmg_from_sums",
    "rmg_no_information",
]


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


def rmg_chance_from_sums(sum_x: np.ndarray, n_x: int, sum_y: np.ndarray, n_y: int) -> float:
    r"""The RMG of pairs that carry no information, from the modality sums (see
    :func:`rmg_no_information`): :math:`d_M` replaced by the mean distance over *all*
    image-text pairs, :math:`d_X = (1 - \bar x\cdot\bar y)/2` with :math:`\bar x`,
    :math:`\bar y` the mean unit rows."""
    d_x = (1.0 - float(sum_x @ sum_y) / (n_x * n_y)) / 2.0
    d_i = (1.0 - mean_pairwise_cosine(sum_x, n_x)) / 2.0
    d_t = (1.0 - mean_pairwise_cosine(sum_y, n_y)) / 2.0
    denom = d_x + (d_i + d_t) / 2.0
    return float(d_x / denom) if denom > 0 else float("nan")


def rmg_no_information(X: Any, Y: Any) -> float:
    r"""The value RMG takes when the pairing carries no information.

    If matched pairs are no closer than any image-text pair — the pairing is a random
    permutation, or the encoders are random — the expected matched distance is the mean
    distance over all :math:`n m` image-text pairs (each text's image is then a uniform draw,
    with one or several captions per image):

    .. math:: E[d_M] = d_X = \frac{1}{nm}\sum_{i,j}\frac{1 - x_i\cdot y_j}{2}
              = \frac{1 - \bar x\cdot\bar y}{2},
              \qquad \mathrm{RMG}_0 = \frac{d_X}{d_X + (d_I + d_T)/2}.

    It is **not** a constant 0.5: it is 0.5 only when cross-modal pairs are as far apart as
    pairs within a modality (no gap, no pairing). With a modality gap, :math:`d_X` is larger
    than the within-modality distances and :math:`\mathrm{RMG}_0 \to 1`: randomly initialised
    encoders, whose rows of each modality sit in a narrow cone, give
    :math:`\mathrm{RMG}_0 \approx 1` (0.99996 on one such set) although matched and unmatched
    cosines are equal. RMG below :math:`\mathrm{RMG}_0` means matched pairs are closer than
    chance. (:math:`\mathrm{RMG}_0` is RMG at :math:`E[d_M]`; the RMG of one random pairing
    deviates from it by the spread of :math:`d_M`, :math:`O(1/\sqrt m)`.)

    Parameters
    ----------
    X : array (n, d)
        Image embeddings (rows L2-normalised first).
    Y : array (m, d)
        Text embeddings. No pairing is used.

    Returns
    -------
    float
        :math:`\mathrm{RMG}_0` (``nan`` when a modality has a single row).
    """
    X = prepare_rows(X, "image_emb", unit="exact", dtype=np.float64)
    Y = prepare_rows(Y, "text_emb", dim=X.shape[1], unit="exact", dtype=np.float64)
    return rmg_chance_from_sums(X.sum(0), X.shape[0], Y.sum(0), Y.shape[0])


def relative_modality_gap(X: Any, Y: Any, text_to_image: Any = None) -> float:
    r"""Relative modality gap (RMG).

    With :math:`\mathrm{dist}(u, v) = (1 - \cos(u, v))/2 \in [0, 1]`:

    * :math:`d_M` = mean distance over matched pairs (each text and its image; with several
      captions per image every caption counts once),
    * :math:`d_I` = mean distance over distinct image pairs, :math:`d_T` over distinct text pairs,

    .. math:: \mathrm{RMG} = \frac{d_M}{d_M + (d_I + d_T)/2}.

    This is the cosine form of Schrodi et al.: the mean matched dissimilarity over itself plus
    the mean within-modality dissimilarity (the factor 1/2 of the distance cancels, so it equals
    the same ratio with :math:`1 - \cos`). Not the Euclidean
    :math:`D_\mathrm{pair}/(D_\mathrm{pair}+D_\mathrm{intra})` nor the centroid distance over
    the root mean covariance trace, which also circulate as "RMG".

    RMG near 0: matched pairs are much closer than unrelated items of one modality. When the
    pairs carry no information RMG is **not** 0.5 but :func:`rmg_no_information`
    (:math:`d_M` replaced by the mean over all image-text pairs), which approaches 1 when a
    modality gap separates the two clouds: compare RMG with that value (``rmg_chance`` in
    :func:`modgap.measures.measure_all`), not with 0.5. The mean pairwise distances come from
    sums (:func:`mean_pairwise_cosine`), so this is :math:`O((n+m)d)`.

    Source: Schrodi, Hoffmann, Argus, Fischer, Brox, "Two Effects, One Trigger: On the Modality
    Gap, Object Bias, and Information Imbalance in Contrastive Vision-Language Models",
    ICLR 2025 (the relative modality gap, Sec. 3).

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
