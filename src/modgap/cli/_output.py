"""What the result-printing commands share: a console for the table and the JSON document."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from ..files import write_json


def table_console(width: int = 120) -> Console:
    """The terminal as it is; files and pipes get a fixed width so tables do not wrap."""
    console = Console()
    return console if console.is_terminal else Console(width=width)


def print_and_save(table, document: dict, json_out: str | Path | None, width: int = 120) -> None:
    """Print ``table``, then write ``document`` as strict JSON to ``json_out`` when given."""
    out = table_console(width)
    out.print(table)
    if json_out is not None:
        write_json(json_out, document)
        out.print(f"wrote {json_out}", soft_wrap=True, highlight=False)
