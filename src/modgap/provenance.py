"""What produced a result: library versions, platform, time, plus the caller's own fields.

Every results JSON written by modgap embeds :func:`provenance`; :func:`jsonable` makes a result
dict safe for ``json.dump`` (non-finite floats become the strings ``"inf"``, ``"-inf"``,
``"nan"``, numpy scalars and arrays become Python numbers and lists).
"""

from __future__ import annotations

import datetime as _dt
import math
import platform as _platform
import sys
from importlib import metadata
from typing import Any

from . import __version__

__all__ = ["jsonable", "library_versions", "provenance"]

# distribution names as pip knows them, keyed by the name we report
_LIBRARIES = {
    "modgap": "modgap",
    "numpy": "numpy",
    "torch": "torch",
    "scipy": "scipy",
    "sklearn": "scikit-learn",
    "POT": "pot",
}


def library_versions() -> dict[str, str | None]:
    """Installed versions of modgap and the numerical libraries (``None`` when absent).

    Read from package metadata so that nothing heavy (torch) is imported just to record it.
    """
    out: dict[str, str | None] = {}
    for key, dist in _LIBRARIES.items():
        try:
            out[key] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[key] = None
    if out["modgap"] is None:
        out["modgap"] = __version__
    return out


def provenance(**extra: Any) -> dict:
    """A provenance record for a results JSON.

    Parameters
    ----------
    **extra
        Caller fields (counts, input paths as given, seed, model, reducer and its parameters,
        split, ...). They are added last and may override the defaults.

    Returns
    -------
    dict
        ``versions`` (modgap, numpy, torch, scipy, sklearn, POT), ``python``, ``platform``,
        ``time`` (UTC, ISO 8601), ``command`` (``sys.argv`` joined) and ``extra``'s fields.
    """
    record: dict[str, Any] = {
        "versions": library_versions(),
        "python": _platform.python_version(),
        "platform": _platform.platform(),
        "time": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
    }
    record.update(extra)
    return jsonable(record)


def jsonable(obj: Any) -> Any:
    """Return ``obj`` with only JSON types; non-finite floats become ``"inf"``/``"-inf"``/``"nan"``.

    Use it before ``json.dump(..., allow_nan=False)`` so files stay strict JSON.
    """
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if hasattr(obj, "tolist") and not isinstance(obj, (str, bytes)):  # numpy / torch
        return jsonable(obj.tolist())
    if isinstance(obj, bool) or obj is None or isinstance(obj, (int, str)):
        return obj
    if isinstance(obj, float):
        if math.isnan(obj):
            return "nan"
        if math.isinf(obj):
            return "inf" if obj > 0 else "-inf"
        return obj
    if hasattr(obj, "__fspath__"):
        return str(obj)
    return str(obj)
