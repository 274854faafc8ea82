"""Mean centering and the centroid gap shift: the two first-moment reducers."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from ..measures.accumulators import Moments
from .base import Reducer, register

__all__ = ["GapShift", "MeanCentering"]


def exact_moments(X: np.ndarray, Y: np.ndarray) -> tuple[dict, dict]:
    """The exact-mean moments of both modalities, as a streamed fit accumulates them: the
    same bits from a set in memory as from its shards, on any route and block size."""
    return tuple(Moments(exact=True).update(A).as_dict() for A in (X, Y))


@register
class MeanCentering(Reducer):
    r"""Subtract each modality's mean, then re-normalise (I0T-post style).

    .. math:: x' = \frac{x - \mu_X}{\lVert x - \mu_X \rVert}, \qquad
              y' = \frac{y - \mu_Y}{\lVert y - \mu_Y \rVert}

    Both clouds then sit around the origin, so their centroids (almost) coincide; the residual
    comes only from the re-normalisation. Reference: An et al., "I0T: Embedding
    Standardization Method Towards Zero Modality Gap" (2024), post-hoc variant.

    Parameters
    ----------
    normalize : bool, default True
        L2-normalise the outputs (the cosine geometry downstream tasks use).

    Attributes
    ----------
    image_mean_, text_mean_ : ndarray (d,)
        Modality means of the fitted (L2-normalised) embeddings.
    """

    name = "center"
    fitted_arrays: ClassVar[dict[str, str]] = {"image_mean_": "d", "text_mean_": "d"}
    moment_fit: ClassVar[dict[str, bool]] = {"covariance": False, "cross": False}

    def __init__(self, normalize: bool = True):
        self.normalize = normalize

    def _fit(self, X, Y, text_to_image):
        self._fit_from_moments(*exact_moments(X, Y), None)

    def _fit_from_moments(self, image, text, pairs):
        self.image_mean_, self.text_mean_ = image["mean"], text["mean"]

    def _transform_images(self, X):
        return self._maybe_normalize(X - self.image_mean_.astype(np.float32))

    def _transform_texts(self, Y):
        return self._maybe_normalize(Y - self.text_mean_.astype(np.float32))


@register
class GapShift(Reducer):
    r"""Shift both modalities towards each other along the centroid gap (Liang et al. 2022).

    With :math:`\Delta = \mu_X - \mu_Y` the centroid gap of the fitted data,

    .. math:: x' = \operatorname{norm}(x - \lambda\Delta/2), \qquad
              y' = \operatorname{norm}(y + \lambda\Delta/2).

    :math:`\lambda = 1` moves both centroids to their midpoint (closes the gap before
    re-normalisation); :math:`\lambda = 0` is the identity; negative values widen the gap.
    Reference: Liang, Zhang, Kwon, Yeung, Zou, "Mind the Gap: Understanding the Modality Gap in
    Multi-modal Contrastive Representation Learning", NeurIPS 2022.

    Parameters
    ----------
    lam : float, default 1.0
        Fraction :math:`\lambda` of the gap to remove.
    normalize : bool, default True
        L2-normalise the outputs.

    Attributes
    ----------
    gap_ : ndarray (d,)
        :math:`\Delta = \mu_X - \mu_Y` on the fitted data.
    """

    name = "shift"
    fitted_arrays: ClassVar[dict[str, str]] = {"gap_": "d"}
    moment_fit: ClassVar[dict[str, bool]] = {"covariance": False, "cross": False}

    def __init__(self, lam: float = 1.0, normalize: bool = True):
        self.lam = lam
        self.normalize = normalize

    def _check_params(self):
        self._check_number("lam", -10.0, 10.0)

    def _fit(self, X, Y, text_to_image):
        self._fit_from_moments(*exact_moments(X, Y), None)

    def _fit_from_moments(self, image, text, pairs):
        self.gap_ = image["mean"] - text["mean"]

    def _transform_images(self, X):
        return self._maybe_normalize(X - (self.lam * self.gap_ / 2).astype(np.float32))

    def _transform_texts(self, Y):
        return self._maybe_normalize(Y + (self.lam * self.gap_ / 2).astype(np.float32))
