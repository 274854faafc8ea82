"""Benchmark reports: the self-contained HTML page and its matplotlib figures."""

from .html import bench_document, render_report, write_bench, write_report
from .tables import SUMMARY_COLUMNS, summary_markdown, summary_rows, summary_table

__all__ = [
    "SUMMARY_COLUMNS",
    "bench_document",
    "render_report",
    "summary_markdown",
    "summary_rows",
    "summary_table",
    "write_bench",
    "write_report",
]
