"""The reducer interface shared by every post-hoc gap reducer, and its file format.

A reducer follows scikit-learn conventions: ``__init__`` only stores parameters, ``fit`` learns
fitted attributes (names ending in ``_``) and returns ``self``, ``transform_images`` /
``transform_texts`` map embeddings into the reduced space.

File format (``save`` / ``load``): :mod:`modgap.reducers._persist`.
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from sklearn.base import BaseEstimator

from .._array import l2_normalize, prepare_rows
from ..compute import Compute, resolve
from ..embeddings import EmbeddingSet
from ..errors import InputError, ModgapError, NotFittedError
from ..measures.accumulators import Moments
from . import _persist
from .transformer import ModalityTransformer

__all__ = ["FORMAT", "FORMAT_VERSION", "REDUCERS", "Reducer", "register"]

FORMAT, FORMAT_VERSION = _persist.FORMAT, _persist.FORMAT_VERSION


#: every registered reducer class by name (see :func:`register`)
REDUCERS: dict[str, type[Reducer]] = {}


def register(cls: type[Reducer]) -> type[Reducer]:
    """Class decorator: add a reducer to :data:`REDUCERS` under its ``name``."""
    if cls.name in REDUCERS and REDUCERS[cls.name] is not cls:
        raise TypeError(f"reducer name {cls.name!r} is taken by {REDUCERS[cls.name]}")
    REDUCERS[cls.name] = cls
    return cls


def _moment_dict(m: Any, what: str, need: dict[str, bool]) -> dict:
    """``{"n", "mean", "scatter" or "cov"}`` of a :class:`Moments` or such a dict (``count``
    is taken for ``n``), checked."""
    kind = "Moments(covariance=True)" if need.get("covariance") else "Moments()"
    if isinstance(m, Moments):
        m = m.as_dict()
    if isinstance(m, dict) and "n" not in m and "count" in m:
        m = {**m, "n": m["count"]}
    if not isinstance(m, dict) or not {"n", "mean"} <= set(m):
        raise ModgapError(f"{what} moments must be a {kind} or a dict with 'n' and 'mean'")
    if m["mean"] is None or int(m["n"]) < 1:
        raise ModgapError(f"{what}: need {kind} updated with some rows")
    if need.get("covariance") and m.get("scatter") is None and m.get("cov") is None:
        raise ModgapError(f"{what}: need {kind} updated with some rows")
    return {**m, "mean": np.asarray(m["mean"], dtype=np.float64)}


class Reducer(BaseEstimator):
    """Base class of the post-hoc modality-gap reducers.

    A scikit-learn estimator (``get_params``, ``set_params``, ``clone``, ``check_is_fitted``).
    Subclasses set ``name`` (the registry name, under which :func:`register` files them),
    the class flags below, and implement
    ``_fit(X, Y, text_to_image)``, ``_transform_images(X)`` and ``_transform_texts(Y)`` on
    validated float32 arrays. Parameters are the arguments of ``__init__``; each is stored
    unchanged on an attribute of the same name (scikit-learn's rule), and checked in
    ``_check_params`` when ``fit`` is called.

    Attributes
    ----------
    supports_out_of_sample : bool
        Whether ``transform_*`` accepts embeddings that were not seen by ``fit``.
    requires_pairs : bool
        Whether ``fit`` needs matched image-text pairs (``text_to_image`` or equal counts).
    n_features_in_ : int
        Width of the embeddings seen in ``fit``; ``transform_*`` checks it.
    """

    name: ClassVar[str] = "reducer"
    supports_out_of_sample: ClassVar[bool] = True
    requires_pairs: ClassVar[bool] = False
    #: fitted arrays and their shapes, in the letters ``d`` (width), ``ni`` / ``nt`` (fitted
    #: images / texts) and ``k`` (the ``n_components`` parameter): what a saved file must hold
    fitted_arrays: ClassVar[dict[str, str]] = {}
    #: fitted scalars beyond ``n_features_in_``, ``n_images_fit_``, ``n_texts_fit_``
    fitted_scalars: ClassVar[dict[str, type]] = {}
    #: what one pass of moments must hold for :meth:`fit_from_moments` — ``covariance``
    #: (scatter matrices), ``cross`` (the cross moment of matched pairs) — or ``None`` when the
    #: reducer needs the rows themselves (a streamed fit then uses a stated sample)
    moment_fit: ClassVar[dict[str, bool] | None] = None

    def __sklearn_is_fitted__(self) -> bool:
        return self.is_fitted()

    @property
    def compute(self) -> Compute:
        """The compute context of this reducer's kernels: the one given to ``fit`` (or the
        current one), with this reducer's ``device`` parameter when it has one."""
        return resolve(getattr(self, "_compute", None), device=getattr(self, "device", None))

    # -- parameters (scikit-learn style) ----------------------------------------------------
    @classmethod
    def _param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return [
            p.name
            for p in sig.parameters.values()
            if p.name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
        ]

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """Parameters of this reducer as a dict (``deep`` is accepted for scikit-learn)."""
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params: Any) -> Reducer:
        """Set parameters by name; unknown names raise a :class:`ModgapError`. Returns self."""
        valid = self._param_names()
        for key, value in params.items():
            if key not in valid:
                raise ModgapError(
                    f"reducer '{self.name}' has no parameter '{key}' "
                    f"(parameters: {', '.join(valid)})"
                )
            setattr(self, key, value)
        return self

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    def _check_params(self) -> None:
        """Validate parameter values; subclasses extend it. Called at the start of ``fit``."""

    def _check_param_types(self) -> None:
        """Each parameter has the type its ``__init__`` annotation names (``bool`` is not a
        number, a number not a ``bool``): so a value read back from a file means what it says."""
        import typing

        hints = typing.get_type_hints(type(self).__init__)
        for name in self._param_names():
            value = getattr(self, name)
            allowed = typing.get_args(hints.get(name)) or (hints.get(name),)
            if value is None and type(None) in allowed:
                continue
            ok = False
            for tp in allowed:
                if tp is bool:
                    ok = ok or isinstance(value, bool | np.bool_)
                elif tp is int:
                    ok = ok or (isinstance(value, int | np.integer) and not isinstance(value, bool))
                elif tp is float:
                    ok = ok or (
                        isinstance(value, int | float | np.integer | np.floating)
                        and not isinstance(value, bool)
                    )
                elif tp is str:
                    ok = ok or isinstance(value, str)
                elif tp is not None and tp is not type(None):
                    ok = True  # a type this check does not know: left to _check_params
            if not ok:
                words = {
                    bool: "true or false",
                    int: "an integer",
                    float: "a number",
                    str: "a string",
                }
                names = " or ".join(
                    "None" if t is type(None) else words.get(t, getattr(t, "__name__", str(t)))
                    for t in allowed
                )
                raise self._param_error(name, value, f"expected {names}")

    def _param_error(self, name: str, value: Any, expected: str) -> ModgapError:
        return ModgapError(f"reducer '{self.name}': parameter {name}={value!r} ({expected})")

    def _check_choice(self, name: str, choices: tuple[str, ...]) -> None:
        value = getattr(self, name)
        if value not in choices:
            raise self._param_error(name, value, f"choose one of: {', '.join(choices)}")

    def _check_number(
        self, name: str, low: float | None = None, high: float | None = None, *, integer=False
    ) -> None:
        value = getattr(self, name)
        kind = (int, np.integer) if integer else (int, float, np.integer, np.floating)
        if isinstance(value, bool) or not isinstance(value, kind):
            raise self._param_error(name, value, "an integer" if integer else "a number")
        if (low is not None and value < low) or (high is not None and value > high):
            lo = "-inf" if low is None else low
            hi = "inf" if high is None else high
            raise self._param_error(name, value, f"must be in [{lo}, {hi}]")

    # -- fit / transform ----------------------------------------------------------------------
    def _validate_fit(
        self, image_emb: Any, text_emb: Any, text_to_image: Any
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        if isinstance(image_emb, EmbeddingSet):
            if text_emb is not None:
                raise ModgapError("give either an EmbeddingSet or (image_emb, text_emb), not both")
            emb = image_emb
        else:
            if text_emb is None:
                raise ModgapError(f"reducer '{self.name}': fit needs image_emb and text_emb")
            # EmbeddingSet holds the one validation of shapes, widths, NaN and pairing
            emb = EmbeddingSet(image_emb, text_emb, text_to_image=text_to_image)
        t2i = emb.text_to_image
        if self.requires_pairs and t2i is None:
            raise InputError(
                f"reducer '{self.name}' needs image-text pairs: give text_to_image "
                f"(one image index per text) or equal numbers of images and texts "
                f"(got {emb.n_images} images, {emb.n_texts} texts)",
                emb.source,
            )
        return emb.image_emb, emb.text_emb, t2i

    def fit(
        self,
        image_emb: Any,
        text_emb: Any = None,
        text_to_image: Any = None,
        *,
        compute: Compute | None = None,
    ) -> Reducer:
        """Fit the reducer.

        Parameters
        ----------
        image_emb : array (n_i, d) or EmbeddingSet
            Image embeddings (or a whole :class:`~modgap.embeddings.EmbeddingSet`, in which
            case ``text_emb`` and ``text_to_image`` are taken from it).
        text_emb : array (n_t, d)
            Text embeddings of the same width.
        text_to_image : array (n_t,) of int, optional
            Image index of each text; row ``i`` <-> row ``i`` when absent and counts are equal.
        compute : Compute, optional
            Device and memory budget of the fit and of later transforms (default: the current
            context when they run; the ``device`` parameter, where a reducer has one, wins).

        Returns
        -------
        self
        """
        self._fit_checked(image_emb, text_emb, text_to_image, compute)
        return self

    def fit_transform(
        self,
        image_emb: Any,
        text_emb: Any = None,
        text_to_image: Any = None,
        *,
        compute: Compute | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Fit, then return ``(transformed images, transformed texts)`` of the fitted data."""
        X, Y = self._fit_checked(image_emb, text_emb, text_to_image, compute)
        return self._fitted_outputs(X, Y)

    def fit_from_moments(
        self,
        image: Any,
        text: Any,
        pairs: dict | None = None,
        *,
        compute: Compute | None = None,
    ) -> Reducer:
        """Fit from moments accumulated elsewhere (shard by shard, on Dask): the route of
        reducers whose :attr:`moment_fit` is set.

        Parameters
        ----------
        image, text : Moments or dict
            Per modality :class:`~modgap.measures.accumulators.Moments` (or its
            ``{"n", "mean", "scatter"}`` dict) of the rows the in-memory fit would see; the
            in-memory ``fit`` of such a reducer goes through the same method, so both routes
            share the arithmetic (means exact, see ``Moments(exact=True)``).
        pairs : dict, optional
            ``{"n", "cross"}``: count and :math:`\\sum x_{\\pi(j)}^\\top y_j` of the matched
            pairs, when :attr:`moment_fit` asks for ``cross``.
        """
        if self.moment_fit is None:
            raise ModgapError(
                f"reducer '{self.name}' needs the rows themselves, not moments; fit it on "
                "a set (or a sample of one)"
            )
        self._compute = compute
        self.check_params()
        image = _moment_dict(image, "images", self.moment_fit)
        text = _moment_dict(text, "texts", self.moment_fit)
        if image["mean"].shape != text["mean"].shape:
            raise ModgapError(
                f"image moments are {image['mean'].shape[0]}-d but text moments are "
                f"{text['mean'].shape[0]}-d"
            )
        if self.moment_fit.get("cross") and (pairs is None or pairs.get("cross") is None):
            raise ModgapError(f"reducer '{self.name}' needs the cross moment of matched pairs")
        self._fit_from_moments(image, text, pairs)
        self.n_features_in_ = int(image["mean"].shape[0])
        self.n_images_fit_ = int(image["n"])
        self.n_texts_fit_ = int(text["n"])
        return self

    def _fit_from_moments(self, image: dict, text: dict, pairs: dict | None) -> None:
        raise NotImplementedError

    def check_params(self) -> Reducer:
        """Check the parameters' types and values (a one-line :class:`ModgapError`); every
        fit route calls it first, so bad values fail before any data is read."""
        self._check_param_types()
        self._check_params()
        return self

    def _fit_checked(
        self, image_emb: Any, text_emb: Any, text_to_image: Any, compute: Compute | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Validate parameters and data, fit, record the fitted shapes; return the validated
        ``(X, Y)`` so ``fit_transform`` can reuse them."""
        self._compute = compute
        self.check_params()
        X, Y, t2i = self._validate_fit(image_emb, text_emb, text_to_image)
        self._fit(X, Y, t2i)
        self.n_features_in_ = int(X.shape[1])
        self.n_images_fit_ = int(X.shape[0])
        self.n_texts_fit_ = int(Y.shape[0])
        return X, Y

    def transform_set(self, emb: Any) -> Any:
        """Transform both modalities of an :class:`~modgap.embeddings.EmbeddingSet`; pairing
        and labels are kept, and class prompts (texts) go through ``transform_texts``."""
        self._check_fitted()
        if emb.dim != self.n_features_in_:
            raise InputError(
                f"the embeddings have {emb.dim} dimensions but reducer '{self.name}' was "
                f"fitted on {self.n_features_in_}-dimensional embeddings",
                emb.source,
            )
        X = self.transform_images(emb.image_emb)
        Y = self.transform_texts(emb.text_emb)
        cte = None
        if emb.class_text_emb is not None:
            c = emb.class_text_emb
            flat = self.transform_texts(c.reshape(-1, c.shape[-1]))
            cte = flat.reshape(*c.shape[:-1], flat.shape[-1])
        return emb.with_embeddings(X, Y, class_text_emb=cte)

    def _fitted_outputs(self, X: np.ndarray, Y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self._transform_images(X), self._transform_texts(Y)

    def as_transformer(self, modality: str = "image") -> Any:
        """This reducer as a scikit-learn transformer of one modality (``"image"`` or
        ``"text"``), for a ``Pipeline``: a :class:`~modgap.reducers.transformer.
        ModalityTransformer` that uses this reducer as it is when fitted, or fits a clone on
        the pairs its ``fit`` is given."""
        return ModalityTransformer(self, modality)

    def is_fitted(self) -> bool:
        return hasattr(self, "n_features_in_")

    def _check_fitted(self) -> None:
        if not self.is_fitted():
            raise NotFittedError(
                f"reducer '{self.name}' is not fitted yet: call fit(image_emb, text_emb) first "
                "(or load a saved reducer)"
            )

    def _validate_transform(self, x: Any, name: str) -> np.ndarray:
        self._check_fitted()
        arr = prepare_rows(x, name, None, min_rows=0, notice_divided=True)
        if arr.shape[1] != self.n_features_in_:
            raise InputError(
                f"'{name}' has {arr.shape[1]} dimensions but reducer '{self.name}' was fitted "
                f"on {self.n_features_in_}-dimensional embeddings"
            )
        return arr

    def transform_images(self, image_emb: Any) -> np.ndarray:
        """Map image embeddings (n, d) into the reduced space; returns float32 numpy."""
        X = self._validate_transform(image_emb, "image_emb")
        return np.ascontiguousarray(self._transform_images(X), dtype=np.float32)

    def transform_texts(self, text_emb: Any) -> np.ndarray:
        """Map text embeddings (n, d) into the reduced space; returns float32 numpy."""
        Y = self._validate_transform(text_emb, "text_emb")
        return np.ascontiguousarray(self._transform_texts(Y), dtype=np.float32)

    def _maybe_normalize(self, z: np.ndarray) -> np.ndarray:
        return l2_normalize(z) if getattr(self, "normalize", False) else z

    # subclasses implement these on validated float32 arrays
    def _fit(self, X: np.ndarray, Y: np.ndarray, text_to_image: np.ndarray | None) -> None:
        raise NotImplementedError

    def _transform_images(self, X: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _transform_texts(self, Y: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    # -- persistence (the file format lives in _persist) --------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write the fitted reducer to ``path`` (a ``.safetensors`` file), atomically."""
        return _persist.save(self, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Reducer:
        """Read a reducer written by :meth:`save`.

        Raises :class:`~modgap.errors.InputError` naming the file when it is missing, is not a
        modgap reducer file, was written by a newer format, names an unknown reducer or one of a
        different class than ``cls``, or fails its checksum or its fitted-value schema.
        """
        return _persist.load(cls, path, REDUCERS, Reducer)

    def _after_load(self) -> None:
        """Hook for reducers that rebuild derived (unsaved) state after ``load``."""
