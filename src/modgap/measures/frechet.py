"""Modality Fréchet distance: the Fréchet (2-Wasserstein) distance between Gaussian fits of the
image and the text embeddings, and its two terms."""

from __future__ import annotations

from typing import Any

import numpy as np

from .._array import prepare_rows
from .moments import moments_of_unit_rows

__all__ = ["frechet_distance", "frechet_from_moments", "frechet_terms"]


def _sqrt_psd(A: np.ndarray) -> np.ndarray:
    w, V = np.linalg.eigh((A + A.T) / 2)
    return (V * np.sqrt(np.clip(w, 0, None))) @ V.T


def frechet_terms(
    mu_x: np.ndarray,
    cov_x: np.ndarray,
    mu_y: np.ndarray,
    cov_y: np.ndarray,
    ridge: float = 0.0,
) -> dict[str, float]:
    r"""The two terms of the Fréchet distance between :math:`N(\mu_X, \Sigma_X)` and
    :math:`N(\mu_Y, \Sigma_Y)`.

    * ``centroid``: :math:`\lVert\mu_X - \mu_Y\rVert^2` — the squared centroid gap;
    * ``covariance``: :math:`\mathrm{Tr}(\Sigma_X + \Sigma_Y - 2(\Sigma_X\Sigma_Y)^{1/2})` — how
      differently the two clouds spread, the distribution term that recent work finds more
      predictive of cross-modal quality than the centroid gap.

    :math:`\mathrm{Tr}(\Sigma_X\Sigma_Y)^{1/2}` is computed on the symmetric form
    :math:`\mathrm{Tr}(\Sigma_X^{1/2}\Sigma_Y\Sigma_X^{1/2})^{1/2}` (same eigenvalues) with two
    symmetric eigendecompositions in float64 whose round-off negatives are clipped to 0, so it
    is exact for rank-deficient covariances too (fewer rows than dimensions, a collapsed
    modality) without the bias of a ridge (a ridge :math:`\rho` shifts each dimension that one
    modality spans and the other does not by about :math:`2\sqrt\rho`). ``ridge`` (default 0,
    which is exact) adds :math:`\rho I` to both covariances, for comparison with tools that do.
    """
    # one dimension: np.cov gives a 0-d array, the 1 x 1 matrix it stands for
    A = np.atleast_2d(np.asarray(cov_x, dtype=np.float64))
    B = np.atleast_2d(np.asarray(cov_y, dtype=np.float64))
    if ridge:
        A, B = A + ridge * np.eye(A.shape[0]), B + ridge * np.eye(B.shape[0])
    sA = _sqrt_psd(A)
    M = sA @ B @ sA
    tr_sqrt = float(np.sqrt(np.clip(np.linalg.eigvalsh((M + M.T) / 2), 0, None)).sum())
    diff = np.asarray(mu_x, dtype=np.float64) - np.asarray(mu_y, dtype=np.float64)
    centroid = float(diff @ diff)
    covariance = max(float(np.trace(A) + np.trace(B) - 2 * tr_sqrt), 0.0)
    return {"centroid": centroid, "covariance": covariance}


def frechet_from_moments(
    mu_x: np.ndarray, cov_x: np.ndarray, mu_y: np.ndarray, cov_y: np.ndarray, ridge: float = 0.0
) -> float:
    r"""Fréchet distance between :math:`N(\mu_X, \Sigma_X)` and :math:`N(\mu_Y, \Sigma_Y)`:
    the sum of :func:`frechet_terms` (with the same ``ridge``)."""
    t = frechet_terms(mu_x, cov_x, mu_y, cov_y, ridge)
    return t["centroid"] + t["covariance"]


def frechet_distance(X: Any, Y: Any, ridge: float = 0.0, terms: bool = False) -> Any:
    r"""Modality Fréchet distance (the FID formula applied to the two modalities).

    .. math:: \mathrm{FD} = \lVert\mu_X - \mu_Y\rVert^2
              + \mathrm{Tr}\left(\Sigma_X + \Sigma_Y - 2(\Sigma_X\Sigma_Y)^{1/2}\right)

    with means and (``n - 1``-normalised) covariances of the L2-normalised rows, without a
    ridge (see :func:`frechet_terms`); the means are float64, the covariances come from the
    float32 scatter of :mod:`modgap.measures.moments` (its error bound is stated there). It
    is the squared 2-Wasserstein distance between the Gaussian fits, so it sees a difference
    in spread as well as the centroid gap; 0 for two identical clouds (the ideal), growing
    with either term.

    Source: Fréchet distance between Gaussians (Dowson & Landau 1982), as used by FID (Heusel et
    al. 2017); applied to the two modalities as a gap measure in "Fill the Gap" (Role et al.
    2025).

    Parameters
    ----------
    X, Y : array (n, d), (m, d)
        Image and text embeddings, at least 2 rows each. No pairing is used.
    ridge : float
        Added to the diagonal of both covariances (default 0: exact).
    terms : bool
        Return ``{"frechet_distance", "centroid", "covariance"}`` instead of the distance.

    Returns
    -------
    float or dict
        The distance (>= 0), or it with its two terms.
    """
    X = prepare_rows(X, "image_emb", min_rows=2, unit="exact", dtype=np.float64)
    Y = prepare_rows(Y, "text_emb", dim=X.shape[1], min_rows=2, unit="exact", dtype=np.float64)
    # the one moment kernel of every route (measures.moments: float32 scatter, its bound)
    mx, my = moments_of_unit_rows(X, covariance=True), moments_of_unit_rows(Y, covariance=True)
    t = frechet_terms(mx.mean, mx.cov(), my.mean, my.cov(), ridge)
    value = t["centroid"] + t["covariance"]
    return {"frechet_distance": value, **t} if terms else value
