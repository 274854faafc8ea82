"""Benchmark reports: the self-contained HTML page and its matplotlib figures."""

from .html import render_report, write_report

__all__ = ["render_report", "write_report"]
