"""Orthogonal Procrustes alignment of matched image-text pairs."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from .base import Reducer, register

__all__ = ["ProcrustesAlignment", "orthogonal_procrustes"]

DIRECTIONS = ("images->texts", "texts->images")


def orthogonal_procrustes(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    r"""The rotation :math:`R = \arg\min_{R^\top R = I} \lVert A R - B \rVert_F`.

    With :math:`A^\top B = U \Sigma V^\top`, :math:`R = U V^\top` (Schönemann 1966). Computed in
    float64.
    """
    M = A.astype(np.float64).T @ B.astype(np.float64)
    U, _, Vt = np.linalg.svd(M)
    return U @ Vt


@register
class ProcrustesAlignment(Reducer):
    r"""Rotate one modality onto the other using matched pairs (orthogonal Procrustes).

    Fits :math:`R = \arg\min_{R^\top R = I} \sum_{(i,j)\ \mathrm{matched}} \lVert x_i R - y_j
    \rVert^2` over all (image, caption) pairs given by ``text_to_image``; with several captions
    per image each pair counts once. ``images->texts`` maps :math:`x \mapsto xR` (texts
    unchanged); ``texts->images`` maps :math:`y \mapsto yR^\top`. A rotation keeps norms, so
    unit inputs stay unit; it removes the gap only as far as a rotation can.
    Reference: Schönemann, "A generalized solution of the orthogonal Procrustes problem",
    Psychometrika 1966.

    Parameters
    ----------
    direction : {"images->texts", "texts->images"}, default "images->texts"
    normalize : bool, default True
        L2-normalise the outputs (only removes round-off).

    Attributes
    ----------
    rotation_ : ndarray (d, d)
        :math:`R`, orthogonal.
    """

    name = "procrustes"
    fitted_arrays: ClassVar[dict[str, str]] = {"rotation_": "d,d"}
    requires_pairs = True

    def __init__(self, direction: str = "images->texts", normalize: bool = True):
        self.direction = direction
        self.normalize = normalize

    def _check_params(self):
        self._check_choice("direction", DIRECTIONS)

    def _fit(self, X, Y, text_to_image):
        self.rotation_ = orthogonal_procrustes(X[text_to_image], Y)

    def _transform_images(self, X):
        if self.direction != "images->texts":
            return self._maybe_normalize(X)
        return self._maybe_normalize((X.astype(np.float64) @ self.rotation_).astype(np.float32))

    def _transform_texts(self, Y):
        if self.direction != "texts->images":
            return self._maybe_normalize(Y)
        return self._maybe_normalize((Y.astype(np.float64) @ self.rotation_.T).astype(np.float32))
