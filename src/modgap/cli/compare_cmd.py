"""``modgap compare RESULTS...``: side-by-side results of several models, or of one model
before and after training or reduction, with the uncertainty the benchmark gives."""

from __future__ import annotations

from pathlib import Path

import click

from . import cli
from ._options import INPUT_PATH, OUTPUT_PATH, json_option, repeats_option, run_options


def run_compare(
    inputs, out=None, json_out=None, repeats=5, progress=True, quiet=False, compute=None
) -> dict:
    """What ``modgap compare`` does; returns the comparison document."""
    from rich.table import Table

    from ..files import check_output_folder, check_paths
    from ..report.compare import compare, load_entries, render_compare, write_compare
    from ._output import announce_replace, print_and_save

    reads = [("the input", spec.partition("#")[0]) for spec in inputs]
    check_paths(reads, [("--out", out), ("--json", json_out)])
    if out is not None:
        check_output_folder(out, "compare.json", "--out")
    announce_replace(json_out)
    entries = [
        e
        for spec in inputs
        for e in load_entries(spec, repeats=repeats, compute=compute, progress=progress)
    ]
    doc = compare(entries)
    header, rows = render_compare(doc)
    table = Table(
        title="modgap compare",
        caption="mean ± 95% interval where the input has one; ▲/▼ better/worse than the first "
        "column (interval of the difference excludes 0)",
    )
    for i, h in enumerate(header):
        table.add_column(h, justify="left" if i == 0 else "right")
    for r in rows:
        table.add_row(*r)
    if out is not None:
        write_compare(doc, out)
    print_and_save(table, doc, json_out, width=200, quiet=quiet)
    if out is not None and not quiet:
        from ._output import table_console

        folder = Path(out)  # "cmp/" names the folder, not "cmp//compare.json"
        table_console().print(
            f"wrote {folder / 'compare.json'} and {folder / 'report.html'}", highlight=False
        )
    return doc


@cli.command("compare")
@click.argument("inputs", nargs=-1, required=True, type=INPUT_PATH, metavar="RESULTS...")
@click.option(
    "--out",
    "-o",
    type=OUTPUT_PATH,
    default=None,
    metavar="DIR",
    help="Write compare.json and report.html.",
)
@json_option
@repeats_option(5, " for inputs that are embedding sets (benchmarked here, row none)")
@run_options
def compare_command(run, **params) -> None:
    """Compare several results side by side: benchmark results.json files (PATH#ROW picks a
    row, default none), eval/measure JSON, or embedding sets (benchmarked on the spot)."""
    run(run_compare)(**params, **run.options())
