"""Modality Fréchet distance: the Fréchet (2-Wasserstein) distance between Gaussian fits of the
image and the text embeddings."""

from __future__ import annotations

from typing import Any

import numpy as np

from ._common import unit_rows

__all__ = ["frechet_distance", "frechet_from_moments"]


def _sqrt_psd(A: np.ndarray) -> np.ndarray:
    w, V = np.linalg.eigh((A + A.T) / 2)
    return (V * np.sqrt(np.clip(w, 0, None))) @ V.T


def frechet_from_moments(
    mu_x: np.ndarray, cov_x: np.ndarray, mu_y: np.ndarray, cov_y: np.ndarray, ridge: float = 1e-6
) -> float:
    r"""Fréchet distance between :math:`N(\mu_X, \Sigma_X)` and :math:`N(\mu_Y, \Sigma_Y)`.

    :math:`\mathrm{Tr}\,(\Sigma_X\Sigma_Y)^{1/2}` is computed on the symmetric form
    :math:`\mathrm{Tr}\,(\Sigma_X^{1/2}\Sigma_Y\Sigma_X^{1/2})^{1/2}` (same eigenvalues) with two
    symmetric eigendecompositions in float64, after adding ``ridge * I`` to both covariances
    (rank-deficient covariances: fewer rows than dimensions, or a collapsed modality).
    """
    d = mu_x.shape[0]
    A = np.asarray(cov_x, dtype=np.float64) + ridge * np.eye(d)
    B = np.asarray(cov_y, dtype=np.float64) + ridge * np.eye(d)
    sA = _sqrt_psd(A)
    M = sA @ B @ sA
    tr_sqrt = float(np.sqrt(np.clip(np.linalg.eigvalsh((M + M.T) / 2), 0, None)).sum())
    diff = np.asarray(mu_x, dtype=np.float64) - mu_y
    value = float(diff @ diff + np.trace(A) + np.trace(B) - 2 * tr_sqrt)
    return max(value, 0.0)


def frechet_distance(X: Any, Y: Any, ridge: float = 1e-6) -> float:
    r"""Modality Fréchet distance (the FID formula applied to the two modalities).

    .. math:: \mathrm{FD} = \lVert\mu_X - \mu_Y\rVert^2
              + \mathrm{Tr}\left(\Sigma_X + \Sigma_Y - 2(\Sigma_X\Sigma_Y)^{1/2}\right)

    with means and (``n - 1``-normalised) covariances of the L2-normalised rows, float64, and a
    small ridge (see :func:`frechet_from_moments`). It is the squared 2-Wasserstein distance
    between the Gaussian fits, so it sees a difference in spread as well as the centroid gap.

    Source: Fréchet distance between Gaussians (Dowson & Landau 1982), as used by FID (Heusel et
    al. 2017); applied to the two modalities as a gap measure in "Fill the Gap" (Role et al.
    2025).

    Parameters
    ----------
    X, Y : array (n, d), (m, d)
        Image and text embeddings, at least 2 rows each. No pairing is used.
    ridge : float
        Added to the diagonal of both covariances.

    Returns
    -------
    float
        The distance (>= 0).
    """
    X = unit_rows(X, "image_emb", min_rows=2)
    Y = unit_rows(Y, "text_emb", dim=X.shape[1], min_rows=2)
    return frechet_from_moments(
        X.mean(0), np.cov(X, rowvar=False), Y.mean(0), np.cov(Y, rowvar=False), ridge
    )
