"""``modgap bench INPUT --out DIR [--reducers a,b] [--transductive] [--test-fraction 0.5]
[--seed 0]``: every reducer × every applicable task × every gap measure; a table in the
terminal, ``results.json`` and a self-contained ``report.html``."""

from __future__ import annotations

import typer


def run_bench_cli(
    inputs: str,
    out: str,
    texts: str | None = None,
    pairs: str | None = None,
    reducers: str | None = None,
    transductive: bool = False,
    test_fraction: float = 0.5,
    seed: int = 0,
    ks: str = "1,5,10",
    progress: bool = True,
) -> dict:
    """What ``modgap bench`` does; returns the results document."""
    from rich.console import Console

    from ..bench import _reducer_names, run_bench, summary_table
    from ..io import read_embeddings
    from ._output import table_console
    from .eval_cmd import parse_ks

    k_list = parse_ks(ks)
    names = _reducer_names(reducers)  # unknown names fail before any data is read
    emb = read_embeddings(inputs, texts, pairs=pairs)
    err = Console(stderr=True)
    result = run_bench(
        emb,
        reducers=names,
        out_dir=out,
        transductive=transductive,
        seed=seed,
        test_fraction=test_fraction,
        ks=k_list,
        progress=progress,
        console=err,
    )
    con = table_console(width=160)
    con.print(summary_table(result))
    for name, reason in result["skipped"].items():
        con.print(f"skipped {name}: {reason}", soft_wrap=True, highlight=False)
    for name, res in result["results"].items():
        if res["protocol"].startswith("transductive") and not transductive:
            con.print(f"note: {name} was fitted {res['protocol']}", highlight=False)
    con.print(f"wrote {out}/results.json and {out}/report.html", soft_wrap=True, highlight=False)
    return result


def register(app: typer.Typer) -> None:
    @app.command("bench")
    def bench_command(
        inputs: str = typer.Argument(..., help="Embeddings (.npz, folder, or image .npy)."),
        texts: str | None = typer.Argument(None, help="Text embeddings when in a second file."),
        out: str = typer.Option(..., "--out", help="Output folder (results.json, report.html)."),
        pairs: str | None = typer.Option(
            None, "--pairs", help="text_to_image: one image index per text."
        ),
        reducers: str | None = typer.Option(
            None, "--reducers", help="Comma-separated reducer names and/or 'none' (default: all)."
        ),
        transductive: bool = typer.Option(
            False, "--transductive", help="Fit reducers on the evaluated set (as the paper)."
        ),
        test_fraction: float = typer.Option(
            0.5, "--test-fraction", help="Share of images held out for evaluation."
        ),
        seed: int = typer.Option(0, "--seed", help="Split, k-means and measure seed."),
        ks: str = typer.Option("1,5,10", "--k", help="Recall@K cut-offs, comma-separated."),
        no_progress: bool = typer.Option(False, "--no-progress", help="No progress bars."),
    ) -> None:
        """Benchmark gap reducers: each reducer (and none) × retrieval, zero-shot, clustering,
        mixed search × every gap measure. Held-out evaluation by default."""
        run_bench_cli(
            inputs,
            out,
            texts,
            pairs,
            reducers,
            transductive,
            test_fraction,
            seed,
            ks,
            not no_progress,
        )
