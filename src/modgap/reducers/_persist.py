"""The reducer file format: one ``.safetensors`` file, written whole and checked on reading.

The tensors are the fitted array attributes; the safetensors metadata entry ``"modgap"`` holds a
JSON document with the reducer's registry name, its parameters, its fitted scalars, the library
version and a SHA-256 checksum of the tensor bytes, so a truncated or altered file is refused
with a clear message. A file's fitted values are checked against the reducer's schema
(``fitted_arrays``, ``fitted_scalars``) before they are set. Nothing is ever pickled.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..errors import InputError, ModgapError
from ..files import atomic_path

__all__ = ["FORMAT", "FORMAT_VERSION", "check_saved_state", "fitted_state", "load", "save"]

FORMAT = "modgap.reducer"
FORMAT_VERSION = 1

# dtypes a fitted array may have in a saved file
_SAVE_DTYPES = (np.float32, np.float64, np.int64, np.int32, np.bool_)


def _json_scalar(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return value


def _checksum(arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(name.encode())
        h.update(str(a.dtype).encode())
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def fitted_state(self: Any) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The fitted attributes (names ending in ``_``): arrays and JSON scalars."""
    arrays: dict[str, np.ndarray] = {}
    scalars: dict[str, Any] = {}
    for key, value in vars(self).items():
        if not key.endswith("_") or key.startswith("_"):
            continue
        if isinstance(value, np.ndarray):
            if value.dtype.type not in _SAVE_DTYPES:
                raise TypeError(f"cannot save fitted array {key} of dtype {value.dtype}")
            arrays[key] = np.ascontiguousarray(value)
        else:
            value = _json_scalar(value)
            if value is not None and not isinstance(value, bool | int | float | str):
                raise TypeError(f"cannot save fitted attribute {key} of type {type(value)}")
            scalars[key] = value
    return arrays, scalars


def save(self: Any, path: str | os.PathLike) -> Path:
    """Write the fitted reducer to ``path`` (a ``.safetensors`` file), atomically."""
    from safetensors.numpy import save_file

    self._check_fitted()
    arrays, scalars = fitted_state(self)
    header = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "modgap_version": __version__,
        "reducer": self.name,
        "params": {k: _json_scalar(v) for k, v in self.get_params().items()},
        "fitted": scalars,
        "arrays": {k: [list(v.shape), str(v.dtype)] for k, v in arrays.items()},
        "sha256": _checksum(arrays),
    }
    path = Path(path)
    with atomic_path(path, ".safetensors") as tmp:
        save_file(arrays, str(tmp), metadata={"modgap": json.dumps(header)})
    return path


