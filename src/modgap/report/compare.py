"""Side-by-side comparison of several models or runs (``modgap compare``).

Each input is a results file modgap wrote — a benchmark's ``results.json`` (intervals over
splits; ``PATH#ROW`` picks a row, default ``none``, for every data set in it), an
``eval`` / ``measure`` JSON (single values) — or an embedding set, which is benchmarked on the
spot (``none`` only, repeated splits, so its numbers come with intervals). Every metric gets a
row and every input a column. A column is compared with the first: split by split when both
were scored on the same splits of the same number of images (the paired interval of
:mod:`modgap.bench.stats`), else by the two intervals combined
(:math:`\\sqrt{h_1^2 + h_2^2}`, conservative for independent estimates); a difference is marked
only when its interval excludes 0.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from ..errors import InputError, ModgapError

__all__ = [
    "COMPARE_FORMAT",
    "compare",
    "compare_html",
    "load_entries",
    "render_compare",
    "write_compare",
]

COMPARE_FORMAT = "modgap.compare/1"


def _single(value: Any) -> dict | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        v = float(value)  # "inf" / "nan" strings of strict JSON come back as numbers
    except ValueError:
        return None
    return {"mean": v, "ci95": [math.nan, math.nan]}


def _from_flat(flat: dict) -> dict[str, dict]:
    out = {}
    for k, v in flat.items():
        s = _single(v)
        if s is not None and k != "n_clusters":
            out[k] = s
    return out


def load_entries(
    spec: str, repeats: int = 5, compute: Any = None, progress: bool = False
) -> list[dict]:
    """The comparable entries of one input (a results file or an embedding set): each
    ``{"label", "source", "kind", "metrics", "seeds", "n_eval"}``."""
    path, _, row = spec.partition("#")
    p = Path(path)
    if p.suffix.lower() == ".json" and p.is_file():
        from ..io._errors import check_input_path, reading

        check_input_path(p)
        with reading(path, "results JSON"):
            doc = json.loads(p.read_text(encoding="utf-8"))
        if not isinstance(doc, dict):
            raise InputError("not a modgap results file (not a JSON object)", path)
        label = p.parent.name if p.name == "results.json" else p.stem
        if "datasets" in doc:
            out = []
            for name, run in doc["datasets"].items():
                pick = row or "none"
                if pick not in run.get("results", {}):
                    raise InputError(
                        f"data set '{name}' has no row '{pick}' (rows: "
                        f"{', '.join(run.get('results', {})) or 'none'})",
                        path,
                    )
                res = run["results"][pick]
                out.append(
                    {
                        "label": f"{label}:{name}" + (f"#{pick}" if row else ""),
                        "source": path,
                        "kind": "bench",
                        "metrics": {k: dict(m) for k, m in res["metrics"].items()},
                        "seeds": run["setting"].get("seeds"),
                        "n_eval": run["setting"].get("n_eval_images"),
                        "ratio": _ratio(run["setting"]),
                    }
                )
            return out
        if row:
            raise InputError(f"'#{row}' selects a benchmark row; this file has none", path)
        flat = {**doc.get("measures", {}), **doc.get("tasks", {})}
        if not flat:
            raise InputError(
                "not a modgap results file (no 'datasets', 'tasks' or 'measures')", path
            )
        kind = "eval" if "tasks" in doc else "measure"
        metrics = _from_flat({k: v for k, v in flat.items() if k != "skipped"})
        return [{"label": label, "source": path, "kind": kind, "metrics": metrics, "seeds": None}]
    if row:
        raise InputError(f"'#{row}' selects a benchmark row; give a results.json", path)
    from ..bench import run_bench
    from ..io import read_embeddings

    emb = read_embeddings(path)
    doc, _ = run_bench(emb, reducers=["none"], repeats=repeats, compute=compute, progress=progress)
    label = p.stem if p.suffix else p.name
    return [
        {
            "label": label,
            "source": path,
            "kind": "embeddings",
            "metrics": doc["results"]["none"]["metrics"],
            "seeds": doc["setting"]["seeds"],
            "n_eval": doc["setting"]["n_eval_images"],
            "ratio": _ratio(doc["setting"]),
        }
    ]


def _ratio(setting: dict) -> float:
    fit, ev = setting.get("n_fit_images"), setting.get("n_eval_images")
    return ev / fit if fit and ev else 1.0


def _half(m: dict) -> float:
    lo, hi = m.get("ci95", [math.nan, math.nan])
    if lo is None or hi is None or not (math.isfinite(lo) and math.isfinite(hi)):
        return math.nan
    return (hi - lo) / 2


def _difference(a: dict, b: dict, ea: dict, eb: dict) -> dict | None:
    """Difference b - a with its interval: paired when both were scored on the same splits."""
    from ..bench.stats import paired

    if not all(math.isfinite(x) for x in (a["mean"], b["mean"])):
        return None
    same_splits = (
        ea.get("seeds")
        and ea.get("seeds") == eb.get("seeds")
        and ea.get("n_eval") == eb.get("n_eval")
        and "values" in a
        and "values" in b
        and len(a["values"]) == len(b["values"])
    )
    if same_splits:
        d = paired(b["values"], a["values"], ea.get("ratio", 1.0))
        d["how"] = "paired over the same splits"
        return d
    ha, hb = _half(a), _half(b)
    mean = b["mean"] - a["mean"]
    if not (math.isfinite(ha) and math.isfinite(hb)):
        return {"mean": mean, "ci95": [math.nan, math.nan], "significant": False, "how": "none"}
    half = math.hypot(ha, hb)
    return {
        "mean": mean,
        "ci95": [mean - half, mean + half],
        "significant": abs(mean) > half,
        "how": "intervals combined",
    }


def compare(entries: list[dict]) -> dict:
    """The comparison document: the entries, and every metric's difference from the first."""
    if len(entries) < 2:
        raise ModgapError("compare needs at least two results or embedding sets")
    from .tables import SUMMARY_COLUMNS

    keys: list[str] = []
    for key, _, _ in SUMMARY_COLUMNS:
        if any(key in e["metrics"] for e in entries):
            keys.append(key)
    rest = sorted({k for e in entries for k in e["metrics"]} - set(keys))
    keys += rest
    first = entries[0]
    diffs = []
    for e in entries[1:]:
        d = {}
        for k in keys:
            if k in first["metrics"] and k in e["metrics"]:
                r = _difference(first["metrics"][k], e["metrics"][k], first, e)
                if r is not None:
                    d[k] = r
        diffs.append(d)
    from ..provenance import provenance

    return {
        "format": COMPARE_FORMAT,
        "provenance": provenance(inputs=[e["source"] for e in entries]),
        "metrics": keys,
        "entries": entries,
        "vs_first": diffs,
    }


