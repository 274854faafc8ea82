"""Results read back and laid out long: :func:`read_results` and :func:`to_frame`.

:func:`read_results` reads any JSON file modgap wrote (``measure`` / ``eval`` ``--json``, a
bench's ``results.json``, ``compare.json``, ``reduce.json``) and turns the strings ``"inf"``,
``"-inf"``, ``"nan"`` — the one spelling of non-finite numbers in modgap's files
(:data:`modgap.provenance.NON_FINITE`) — back into floats. :func:`to_frame` lays a result out in
long format, one row per number: for a notebook or a paper's own table, with its interval where
the number has one.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from .._optional import require
from ..errors import InputError, ModgapError
from ..io import check_input_path, reading
from ..provenance import number, restored

__all__ = ["COLUMNS", "read_results", "result_rows", "to_frame"]

#: the columns of :func:`to_frame`, in order. ``dataset`` and ``row`` (reducer / correction)
#: name a bench row; ``section`` is ``measures`` or ``tasks``; ``ci_low``/``ci_high`` bound the
#: 95% interval (over splits for a bench, over the sample for a sampled streamed estimate);
#: ``n`` counts what the value is a mean over (splits, or sampled queries) and ``population``
#: what it estimates; ``diff``/``diff_low``/``diff_high``/``significant`` are a bench row's
#: paired difference from ``none`` (a compare entry's: from the first entry).
COLUMNS = (
    "dataset",
    "row",
    "section",
    "key",
    "value",
    "ci_low",
    "ci_high",
    "n",
    "population",
    "exact",
    "diff",
    "diff_low",
    "diff_high",
    "significant",
)

_NAN = math.nan


def read_results(path: str | os.PathLike) -> dict:
    """Read a JSON file modgap wrote, with non-finite numbers as floats again.

    Parameters
    ----------
    path : str or path-like
        A results file: ``measure`` / ``eval`` ``--json``, a bench's ``results.json``,
        ``compare.json``, ``reduce.json``.

    Returns
    -------
    dict
        The document, every ``"inf"``/``"-inf"``/``"nan"`` value (outside ``provenance``)
        a float (:func:`modgap.provenance.restored`).
    """
    p = Path(path)
    check_input_path(p)
    with reading(str(path), "results JSON"):
        doc = json.loads(p.read_text(encoding="utf-8"))
    if not isinstance(doc, dict):
        raise InputError("not a modgap results file (not a JSON object)", str(path))
    return restored(doc)


def _interval(ci: Any) -> tuple[float, float]:
    if isinstance(ci, list | tuple) and len(ci) == 2:
        lo, hi = (number(v) for v in ci)
        return (_NAN if lo is None else lo, _NAN if hi is None else hi)
    return _NAN, _NAN


def _flat_rows(flat: dict, section: str | None) -> list[dict]:
    """One row per number of a measure / eval result; a streamed estimate's interval, sample
    and population come from its ``estimates`` record."""
    estimates = flat.get("estimates") if isinstance(flat.get("estimates"), dict) else {}
    rows = []
    for key, v in flat.items():
        value = number(v)
        if value is None or isinstance(v, bool):
            continue  # nested details (per_dimension, skipped, estimates) and text
        row = {"section": section, "key": key, "value": value}
        est = estimates.get(key)
        if isinstance(est, dict):
            row["ci_low"], row["ci_high"] = _interval(est.get("interval"))
            row["n"], row["population"] = est.get("sample"), est.get("population")
            row["exact"] = est.get("exact")
        rows.append(row)
    return rows


def _bench_rows(run: dict, dataset: str | None) -> list[dict]:
    """One row per metric of every row (reducer, correction) of one data set's bench run."""
    rows = []
    for name, res in run.get("results", {}).items():
        diffs = res.get("vs_none", {}) if isinstance(res, dict) else {}
        metrics = res.get("metrics", {}) if isinstance(res, dict) else {}
        rows += _metric_rows(metrics, diffs, {"dataset": dataset, "row": name})
    return rows


def _metric_rows(metrics: dict, diffs: dict, where: dict) -> list[dict]:
    """One long row per ``{"mean", "ci95", "values"}`` metric (``where`` names its row), with
    its difference from ``diffs`` where there is one."""
    rows = []
    for key, m in metrics.items():
        value = number(m.get("mean")) if isinstance(m, dict) else None
        if value is None:
            continue
        lo, hi = _interval(m.get("ci95"))
        row = {**where, "key": key, "value": value}
        row.update(ci_low=lo, ci_high=hi, n=len(m.get("values", [])) or None)
        d = diffs.get(key)
        if isinstance(d, dict) and number(d.get("mean")) is not None:
            row["diff"] = number(d["mean"])
            row["diff_low"], row["diff_high"] = _interval(d.get("ci95"))
            row["significant"] = d.get("significant")
        rows.append(row)
    return rows


def _compare_rows(doc: dict) -> list[dict]:
    """One row per metric of every entry of a ``compare`` document; the difference is from
    the first entry, as the comparison states it."""
    rows = []
    diffs = [{}, *doc.get("vs_first", [])]
    for entry, diff in zip(doc.get("entries", []), diffs, strict=False):
        rows += _metric_rows(entry.get("metrics", {}), diff, {"row": entry.get("label")})
    return rows


def result_rows(result: Any) -> list[dict]:
    """The long rows of :func:`to_frame` as dicts (every key of :data:`COLUMNS`), without
    pandas.

    Parameters
    ----------
    result : dict or path
        What :func:`modgap.measure`, :func:`modgap.run_tasks` or :func:`modgap.run_bench`
        (its document) return, a ``measure`` / ``eval`` JSON document (``measures`` and
        ``tasks`` sections), a bench ``results.json`` document (``datasets``), a ``compare``
        document (``entries``: ``row`` is the entry's label, ``diff`` its difference from the
        first entry), or the path of one of those files.
    """
    if isinstance(result, str | os.PathLike):
        result = read_results(result)
    if not isinstance(result, dict):
        raise ModgapError(
            f"to_frame takes a result dict or a results file, not {type(result).__name__}"
        )
    if isinstance(result.get("entries"), list):
        rows = _compare_rows(result)
    elif isinstance(result.get("datasets"), dict):
        rows = [r for name, run in result["datasets"].items() for r in _bench_rows(run, name)]
    elif isinstance(result.get("results"), dict) and "setting" in result:
        rows = _bench_rows(result, None)
    elif any(isinstance(result.get(s), dict) for s in ("measures", "tasks")):
        rows = [
            r
            for s in ("measures", "tasks")
            if isinstance(result.get(s), dict)
            for r in _flat_rows(result[s], s)
        ]
    else:
        rows = _flat_rows(result, None)
    return [{c: row.get(c) for c in COLUMNS} for row in rows]


def to_frame(result: Any) -> Any:
    """A result in long format as a pandas ``DataFrame``: one row per number.

    Parameters
    ----------
    result : dict or path
        As :func:`result_rows` takes it.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`COLUMNS`; a value without an interval has ``NaN`` bounds. pandas is
        the optional extra ``modgap[notebook]``.
    """
    pd = require("pandas", "notebook", "a results frame")
    frame = pd.DataFrame(result_rows(result), columns=list(COLUMNS))
    for c in ("value", "ci_low", "ci_high", "diff", "diff_low", "diff_high"):
        frame[c] = frame[c].astype(float)
    return frame
