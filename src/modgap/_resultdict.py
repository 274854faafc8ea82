""":class:`Results`: the dict the public functions return, with a short repr for notebooks.

``modgap.measure``, ``modgap.run_tasks`` and ``modgap.run_bench`` (its document) return plain
dicts of JSON-able values — equal to dicts, written by ``json.dump`` as they are. This subclass
only changes how one shows: a line of counts and the first numbers instead of kilobytes of
nested lists, and a small table in Jupyter. ``modgap.to_frame(result)`` gives every number.
"""

from __future__ import annotations

import math
from html import escape
from typing import Any

__all__ = ["Results"]

#: numbers a repr shows before "… N more"
_SHOWN = 6
#: metrics (columns) the HTML table of a bench shows
_BENCH_COLUMNS = 8


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return str(v) if not math.isfinite(v) else f"{v:.4g}"
    return str(v)


class Results(dict):
    """A result dict (flat metrics, or a bench document with ``results`` per row) whose
    repr is one short line and whose ``_repr_html_`` is a small table."""

    def _numbers(self) -> dict[str, Any]:
        return {k: v for k, v in self.items() if _is_number(v)}

    def _bench_rows(self) -> dict[str, dict] | None:
        rows = self.get("results")
        return rows if isinstance(rows, dict) and "setting" in self else None

    def __repr__(self) -> str:
        rows = self._bench_rows()
        if rows is not None:
            metrics = {k for r in rows.values() for k in r.get("metrics", {})}
            splits = len(self["setting"].get("seeds", []) or [])
            return (
                f"Results(bench rows: {', '.join(rows)}; {len(metrics)} metrics over "
                f"{splits} split(s); modgap.to_frame(result) for every number)"
            )
        numbers = self._numbers()
        shown = ", ".join(f"{k}={_fmt(v)}" for k, v in list(numbers.items())[:_SHOWN])
        more = len(numbers) - _SHOWN
        parts = [shown + (f", … {more} more" if more > 0 else "")]
        if isinstance(self.get("skipped"), dict) and self["skipped"]:
            parts.append("skipped: " + ", ".join(self["skipped"]))
        return "Results(" + "; ".join(parts) + ")"

    def _repr_html_(self) -> str:
        rows = self._bench_rows()
        if rows is not None:
            keys = list(dict.fromkeys(k for r in rows.values() for k in r.get("metrics", {})))
            keys = keys[:_BENCH_COLUMNS]
            head = "".join(f"<th>{escape(k)}</th>" for k in ["row", *keys])
            body = ""
            for name, r in rows.items():
                cells = []
                for k in keys:
                    m = r.get("metrics", {}).get(k)
                    cells.append(_fmt(m["mean"]) if isinstance(m, dict) and "mean" in m else "")
                body += (
                    f"<tr><th>{escape(name)}</th>"
                    + "".join(f"<td>{escape(c)}</td>" for c in cells)
                    + "</tr>"
                )
            note = "means over the splits; modgap.to_frame(result): every metric with its interval"
            return f"<table><tr>{head}</tr>{body}</table><p>{escape(note)}</p>"
        body = "".join(
            f"<tr><th style='text-align:left'>{escape(k)}</th><td>{escape(_fmt(v))}</td></tr>"
            for k, v in self._numbers().items()
        )
        skipped = self.get("skipped")
        if isinstance(skipped, dict):
            body += "".join(
                f"<tr><th style='text-align:left'>{escape(str(k))}</th>"
                f"<td>skipped: {escape(str(v))}</td></tr>"
                for k, v in skipped.items()
            )
        return f"<table>{body}</table>"