def _cell(m: dict | None, diff: dict | None, better: str | None) -> str:
    if m is None:
        return "–"
    v = m["mean"]
    if not math.isfinite(v):
        return str(v)
    digits = 1 if abs(v) >= 100 else 3
    s = f"{v:.{digits}f}"
    h = _half(m)
    if math.isfinite(h):
        s += f" ± {h:.{digits}f}"
    if diff is not None and diff["significant"]:
        up = diff["mean"] > 0
        s += " " + ("≠" if better is None else ("▲" if up == (better == "high") else "▼"))
    return s


def render_compare(doc: dict) -> tuple[list[str], list[list[str]]]:
    """Header and rows (metric × entry) of the comparison table."""
    from .tables import SUMMARY_COLUMNS

    better = {k: b for k, _, b in SUMMARY_COLUMNS}
    header = ["metric", *(e["label"] for e in doc["entries"])]
    rows = []
    for key in doc["metrics"]:
        line = [key]
        for i, e in enumerate(doc["entries"]):
            diff = doc["vs_first"][i - 1].get(key) if i else None
            line.append(_cell(e["metrics"].get(key), diff, better.get(key)))
        rows.append(line)
    return header, rows


def compare_html(doc: dict, title: str = "modgap compare") -> str:
    """The comparison (:func:`modgap.report.compare.compare`) as a self-contained page."""
    from ..provenance import jsonable
    from .html import _CSS, _e, _table

    header, rows = render_compare(doc)
    entries = "".join(
        f"<li><b>{_e(e['label'])}</b>: {_e(e['kind'])} — {_e(e['source'])}</li>"
        for e in doc["entries"]
    )
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>",
            f"<h1>{_e(title)}</h1>",
            f"<ul>{entries}</ul>",
            _table(header, rows),
            "<p class='note'>mean ± half-width of the 95% interval where the input has one "
            "(benchmark results, embedding sets benchmarked here). ▲ / ▼: better / worse than "
            "the first column, the interval of the difference excluding 0 (paired over the "
            "same splits when both were scored on them, else the two intervals combined).</p>",
            "<h2>Provenance</h2><pre>"
            + _e(json.dumps(jsonable(doc.get("provenance", {})), indent=2))
            + "</pre>",
            "</body></html>",
        ]
    )


def write_compare(doc: dict, out_dir: str | os.PathLike) -> Path:
    """``compare.json`` and ``report.html`` into ``out_dir``, as one unit."""
    from ..files import output_folder, write_json

    out_dir = Path(out_dir)
    with output_folder(out_dir, marker="compare.json", what="--out") as tmp:
        write_json(tmp / "compare.json", doc)
        (tmp / "report.html").write_text(compare_html(doc), encoding="utf-8")
    return out_dir
