"""What the result-printing commands share: where the table goes, and the JSON document."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from rich.console import Console


def table_console(width: int = 120, stderr: bool = False) -> Console:
    """The terminal as it is; files and pipes get a fixed width so tables do not wrap."""
    console = Console(stderr=stderr)
    return console if console.is_terminal else Console(width=width, stderr=stderr)


def announce_replace(path: str | Path | None) -> None:
    """One notice line when an output replaces an existing file."""
    from ..errors import notice

    if path is not None and str(path) != "-" and Path(path).exists():
        notice(f"replacing the existing {path}")


def print_and_save(
    table,
    document: dict,
    json_out: str | Path | None,
    width: int = 120,
    quiet: bool = False,
) -> None:
    """Print ``table``, then write ``document`` as strict JSON to ``json_out`` when given;
    ``json_out == "-"`` writes the JSON to stdout and the table to stderr."""
    from ..files import write_json
    from ..provenance import jsonable

    to_stdout = json_out is not None and str(json_out) == "-"
    out = table_console(width, stderr=to_stdout)
    if not quiet:
        out.print(table)
    if to_stdout:
        sys.stdout.write(json.dumps(jsonable(document), indent=2, allow_nan=False) + "\n")
        sys.stdout.flush()
    elif json_out is not None:
        write_json(json_out, document)
        if not quiet:
            out.print(f"wrote {json_out}", soft_wrap=True, highlight=False)