def load(cls: Any, path: str | os.PathLike, registry: dict, root: type) -> Any:
    """Read a reducer written by :func:`save`; ``cls`` is the class asked for (``root``, the
    base class, accepts any reducer in ``registry``).

    Raises :class:`~modgap.errors.InputError` naming the file when it is missing, is not a
    modgap reducer file, was written by a newer format, names an unknown reducer or one of a
    different class than ``cls``, or fails its checksum (corrupted).
    """
    from safetensors import safe_open

    path = Path(path)
    src = str(path)
    if not path.is_file():
        raise InputError("no such reducer file", src)
    try:
        with safe_open(str(path), framework="numpy") as fh:
            meta = fh.metadata() or {}
            arrays = {k: fh.get_tensor(k) for k in fh.keys()}
    except Exception as e:  # safetensors raises its own error types for damaged files
        raise InputError(
            f"not a readable reducer file (safetensors: {str(e).splitlines()[0][:200]}); "
            "it may be truncated or corrupted - save the reducer again",
            src,
        ) from None
    if "modgap" not in meta:
        raise InputError("not a modgap reducer file (no 'modgap' metadata)", src)
    try:
        header = json.loads(meta["modgap"])
    except json.JSONDecodeError:
        raise InputError("corrupted reducer file (metadata is not valid JSON)", src) from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise InputError("not a modgap reducer file (wrong 'format' entry)", src)
    version = header.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise InputError(
            f"reducer file format version {version!r} is newer than this modgap supports "
            f"({FORMAT_VERSION}); upgrade modgap",
            src,
        )
    name = header.get("reducer")
    if name not in registry:
        raise InputError(f"unknown reducer {name!r} in file (known: {', '.join(registry)})", src)
    klass = registry[name]
    if cls is not root and not issubclass(klass, cls):
        raise InputError(
            f"file holds a '{name}' reducer, not a '{cls.name}' one; "
            "use modgap.reducers.load_reducer to load any reducer",
            src,
        )
    expected = header.get("arrays", {})
    if set(expected) != set(arrays):
        missing = sorted(set(expected) - set(arrays))
        extra = sorted(set(arrays) - set(expected))
        raise InputError(
            f"corrupted reducer file (arrays missing: {missing or 'none'}, "
            f"unexpected: {extra or 'none'})",
            src,
        )
    for key, (shape, dtype) in expected.items():
        if list(arrays[key].shape) != shape or str(arrays[key].dtype) != dtype:
            raise InputError(f"corrupted reducer file (array '{key}' has wrong shape)", src)
    if _checksum(arrays) != header.get("sha256"):
        raise InputError("corrupted reducer file (checksum mismatch: the arrays were altered)", src)
    params = header.get("params", {})
    if not isinstance(params, dict):
        raise InputError("corrupted reducer file ('params' is not a mapping)", src)
    valid = klass._param_names()
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise InputError(
            f"reducer file has parameters {unknown} that '{name}' does not know "
            "(written by another modgap version?)",
            src,
        )
    obj = klass(**params)
    try:
        obj.check_params()
    except ModgapError as e:
        raise InputError(f"invalid reducer file: {e}", src) from None
    fitted = header.get("fitted", {})
    check_saved_state(obj, fitted, arrays, src)
    for key, value in fitted.items():
        setattr(obj, key, value)
    for key, value in arrays.items():
        setattr(obj, key, value)
    obj._after_load()
    return obj


def check_saved_state(self: Any, fitted: Any, arrays: dict[str, np.ndarray], src: str) -> None:
    """The fitted scalars and arrays of a saved file against this reducer's schema
    (:attr:`fitted_arrays`, :attr:`fitted_scalars`): names, types, ranges, shapes, dtypes."""
    if not isinstance(fitted, dict):
        raise InputError("corrupted reducer file ('fitted' is not a mapping)", src)
    schema: dict[str, type] = {
        "n_features_in_": int,
        "n_images_fit_": int,
        "n_texts_fit_": int,
        **self.fitted_scalars,
    }
    if set(fitted) != set(schema):
        raise InputError(
            f"invalid reducer file: fitted values {sorted(fitted)} are not those of a "
            f"'{self.name}' reducer ({sorted(schema)})",
            src,
        )
    for key, tp in schema.items():
        value = fitted[key]
        ok = (
            isinstance(value, int) and not isinstance(value, bool)
            if tp is int
            else isinstance(value, int | float) and not isinstance(value, bool)
        )
        if not ok or (tp is int and value < 0) or (tp is float and not np.isfinite(value)):
            raise InputError(f"invalid reducer file: fitted {key}={value!r}", src)
    if fitted["n_features_in_"] < 1:
        raise InputError("invalid reducer file: fitted n_features_in_ must be >= 1", src)
    if set(arrays) != set(self.fitted_arrays):
        raise InputError(
            f"invalid reducer file: arrays {sorted(arrays)} are not those of a "
            f"'{self.name}' reducer ({sorted(self.fitted_arrays)})",
            src,
        )
    dims = {
        "d": fitted["n_features_in_"],
        "ni": fitted["n_images_fit_"],
        "nt": fitted["n_texts_fit_"],
        "k": getattr(self, "n_components", None),
    }
    for key, spec in self.fitted_arrays.items():
        a = arrays[key]
        want = tuple(dims[s] for s in spec.split(",")) if spec else ()
        if a.shape != want:
            raise InputError(
                f"invalid reducer file: array '{key}' has shape {a.shape}, a '{self.name}' "
                f"reducer fitted on d={dims['d']} needs {want}",
                src,
            )
        # -inf marks "no threshold" (the spectral dense route); NaN is never meant
        if a.dtype.kind not in "fb" or (a.dtype.kind == "f" and np.isnan(a).any()):
            raise InputError(f"invalid reducer file: array '{key}' holds NaN", src)
