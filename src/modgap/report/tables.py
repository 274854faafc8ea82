"""Result tables of the benchmark: which columns, how numbers and their intervals are shown
(terminal, HTML, Markdown for the docs), which row is best and which differences are real.

A cell reads ``mean ± half-width`` of the 95% interval over the splits. ``▲`` / ``▼`` mark a
difference against ``none`` whose interval excludes 0 and is evidence (better / worse by the
column's sense; ``≠`` when the column has no better side): a zero-width interval is not, and a
value below the column's chance level is not (:func:`modgap.bench.stats.is_evidence`, the rule
of the bench's verdicts). A value below chance (linear separability under 0.5) reads as
chance — no separability detected, not less gap —: it is shown with ``†``, never marked, and
its column marks no best row (chance is the best it can read, and such rows cannot be told
apart). The best row of every other column is marked (bold in the terminal and HTML, ``**`` in
Markdown).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ..bench.stats import CHANCE, is_evidence

__all__ = [
    "LEGEND",
    "SUMMARY_COLUMNS",
    "Cell",
    "summary_cells",
    "summary_markdown",
    "summary_rows",
    "summary_table",
]

#: (result key, short header, better = "high" | "low" | None); only metrics that can move
SUMMARY_COLUMNS: tuple[tuple[str, str, str | None], ...] = (
    ("rsum", "rSum", "high"),
    ("text_retrieval_recall@1", "i→t R@1", "high"),
    ("image_retrieval_recall@1", "t→i R@1", "high"),
    ("acc1", "ZS acc1", "high"),
    ("cluster_ami", "AMI", "high"),
    ("pair_coclustering", "pairs together", "high"),
    ("modality_purity", "mod. purity", "low"),
    ("mixed_recall@10", "mixed R@10", "high"),
    ("mixed_same_modality@10", "same-mod@10", "low"),
    ("centroid_gap", "‖Δ‖", "low"),
    ("frechet_covariance_term", "FD cov.", "low"),
    ("linear_separability", "lin. sep.", "low"),
    ("hubness_skew_t2i", "hub skew", "low"),
)


#: what the marks of a summary table mean (terminal caption, docs)
LEGEND = (
    "mean ± 95% interval over the splits; ▲/▼ better/worse than none (the interval of the paired "
    "difference excludes 0; a zero-width interval — every split the same — is no evidence and "
    "is not marked); † below chance (lin. sep. < 0.5): reads as chance, an artefact of held-out "
    "probes and of rows transformed with their own statistics, not less gap — never marked or "
    "ranked (its column then bolds no row); bold: best"
)


@dataclass
class Cell:
    """One table cell: the mean, its interval half-width and the marks."""

    mean: float | None
    half: float | None = None
    change: str = ""  # "▲", "▼", "≠" or ""
    best: bool = False
    below_chance: bool = False  # shown with †, never marked or ranked

    def text(self) -> str:
        if self.mean is None:
            return "–"
        v = self.mean
        if not math.isfinite(v):
            s = str(v)
        else:
            digits = 1 if abs(v) >= 100 else 3
            s = f"{v:.{digits}f}"
            if self.half is not None and math.isfinite(self.half):
                s += f" ± {self.half:.{digits}f}"
        return f"{s}{' †' if self.below_chance else ''} {self.change}".rstrip()


def _rows(doc: dict) -> dict[str, dict]:
    return doc["results"]


def summary_cells(doc: dict) -> tuple[list[tuple[str, str, str | None]], dict[str, list[Cell]]]:
    """The columns present in any row, and one :class:`Cell` per row and column."""
    rows = _rows(doc)
    cols = [c for c in SUMMARY_COLUMNS if any(c[0] in r.get("metrics", {}) for r in rows.values())]
    cells: dict[str, list[Cell]] = {}
    for name, row in rows.items():
        line = []
        for key, _, better in cols:
            m = row.get("metrics", {}).get(key)
            if m is None:
                line.append(Cell(None))
                continue
            lo, hi = m["ci95"]
            half = (hi - lo) / 2 if lo is not None and math.isfinite(lo) else None
            change = ""
            diff = row.get("vs_none", {}).get(key)
            if diff is not None and is_evidence(diff, key, m["mean"]):
                up = diff["mean"] > 0
                change = "≠" if better is None else ("▲" if up == (better == "high") else "▼")
            chance = CHANCE.get(key)
            low = chance is not None and m["mean"] is not None and m["mean"] < chance
            line.append(Cell(m["mean"], half, change, below_chance=low))
        cells[name] = line
    for j, (_, _, better) in enumerate(cols):
        # a row below chance reads as chance, the best a chance column can show, but it cannot
        # be told apart from the others there: such a column marks no best row at all
        if better is None or any(c[j].below_chance for c in cells.values()):
            continue
        means = {
            n: c[j].mean
            for n, c in cells.items()
            if c[j].mean is not None and math.isfinite(c[j].mean)
        }
        if len(means) > 1:
            pick = max if better == "high" else min
            top = pick(means.values())
            for n, v in means.items():
                cells[n][j].best = v == top
    return cols, cells


def summary_rows(doc: dict) -> tuple[list[str], list[list[str]]]:
    """Header and plain-text rows of the summary table (best rows marked with ``*``)."""
    cols, cells = summary_cells(doc)
    header = ["row", *(h for _, h, _ in cols)]
    rows = [
        [n, *((c.text() + (" *" if c.best else "")) for c in line)] for n, line in cells.items()
    ]
    return header, rows


def summary_table(doc: dict, title: str | None = None) -> Any:
    """A :class:`rich.table.Table` of the main metrics per row (best in bold)."""
    from rich.table import Table

    setting = doc["setting"]
    table = Table(
        title=title or f"modgap bench — {setting['protocol']}: {setting['protocol_note']}",
        caption=LEGEND,
    )
    cols, cells = summary_cells(doc)
    table.add_column("row")
    for _, h, _ in cols:
        table.add_column(h, justify="right")
    for name, line in cells.items():
        table.add_row(name, *((f"[bold]{c.text()}[/bold]" if c.best else c.text()) for c in line))
    return table


def summary_markdown(doc: dict) -> str:
    """The summary table as Markdown (for the docs; best cells in bold)."""
    cols, cells = summary_cells(doc)
    header = ["row", *(h for _, h, _ in cols)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, line in cells.items():
        texts = [f"**{c.text()}**" if c.best else c.text() for c in line]
        lines.append("| " + " | ".join([name, *texts]) + " |")
    return "\n".join(lines)
