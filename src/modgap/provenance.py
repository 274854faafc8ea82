"""What produced a result: library versions, platform, time, plus the caller's own fields.

Every results JSON written by modgap embeds :func:`provenance`; :func:`jsonable` makes a result
dict safe for ``json.dump`` (non-finite floats become the strings ``"inf"``, ``"-inf"``,
``"nan"``, numpy scalars and arrays become Python numbers and lists).

Those three strings are the one spelling of non-finite numbers in modgap's JSON files (strict
JSON has no ``Infinity`` or ``NaN``): :data:`NON_FINITE` lists them, :func:`jsonable` writes
them, :func:`number` and :func:`restored` read them back, and every reader of modgap's own
files (``compare``, :func:`modgap.read_results` and so :func:`modgap.to_frame`, the docs tables)
goes through these two.
"""

from __future__ import annotations

import datetime as _dt
import math
import platform as _platform
import sys
from importlib import metadata
from typing import Any

from . import __version__

__all__ = ["NON_FINITE", "jsonable", "library_versions", "number", "provenance", "restored"]

#: the strings that stand for the floats strict JSON lacks, in every JSON file modgap writes
NON_FINITE: dict[str, float] = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}

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


def number(value: Any) -> float | None:
    """``value`` as a float when it is a JSON number or one of the :data:`NON_FINITE` strings
    (case and surrounding spaces ignored, so a hand-edited ``"Inf"`` reads too); else ``None``.
    ``True``/``False`` are not numbers here."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        return NON_FINITE.get(value.strip().lower())
    return None


def restored(obj: Any, keep_text: tuple[str, ...] = ("provenance",)) -> Any:
    """The inverse of :func:`jsonable` for numbers: every :data:`NON_FINITE` string value
    becomes its float again, in nested dicts and lists.

    Values under a key of ``keep_text`` (the provenance record: commands, paths, labels) stay
    text, so an input named ``nan`` is not read as a number. Keys are never changed.
    """
    if isinstance(obj, dict):
        return {k: v if k in keep_text else restored(v, keep_text) for k, v in obj.items()}
    if isinstance(obj, list):
        return [restored(v, keep_text) for v in obj]
    if isinstance(obj, str) and obj in NON_FINITE:
        return NON_FINITE[obj]
    return obj
