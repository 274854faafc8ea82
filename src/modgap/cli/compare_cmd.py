"""``modgap compare RESULTS...``: side-by-side results of several models or runs."""

from __future__ import annotations

import click

from ..errors import ModgapError
from . import cli


@cli.command("compare")
@click.argument("inputs", nargs=-1, required=True, metavar="RESULTS...")
def compare_command(inputs) -> None:
    """Compare results.json files or embedding sets side by side."""
    raise ModgapError("modgap compare is not available yet")
