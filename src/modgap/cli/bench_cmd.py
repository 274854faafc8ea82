"""``modgap bench INPUT --out DIR [--reducers a,b] [--transductive] [--test-fraction 0.5]``:
every reducer × every applicable task × every gap measure; a table in the terminal, and
``results.json`` with a self-contained ``report.html`` written into DIR as one unit."""

from __future__ import annotations

from typing import Any

import click

from . import cli
from ._options import (
    compute_options,
    folds_option,
    k_option,
    make_compute,
    output_options,
    pairs_option,
    parse_ks,
    run_with,
)


def run_bench_cli(
    inputs: str,
    out: str,
    texts: str | None = None,
    pairs: str | None = None,
    reducers: str | None = None,
    transductive: bool = False,
    test_fraction: float = 0.5,
    ks: str = "1,5,10",
    *,
    folds: int | None = None,
    progress: bool = True,
    quiet: bool = False,
    compute: Any = None,
) -> dict:
    """What ``modgap bench`` does; returns the results document."""
    from rich.console import Console

    from ..bench import reducer_names, run_bench
    from ..compute import resolve
    from ..errors import ModgapError
    from ..files import check_output_folder, check_paths
    from ..io import read_embeddings
    from ..report import summary_table, write_bench
    from ._output import table_console

    compute = resolve(compute)
    k_list = parse_ks(ks)
    names = reducer_names(reducers)  # unknown names fail before any data is read
    if not 0 < test_fraction < 1:
        raise ModgapError(f"--test-fraction must be in (0, 1), got {test_fraction}")
    check_paths(
        reads=[("the input", inputs), ("the texts file", texts), ("--pairs", pairs)],
        writes=[("--out", out)],
    )
    check_output_folder(out, "results.json", "--out")
    emb = read_embeddings(inputs, texts, pairs=pairs)
    result, views = run_bench(
        emb,
        reducers=names,
        transductive=transductive,
        seed=compute.seed,
        test_fraction=test_fraction,
        ks=k_list,
        progress=progress and not quiet,
        console=Console(stderr=True),
    )
    if not result["results"]:
        reasons = "; ".join(f"{n}: {why}" for n, why in result["skipped"].items())
        raise ModgapError(f"every reducer failed, nothing written ({reasons})")
    write_bench(result, views, out)
    if not quiet:
        con = table_console(width=160)
        con.print(summary_table(result))
        for name, reason in result["skipped"].items():
            con.print(f"skipped {name}: {reason}", soft_wrap=True, highlight=False)
        for name, res in result["results"].items():
            if res["protocol"].startswith("transductive") and not transductive:
                con.print(f"note: {name} was fitted {res['protocol']}", highlight=False)
        con.print(
            f"wrote {out}/results.json and {out}/report.html", soft_wrap=True, highlight=False
        )
    return result


@cli.command("bench")
@click.argument("inputs", metavar="INPUT")
@click.argument("texts", required=False, metavar="[TEXTS]")
@click.option("--out", "-o", required=True, metavar="DIR", help="Output folder (one unit).")
@pairs_option
@click.option(
    "--reducers",
    default=None,
    metavar="NAMES",
    help="Comma-separated reducer names and/or 'none' (default: all).",
)
@click.option(
    "--transductive", is_flag=True, help="Fit reducers on the evaluated set (as the paper)."
)
@click.option(
    "--test-fraction",
    type=float,
    default=0.5,
    show_default=True,
    help="Share of images held out for evaluation.",
)
@k_option
@folds_option
@compute_options
@output_options
def bench_command(
    inputs,
    texts,
    out,
    pairs,
    reducers,
    transductive,
    test_fraction,
    ks,
    folds,
    device,
    memory_budget,
    threads,
    seed,
    no_progress,
    quiet,
) -> None:
    """Benchmark gap reducers: each reducer (and none) × retrieval, zero-shot, clustering,
    mixed search × every gap measure. Held-out evaluation by default."""
    compute = make_compute(device, memory_budget, threads, seed)
    run_with(compute, quiet)(run_bench_cli)(
        inputs,
        out,
        texts,
        pairs,
        reducers,
        transductive,
        test_fraction,
        ks,
        folds=folds,
        progress=not no_progress,
        quiet=quiet,
        compute=compute,
    )
