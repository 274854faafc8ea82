"""The self-contained ``report.html`` of a benchmark run.

One file, no scripts, no external resources: figures are PNGs embedded as base64 data URIs,
styles are inline. It opens offline in any browser and can be attached to an e-mail.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

from ..files import atomic_path

__all__ = ["render_report", "write_bench", "write_report"]

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 1400px; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.6em; }
table { border-collapse: collapse; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
thead th { background: #f0f0f0; }
figure { margin: 1em 0; } img { max-width: 100%; }
figcaption { font-size: 0.85em; color: #555; }
.note { color: #555; font-size: 0.9em; }
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


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_report(out: dict, views: dict, title: str = "modgap benchmark") -> str:
    """The report as an HTML string.

    Parameters
    ----------
    out : dict
        :func:`modgap.bench.run_bench` output.
    views : dict
        Reducer name -> evaluated :class:`EmbeddingSet` after that reducer.
    """
    from ..provenance import jsonable
    from . import figures
    from .tables import SUMMARY_COLUMNS, summary_rows

    setting = out["setting"]
    prov = out.get("provenance", {})
    header, rows = summary_rows(out)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        f"<p><b>Protocol: {_e(setting['protocol'])}</b> — {_e(setting['protocol_note'])}.</p>",
        "<p class='note'>Evaluated split: "
        + _e(", ".join(f"{k}={v}" for k, v in setting["eval_split"].items() if v is not None))
        + "</p>",
        "<h2>Summary</h2>",
        _table(header, rows),
        "<p class='note'>rSum in percent (max 600); recalls as fractions; modality purity: "
        "1 = k-means clusters split by modality, the modality-blind value is in the full "
        "results; same-mod@10: share of a query's 10 nearest items (images and texts mixed) "
        "from its own modality.</p>",
    ]
    if out.get("skipped"):
        parts.append("<h2>Skipped reducers</h2><ul>")
        parts += [f"<li><b>{_e(k)}</b>: {_e(v)}</li>" for k, v in out["skipped"].items()]
        parts.append("</ul>")
    if not views:
        parts.append("<p>No reducer produced results; nothing to plot.</p></body></html>")
        return "\n".join(parts)
    parts.append("<h2>Figures</h2>")
    parts.append(
        _img(
            figures.metric_bars_figure(out, SUMMARY_COLUMNS),
            "metric bars per reducer",
            "Main metrics per reducer; the dashed line is the value without reduction.",
        )
    )
    parts.append(
        _img(
            figures.pca_pairs_figure(views),
            "PCA view of both modalities before and after each reducer",
            "First two principal components of images (blue) and texts (orange) together, "
            "per reducer; grey lines join matched pairs.",
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
    parts.append("<h2>All results</h2>")
    for name, res in out["results"].items():
        flat = {**res["tasks"], **res["measures"]}
        scalars = [
            [k, f"{v:.4g}" if isinstance(v, float) else str(v)]
            for k, v in flat.items()
            if isinstance(v, int | float | str) and not isinstance(v, bool)
        ]
        parts.append(
            f"<details><summary><b>{_e(name)}</b> — {_e(res['protocol'])}, "
            f"dim {res['dim']}, fit {res['fit_seconds']:.2f} s, "
            f"eval {res['eval_seconds']:.2f} s</summary>"
            f"<p class='note'>params: {_e(json.dumps(jsonable(res['params'])))}</p>"
            + _table(["metric", "value"], scalars)
            + "</details>"
        )
    parts.append("<h2>Provenance</h2><pre>" + _e(json.dumps(jsonable(prov), indent=2)) + "</pre>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(out: dict, views: dict, path: str | Path, **kwargs: Any) -> Path:
    """Render and write ``report.html`` atomically; returns the path."""
    path = Path(path)
    text = render_report(out, views, **kwargs)
    with atomic_path(path, ".html") as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


def write_bench(out: dict, views: dict | None, out_dir: str | Path, report: bool = True) -> Path:
    """Write a benchmark run's ``results.json`` and ``report.html`` into ``out_dir`` as one
    unit (:func:`modgap.files.output_folder`; an earlier run's folder is replaced whole)."""
    from ..files import output_folder, write_json

    out_dir = Path(out_dir)
    with output_folder(out_dir, marker="results.json", what="--out") as tmp:
        write_json(tmp / "results.json", out)
        if report and views is not None:
            write_report(out, views, tmp / "report.html")
    return out_dir
