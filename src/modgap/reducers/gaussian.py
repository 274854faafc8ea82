"""Linear Gaussian (Bures-Wasserstein) map between the two modalities' moment-matched Gaussians."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from ..measures.accumulators import Moments
from .base import Reducer, register

__all__ = ["GaussianMap", "bures_map", "sym_sqrt"]

DIRECTIONS = ("images->texts", "texts->images", "barycenter")


def sym_sqrt(S: np.ndarray, inverse: bool = False) -> np.ndarray:
    """Square root (or inverse square root) of a symmetric PSD matrix via ``eigh`` (float64).

    Eigenvalues below zero (round-off) are clipped to zero; for the inverse they must be
    positive, which the callers guarantee with a ridge.
    """
    w, V = np.linalg.eigh(S)
    w = np.clip(w, 0.0, None)
    r = 1.0 / np.sqrt(w) if inverse else np.sqrt(w)
    return (V * r) @ V.T


def bures_map(cov_source: np.ndarray, cov_target: np.ndarray) -> np.ndarray:
    r"""The linear part of the optimal transport map between two centred Gaussians.

    .. math:: A = \Sigma_s^{-1/2}\,(\Sigma_s^{1/2}\,\Sigma_t\,\Sigma_s^{1/2})^{1/2}\,
              \Sigma_s^{-1/2}

    :math:`A` is symmetric positive definite and :math:`A\Sigma_s A = \Sigma_t`. Reference:
    Knott & Smith (1984); Peyré & Cuturi, "Computational Optimal Transport" (2019), Remark 2.31.
    ``cov_source`` must be positive definite (add a ridge).
    """
    s_half = sym_sqrt(cov_source)
    s_ihalf = sym_sqrt(cov_source, inverse=True)
    middle = sym_sqrt(s_half @ cov_target @ s_half)
    A = s_ihalf @ middle @ s_ihalf
    return (A + A.T) / 2


def _population_cov(m: dict) -> np.ndarray:
    """The maximum-likelihood covariance (divisor n) of a moments dict."""
    if m.get("cov") is not None:
        return np.asarray(m["cov"], dtype=np.float64)
    return np.asarray(m["scatter"], dtype=np.float64) / m["n"]


@register
class GaussianMap(Reducer):
    r"""Bures-Wasserstein map between Gaussians fitted to each modality.

    Each modality is summarised by its mean and covariance, accumulated in one streaming pass
    (batches of ``batch_size`` rows, the mergeable
    :class:`~modgap.measures.accumulators.Moments`), so the reducer also fits on sharded data
    via :meth:`fit_from_moments`. With
    :math:`A` the map of :func:`bures_map` from the image Gaussian to the text one,

    - ``images->texts``: :math:`x' = \mu_T + A(x - \mu_I)`, texts unchanged;
    - ``texts->images``: :math:`y' = \mu_I + A^{-1}(y - \mu_T)`, images unchanged;
    - ``barycenter``: both go to the Wasserstein barycenter (the McCann midpoint):
      :math:`x' = \bar\mu + \tfrac12(I + A)(x - \mu_I)`,
      :math:`y' = \bar\mu + \tfrac12(I + A^{-1})(y - \mu_T)`, :math:`\bar\mu = (\mu_I+\mu_T)/2`.

    Covariances get a ridge :math:`\rho\,\operatorname{tr}(\Sigma)/d\,I` before the matrix
    roots: CLIP embeddings are nearly low-rank, and without it :math:`\Sigma^{-1/2}` would blow
    up directions unseen in the fitted data. Computed in float64.

    Parameters
    ----------
    direction : {"images->texts", "texts->images", "barycenter"}, default "images->texts"
    ridge : float, default 0.1
        Relative ridge :math:`\rho`.
    normalize : bool, default True
        L2-normalise the outputs.
    batch_size : int, default 65536
        Rows per batch of the moment pass.

    Attributes
    ----------
    image_mean_, text_mean_ : ndarray (d,)
    image_matrix_, text_matrix_ : ndarray (d, d)
        Linear parts applied to centred images / texts (identity for the unmoved modality).
    image_offset_, text_offset_ : ndarray (d,)
        Where the mapped means land.
    """

    name = "gaussian"
    moment_fit: ClassVar[dict[str, bool]] = {"covariance": True, "cross": False}
    fitted_arrays: ClassVar[dict[str, str]] = {
        "image_mean_": "d",
        "text_mean_": "d",
        "image_matrix_": "d,d",
        "text_matrix_": "d,d",
        "image_offset_": "d",
        "text_offset_": "d",
    }

    def __init__(
        self,
        direction: str = "images->texts",
        ridge: float = 0.1,
        normalize: bool = True,
        batch_size: int = 65536,
    ):
        self.direction = direction
        self.ridge = ridge
        self.normalize = normalize
        self.batch_size = batch_size

    def _check_params(self):
        self._check_choice("direction", DIRECTIONS)
        self._check_number("ridge", 0.0, 1e3)
        self._check_number("batch_size", 1, None, integer=True)

    def _fit(self, X, Y, text_to_image):
        acc_i, acc_t = Moments(covariance=True, exact=True), Moments(covariance=True, exact=True)
        for start in range(0, X.shape[0], self.batch_size):
            acc_i.update(X[start : start + self.batch_size].astype(np.float64))
        for start in range(0, Y.shape[0], self.batch_size):
            acc_t.update(Y[start : start + self.batch_size].astype(np.float64))
        self._fit_from_moments(acc_i.as_dict(), acc_t.as_dict(), None)

    def _fit_from_moments(self, image, text, pairs):
        self._fit_moments(
            {"mean": image["mean"], "cov": _population_cov(image)},
            {"mean": text["mean"], "cov": _population_cov(text)},
        )

    def _ridged(self, cov: np.ndarray) -> np.ndarray:
        d = cov.shape[0]
        return cov + self.ridge * max(np.trace(cov) / d, 1e-12) * np.eye(d)

    def _fit_moments(self, mi: dict, mt: dict) -> None:
        mu_i, mu_t = np.asarray(mi["mean"], np.float64), np.asarray(mt["mean"], np.float64)
        cov_i = self._ridged(np.asarray(mi["cov"], np.float64))
        cov_t = self._ridged(np.asarray(mt["cov"], np.float64))
        d = mu_i.shape[0]
        eye = np.eye(d)
        self.image_mean_, self.text_mean_ = mu_i, mu_t
        if self.direction == "images->texts":
            self.image_matrix_, self.image_offset_ = bures_map(cov_i, cov_t), mu_t
            self.text_matrix_, self.text_offset_ = eye, mu_t
        elif self.direction == "texts->images":
            self.image_matrix_, self.image_offset_ = eye, mu_i
            self.text_matrix_, self.text_offset_ = bures_map(cov_t, cov_i), mu_i
        else:
            mid = (mu_i + mu_t) / 2
            self.image_matrix_ = (eye + bures_map(cov_i, cov_t)) / 2
            self.text_matrix_ = (eye + bures_map(cov_t, cov_i)) / 2
            self.image_offset_ = self.text_offset_ = mid

    def _apply(self, Z, mean, matrix, offset):
        out = (Z.astype(np.float64) - mean) @ matrix.T + offset
        return self._maybe_normalize(out.astype(np.float32))

    def _transform_images(self, X):
        return self._apply(X, self.image_mean_, self.image_matrix_, self.image_offset_)

    def _transform_texts(self, Y):
        return self._apply(Y, self.text_mean_, self.text_matrix_, self.text_offset_)
