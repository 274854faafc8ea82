"""A reducer as a scikit-learn transformer of one modality, for a ``Pipeline``.

A reducer maps two modalities and is fitted on pairs, so it is not itself a transformer
(``fit(X, y)`` / ``transform(X)``). :class:`ModalityTransformer` is the one-modality view:

>>> reducer = modgap.get_reducer("center").fit(images, texts)
>>> pipe = Pipeline([("gap", reducer.as_transformer("image")), ("clf", LogisticRegression())])
>>> pipe.fit(train_images, labels)                      # the fitted reducer is used as it is
>>> Pipeline([("gap", ModalityTransformer(get_reducer("center"), "image")), ...]).fit(
...     train_images, labels, gap__paired=train_texts)  # or fitted on pairs in the pipeline
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin, clone

from ..errors import ModgapError, NotFittedError

__all__ = ["MODALITIES", "ModalityTransformer"]

MODALITIES = ("image", "text")


class ModalityTransformer(TransformerMixin, BaseEstimator):
    """One modality of a gap reducer as a scikit-learn transformer.

    Parameters
    ----------
    reducer : Reducer
        A modgap reducer. Fitted: ``fit`` keeps it as it is (a frozen map, as scikit-learn's
        ``FrozenEstimator``; cloning the transformer keeps the fitted reducer). Not fitted:
        ``fit`` fits a clone of it on the pairs it is given.
    modality : {"image", "text"}
        Which embeddings ``transform`` maps (``transform_images`` or ``transform_texts``).

    Attributes
    ----------
    reducer_ : Reducer
        The fitted reducer ``transform`` uses.
    n_features_in_ : int
        Width of the embeddings it maps.
    """

    def __init__(self, reducer: Any, modality: str = "image"):
        self.reducer = reducer
        self.modality = modality

    def __sklearn_clone__(self) -> ModalityTransformer:
        # a fitted reducer is the point of a prefit transformer: a clone (Pipeline, cross
        # validation, check_estimator) keeps it instead of an unfitted copy
        if _is_fitted(self.reducer):
            return type(self)(self.reducer, self.modality)
        return type(self)(clone(self.reducer), self.modality)

    def fit(
        self, X: Any, y: Any = None, paired: Any = None, text_to_image: Any = None
    ) -> ModalityTransformer:
        """Use the fitted reducer, or fit a clone of it on ``X`` and ``paired``.

        Parameters
        ----------
        X : array (n, d)
            Embeddings of this transformer's modality.
        y : ignored
            Accepted so a ``Pipeline`` can pass its labels through.
        paired : array (m, d), optional
            The other modality, paired with ``X`` (row ``i`` <-> row ``i``, or through
            ``text_to_image``); in a ``Pipeline``, ``fit(..., STEP__paired=...)``. When given,
            the reducer is fitted on the pairs (a clone: the ``reducer`` parameter is not
            changed); when absent, ``reducer`` must be fitted already.
        text_to_image : array of int, optional
            Image index of each text, for several captions per image.
        """
        if self.modality not in MODALITIES:
            raise ModgapError(
                f"modality must be one of {', '.join(MODALITIES)}, got {self.modality!r}"
            )
        if paired is not None:
            images, texts = (X, paired) if self.modality == "image" else (paired, X)
            self.reducer_ = clone(self.reducer).fit(images, texts, text_to_image)
        elif _is_fitted(self.reducer):
            self.reducer_ = self.reducer
        else:
            raise NotFittedError(
                f"reducer '{getattr(self.reducer, 'name', self.reducer)}' is not fitted yet: "
                "fit it first, or give the other modality (fit(X, paired=...); in a Pipeline "
                "fit(X, y, STEP__paired=...))"
            )
        self.n_features_in_ = int(self.reducer_.n_features_in_)
        self._checked(X)
        return self

    def _checked(self, X: Any) -> np.ndarray:
        """``X`` as a finite 2-D float array of the reducer's width, refused with
        scikit-learn's own messages (sparse, complex, empty, 1-D, NaN)."""
        from sklearn.utils.validation import check_array

        X = check_array(X, dtype=(np.float32, np.float64))
        if X.shape[1] != self.n_features_in_:
            raise ModgapError(
                f"X has {X.shape[1]} features, but {type(self).__name__} is expecting "
                f"{self.n_features_in_} features as input (the width the reducer was fitted on)"
            )
        return X

    def transform(self, X: Any) -> np.ndarray:
        """Map ``X`` (embeddings of this modality) with the fitted reducer; float32."""
        if not hasattr(self, "reducer_"):
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet: call fit first")
        X = self._checked(X)
        if self.modality == "image":
            return self.reducer_.transform_images(X)
        return self.reducer_.transform_texts(X)


def _is_fitted(reducer: Any) -> bool:
    return bool(getattr(reducer, "is_fitted", lambda: False)())
