"""Benchmark reports: the self-contained HTML page and its matplotlib figures."""

from .html import bench_document, render_report, write_bench, write_report
from .results import read_results, result_rows, to_frame
from .tables import SUMMARY_COLUMNS, summary_markdown, summary_rows, summary_table

__all__ = [
    "SUMMARY_COLUMNS",
    "bench_document",
    "read_results",
    "render_report",
    "result_rows",
    "summary_markdown",
    "summary_rows",
    "summary_table",
    "to_frame",
    "write_bench",
    "write_report",
]
