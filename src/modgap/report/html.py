"""The self-contained ``report.html`` of a benchmark run.

One file, no scripts, no external resources: figures are PNGs embedded as base64 data URIs,
styles are inline. It opens offline in any browser and can be attached to an e-mail.
"""

from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path
from typing import Any

from ..bench.stats import is_evidence
from ..files import atomic_path, output_folder, write_json
from ..provenance import jsonable, provenance
from . import figures
from .clip_benchmark import write_records
from .tables import SUMMARY_COLUMNS, summary_cells

__all__ = ["bench_document", "render_report", "write_bench", "write_report"]

#: the ``format`` entry of a benchmark's results.json
BENCH_FORMAT = "modgap.bench/2"

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 1400px; }
h1 { font-size: 1.5em; } h2 { font-size: 1.25em; margin-top: 1.8em; } h3 { font-size: 1.05em; }
table { border-collapse: collapse; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
thead th { background: #f0f0f0; }
td.best { font-weight: bold; background: #eef6ee; }
figure { margin: 1em 0; } img { max-width: 100%; }
figcaption { font-size: 0.85em; color: #555; }
.note { color: #555; font-size: 0.9em; } .warn { color: #a40; }
details { margin: 0.5em 0; } pre { font-size: 0.8em; background: #f7f7f7; padding: 0.5em; }
"""


def _e(x: Any) -> str:
    return html.escape(str(x))


def _img(png: bytes, alt: str, caption: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{_e(alt)}">'
        f"<figcaption>{_e(caption)}</figcaption></figure>"
    )


def _table(header: list[str], rows: list[list[Any]]) -> str:
    """Rows of strings or of ``(text, css class)`` pairs."""
    head = "".join(f"<th>{_e(h)}</th>" for h in header)

    def cell(c: Any) -> str:
        if isinstance(c, tuple):
            return f'<td class="{c[1]}">{_e(c[0])}</td>' if c[1] else f"<td>{_e(c[0])}</td>"
        return f"<td>{_e(c)}</td>"

    body = "".join("<tr>" + "".join(cell(c) for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}" if math.isfinite(v) else str(v)
    return str(v)


def _dataset_section(name: str, doc: dict, views: dict | None, several: bool) -> list[str]:
    setting = doc["setting"]
    parts = [f"<h2>{_e(name)}</h2>"] if several else []
    data = doc.get("data", {})
    parts.append(
        f"<p><b>Protocol: {_e(setting['protocol'])}</b> — {_e(setting['protocol_note'])}. "
        f"Data: {_e(data.get('n_images'))} images, {_e(data.get('n_texts'))} texts, "
        f"d = {_e(data.get('dim'))}.</p>"
    )
    if setting["protocol"] != "held-out":
        parts.append(
            "<p class='warn'>Every reducer was fitted on the rows it is scored on: these "
            "numbers are transductive, not what it does to unseen data.</p>"
        )
    cols, cells = summary_cells(doc)
    header = ["row", *(h for _, h, _ in cols)]
    rows = [[n, *((c.text(), "best" if c.best else "") for c in line)] for n, line in cells.items()]
    parts += [
        "<h3>Summary</h3>",
        _table(header, rows),
        f"<p class='note'>Mean ± half-width of the {_e(setting['interval'])}. ▲ / ▼: better / "
        "worse than none, the interval of the split-by-split difference excluding 0; "
        "otherwise the difference is within noise (a zero-width interval, every split the "
        "same, is not marked). †: below chance (lin. sep. &lt; 0.5), which reads as chance — "
        "an artefact of held-out probes and of rows transformed with their own statistics, "
        "not less gap —, never marked or ranked (its column bolds no row). Bold: best mean in "
        "the column. rSum in "
        "percent (max 600); recalls as fractions; modality purity: 1 = k-means clusters split "
        "by modality; pairs together: share of pairs in one cluster (chance in the full "
        "results); lin. sep.: balanced accuracy of an image-vs-text probe (chance 0.5).</p>",
    ]
    if doc.get("verdicts"):
        parts.append("<h3>Verdicts (difference against none)</h3><ul>")
        for task, lines in doc["verdicts"].items():
            parts.append(f"<li><b>{_e(task)}</b><ul>")
            parts += [f"<li>{_e(line)}</li>" for line in lines]
            parts.append("</ul></li>")
        parts.append("</ul>")
    if doc.get("skipped"):
        parts.append("<h3>Skipped</h3><ul>")
        parts += [f"<li><b>{_e(k)}</b>: {_e(v)}</li>" for k, v in doc["skipped"].items()]
        parts.append("</ul>")
    if not doc["results"]:
        parts.append("<p>No reducer produced results; nothing to plot.</p>")
        return parts
    parts.append("<h3>Figures</h3>")
    parts.append(
        _img(
            figures.metric_bars_figure(doc, SUMMARY_COLUMNS),
            "metric bars per reducer",
            "Main metrics per row with their 95% intervals; the dashed line is none.",
        )
    )
    if views:
        parts.append(
            _img(
                figures.pca_pairs_figure(views),
                "PCA view of both modalities before and after each reducer",
                "First two principal components of images (blue) and texts (orange) together, "
                "per reducer, on the first split; grey lines join matched pairs.",
            )
        )
        if any(v.text_to_image is not None for v in views.values()):
            parts.append(
                _img(
                    figures.cosine_histogram_figure(views),
                    "matched vs unmatched cosine histograms",
                    "Cosine of matched image-text pairs vs a random sample of unmatched ones.",
                )
            )
        parts.append(
            _img(
                figures.per_dimension_gap_figure(views),
                "per-dimension gap bars",
                "Largest squared components of the centroid gap Δ = mean(images) − mean(texts).",
            )
        )
    parts.append("<h3>All results</h3>")
    for row_name, res in doc["results"].items():
        scalars = []
        for k, m in res["metrics"].items():
            lo, hi = m["ci95"]
            diff = res.get("vs_none", {}).get(k)
            d = ""
            if diff is not None:
                d = f"{_fmt(diff['mean'])} [{_fmt(diff['ci95'][0])}, {_fmt(diff['ci95'][1])}]"
                d += " *" if is_evidence(diff, k, m["mean"]) else ""
            scalars.append([k, _fmt(m["mean"]), f"[{_fmt(lo)}, {_fmt(hi)}]", d])
        flag = " — scored on rows it was fitted on" if res.get("scored_on_fitted_rows") else ""
        secs = res.get("seconds", {})
        parts.append(
            f"<details><summary><b>{_e(row_name)}</b> — {_e(res['protocol'])}{_e(flag)}, "
            f"dim {_e(res.get('dim'))}, fit {secs.get('fit', 0):.2f} s, eval "
            f"{secs.get('eval', 0):.2f} s (per split)</summary>"
            f"<p class='note'>params: {_e(json.dumps(jsonable(res['params'])))}</p>"
            + _table(["metric", "mean", "95% interval", "vs none (* real)"], scalars)
            + "</details>"
        )
    return parts


def render_report(
    document: dict, views: dict | None = None, title: str = "modgap benchmark"
) -> str:
    """The report as an HTML string.

    Parameters
    ----------
    document : dict
        A :func:`bench_document` (several data sets), or one :func:`modgap.bench.run_bench`
        document.
    views : dict, optional
        Data set name -> (row name -> evaluated :class:`EmbeddingSet`), for the figures; with a
        single run document, row name -> set.
    """
    runs = document["datasets"] if "datasets" in document else {"": document}
    if "datasets" not in document:
        views = {"": views} if views is not None else None
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
    ]
    for warning in document.get("warnings", []):
        parts.append(f"<p class='warn'>{_e(warning)}</p>")
    several = len(runs) > 1
    for name, doc in runs.items():
        parts += _dataset_section(name, doc, (views or {}).get(name), several)
    prov = document.get("provenance", {})
    parts.append("<h2>Provenance</h2><pre>" + _e(json.dumps(jsonable(prov), indent=2)) + "</pre>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(document: dict, views: dict | None, path: str | Path, **kwargs: Any) -> Path:
    """Render and write ``report.html`` atomically; returns the path."""
    path = Path(path)
    text = render_report(document, views, **kwargs)
    with atomic_path(path, ".html") as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


def bench_document(runs: dict[str, dict], warnings: list[str] | None = None) -> dict:
    """What ``results.json`` holds: the run document of each data set by name, and the
    provenance of the whole call."""
    return {
        "format": BENCH_FORMAT,
        "provenance": provenance(datasets=list(runs)),
        "warnings": list(warnings or []),
        "datasets": runs,
    }


def write_bench(
    document: dict,
    views: dict | None,
    out_dir: str | Path,
    report: bool = True,
    records: list[dict] | None = None,
) -> Path:
    """Write ``results.json`` and ``report.html`` into ``out_dir`` as one unit
    (:func:`modgap.files.output_folder`; an earlier run's folder is replaced whole).
    ``document``: a :func:`bench_document` or a single run's document (wrapped). ``records``:
    CLIP_benchmark records (:func:`modgap.report.clip_benchmark.bench_records`), written one
    per file under ``clip_benchmark/``."""
    if "datasets" not in document:
        name = str(document.get("data", {}).get("source") or "data")
        document, views = (
            bench_document({name: document}),
            ({name: views} if views is not None else None),
        )
    out_dir = Path(out_dir)
    with output_folder(out_dir, marker="results.json", what="--out") as tmp:
        write_json(tmp / "results.json", document)
        if report:
            write_report(document, views, tmp / "report.html")
        if records:
            (tmp / "clip_benchmark").mkdir()
            write_records(records, tmp / "clip_benchmark" / "{dataset}_{model}_{task}.json")
    return out_dir
