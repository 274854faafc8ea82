"""Result tables of the benchmark: which columns, how numbers are shown (terminal, HTML, docs)."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["SUMMARY_COLUMNS", "summary_markdown", "summary_rows", "summary_table"]

#: (result key, short header, better = "high" | "low" | None) for the terminal table and report
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
    ("rmg", "RMG", None),
    ("linear_separability", "lin. sep.", "low"),
)


def fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        if not np.isfinite(v):
            return str(v)
        return f"{v:.1f}" if abs(v) >= 100 else f"{v:.3f}"
    return str(v)


def summary_rows(out: dict) -> tuple[list[str], list[list[str]]]:
    """Header and rows (one per reducer) of the summary table: the columns present in any
    result, from :data:`SUMMARY_COLUMNS`."""
    flat = {n: {**r["tasks"], **r["measures"]} for n, r in out["results"].items()}
    cols = [(k, h) for k, h, _ in SUMMARY_COLUMNS if any(k in f for f in flat.values())]
    header = ["reducer", *(h for _, h in cols)]
    rows = [[n, *(fmt(f.get(k)) for k, _ in cols)] for n, f in flat.items()]
    return header, rows


def summary_table(out: dict) -> Any:
    """A :class:`rich.table.Table` of the main metrics per reducer."""
    from rich.table import Table

    setting = out["setting"]
    table = Table(title=f"modgap bench — {setting['protocol']}: {setting['protocol_note']}")
    header, rows = summary_rows(out)
    for i, h in enumerate(header):
        table.add_column(h, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*row)
    return table


def summary_markdown(out: dict) -> str:
    """The summary table as Markdown (for docs)."""
    header, rows = summary_rows(out)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)
