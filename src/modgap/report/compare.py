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

from ..bench import run_bench
from ..bench.stats import paired
from ..errors import InputError, ModgapError
from ..files import output_folder, write_json
from ..io import read_embeddings
from ..provenance import jsonable, number, provenance
from .html import _CSS, _e, _table
from .results import read_results
from .tables import SUMMARY_COLUMNS

__all__ = [
    "COMPARE_FORMAT",
    "compare",
    "compare_html",
    "load_entries",
    "render_compare",
    "write_compare",
]

COMPARE_FORMAT = "modgap.compare/1"


def _shown(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _number(value: Any, key: str, path: str) -> float:
    """``value`` as a float: a JSON number, or ``"inf"``/``"-inf"``/``"nan"`` as modgap writes
    them; anything else is a hand edit that broke the file, blamed on ``key``."""
    x = number(value)  # the one reader of modgap's spelling of non-finite numbers
    if x is not None:
        return x
    raise InputError(
        f'\'{key}\' must be a number (or "inf", "-inf", "nan"), got {_shown(value)}; '
        "correct it or write the file again",
        path,
    )


def _object(value: Any, key: str, path: str) -> dict:
    if not isinstance(value, dict):
        raise InputError(f"'{key}' must be a JSON object, got {_shown(value)}", path)
    return value


def _numbers(value: Any, key: str, path: str, length: int | None = None) -> list[float]:
    if not isinstance(value, list) or (length is not None and len(value) != length):
        size = f"{length} " if length is not None else ""
        raise InputError(f"'{key}' must be a list of {size}numbers, got {_shown(value)}", path)
    return [_number(v, f"{key}[{i}]", path) for i, v in enumerate(value)]


def _bench_metric(m: Any, key: str, path: str) -> dict:
    """One metric of a benchmark row, ``{"mean", "ci95", "values"}``, checked and read back
    as floats (non-finite ones included)."""
    m = _object(m, key, path)
    if "mean" not in m:
        raise InputError(f"'{key}' has no 'mean'", path)
    out = {**m, "mean": _number(m["mean"], f"{key}.mean", path)}
    if "ci95" in m:
        ci = m["ci95"]
        # a missing bound (null) reads as an unknown one, as the table shows it
        if isinstance(ci, list) and len(ci) == 2:
            ci = [math.nan if v is None else v for v in ci]
        out["ci95"] = _numbers(ci, f"{key}.ci95", path, length=2)
    if "values" in m:
        out["values"] = _numbers(m["values"], f"{key}.values", path)
    return out


def _setting(run: dict, key: str, path: str) -> dict:
    """The split setting a row was scored under: seeds and image counts, checked."""
    setting = _object(run.get("setting", {}), f"{key}.setting", path)
    out = dict(setting)
    seeds = setting.get("seeds")
    if seeds is not None and (
        not isinstance(seeds, list)
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in seeds)
    ):
        raise InputError(f"'{key}.setting.seeds' must be a list of integers, got {_shown(seeds)}",
                         path)  # fmt: skip
    for name in ("n_fit_images", "n_eval_images"):
        if setting.get(name) is not None:
            out[name] = _number(setting[name], f"{key}.setting.{name}", path)
    return out


def _from_flat(flat: dict, section: str, path: str) -> dict[str, dict]:
    """The single values of an eval / measure JSON; nested objects are details, not metrics."""
    out = {}
    for k, v in flat.items():
        if k in ("skipped", "n_clusters") or isinstance(v, dict):
            continue
        out[k] = {"mean": _number(v, f"{section}.{k}", path), "ci95": [math.nan, math.nan]}
    return out


def load_entries(
    spec: str, repeats: int = 5, compute: Any = None, progress: bool = False
) -> list[dict]:
    """The comparable entries of one input (a results file or an embedding set): each
    ``{"label", "source", "kind", "metrics", "seeds", "n_eval"}``."""
    path, _, row = spec.partition("#")
    p = Path(path)
    if p.suffix.lower() == ".json" and p.is_file():
        doc = read_results(path)
        label = p.parent.name if p.name == "results.json" else p.stem
        if "datasets" in doc:
            return _bench_entries(doc, label, path, row)
        if row:
            raise InputError(f"'#{row}' selects a benchmark row; this file has none", path)
        sections = {s: _object(doc[s], s, path) for s in ("measures", "tasks") if s in doc}
        if not any(sections.values()):
            raise InputError(
                "not a modgap results file (no 'datasets', 'tasks' or 'measures')", path
            )
        kind = "eval" if "tasks" in doc else "measure"
        metrics = {
            k: v for s, flat in sections.items() for k, v in _from_flat(flat, s, path).items()
        }
        return [{"label": label, "source": path, "kind": kind, "metrics": metrics, "seeds": None}]
    if row:
        raise InputError(f"'#{row}' selects a benchmark row; give a results.json", path)

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


def _bench_entries(doc: dict, label: str, path: str, row: str) -> list[dict]:
    """One entry per data set of a benchmark's results.json: its row ``row`` (default
    ``none``), every value checked so a hand-edited file fails with the key to blame."""
    out = []
    for name, run in _object(doc["datasets"], "datasets", path).items():
        key = f"datasets.{name}"
        run = _object(run, key, path)
        results = _object(run.get("results", {}), f"{key}.results", path)
        pick = row or "none"
        if pick not in results:
            raise InputError(
                f"data set '{name}' has no row '{pick}' (rows: {', '.join(results) or 'none'})",
                path,
            )
        res = _object(results[pick], f"{key}.results.{pick}", path)
        where = f"{key}.results.{pick}.metrics"
        metrics = _object(res.get("metrics"), where, path)
        setting = _setting(run, key, path)
        out.append(
            {
                "label": f"{label}:{name}" + (f"#{pick}" if row else ""),
                "source": path,
                "kind": "bench",
                "metrics": {k: _bench_metric(m, f"{where}.{k}", path) for k, m in metrics.items()},
                "seeds": setting.get("seeds"),
                "n_eval": setting.get("n_eval_images"),
                "ratio": _ratio(setting),
            }
        )
    return out


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
    out_dir = Path(out_dir)
    with output_folder(out_dir, marker="compare.json", what="--out") as tmp:
        write_json(tmp / "compare.json", doc)
        (tmp / "report.html").write_text(compare_html(doc), encoding="utf-8")
    return out_dir
