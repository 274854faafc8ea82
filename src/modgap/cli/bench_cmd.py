"""``modgap bench INPUT... --out DIR``: every reducer (and score correction) × every applicable
task × every gap measure, over repeated random splits; a table with intervals and one verdict
line per task in the terminal, and ``results.json`` with a self-contained ``report.html``
written into DIR as one unit. Several embedding sets are benchmarked side by side."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from .._lists import name_list
from ..errors import ModgapError
from . import cli
from ._options import (
    INPUT_PATH,
    OUTPUT_PATH,
    Streaming,
    fit_sample_option,
    folds_option,
    k_option,
    pairs_option,
    parse_ks,
    parse_params,
    repeats_option,
    run_options,
    sample_queries_option,
    stream_options,
)


def split_inputs(inputs: tuple[str, ...] | list[str]) -> list[tuple[str, str | None]]:
    """Positional inputs as (path, texts) sets: a ``.npy`` file takes the following ``.npy``
    as its texts; every other input (``.npz``, a folder, parquet, safetensors, ``.pt``) is a set
    by itself."""
    out: list[tuple[str, str | None]] = []
    items = list(inputs)
    i = 0
    while i < len(items):
        path = items[i]
        if Path(path).suffix.lower() == ".npy":
            if i + 1 >= len(items) or Path(items[i + 1]).suffix.lower() != ".npy":
                raise ModgapError(
                    f"{path}: a .npy input needs its texts .npy right after it "
                    "(modgap bench IMAGES.npy TEXTS.npy --out DIR)"
                )
            out.append((path, items[i + 1]))
            i += 2
        else:
            out.append((path, None))
            i += 1
    return out


def _reducer_params(items: tuple[str, ...]) -> dict[str, dict]:
    """``--param spectral.n_components=120`` -> ``{"spectral": {"n_components": 120}}``."""
    out: dict[str, dict] = {}
    for item in items:
        head, sep, _ = item.partition("=")
        name, dot, key = head.partition(".")
        if not sep or not dot or not name or not key:
            raise ModgapError(f"--param wants REDUCER.KEY=VALUE, got '{item}'")
        out.setdefault(name.strip(), {}).update(parse_params([f"{key}={item.partition('=')[2]}"]))
    return out


def _names(sets: list[tuple[str, str | None]]) -> list[str]:
    names, seen = [], {}
    for path, _ in sets:
        stem = Path(path).stem if Path(path).suffix else Path(path).name
        seen[stem] = seen.get(stem, 0) + 1
        names.append(stem if seen[stem] == 1 else f"{stem}-{seen[stem]}")
    return names


def run_bench_cli(
    inputs: list[str] | tuple[str, ...] | str,
    out: str,
    pairs: str | None = None,
    reducers: str | None = None,
    transductive: bool = False,
    test_fraction: float = 0.5,
    ks: str = "1,5,10",
    *,
    repeats: int = 5,
    params: tuple[str, ...] = (),
    corrections: str | None = None,
    folds: int | None = None,
    progress: bool = True,
    quiet: bool = False,
    compute: Any = None,
    result_format: str = "modgap",
    labels: tuple[str | None, str | None] = (None, None),
    streaming: Streaming | None = None,
    sample_queries: int | None = 10_000,
    fit_sample: int | None = None,
) -> dict:
    """What ``modgap bench`` does; returns the results document. A set streams
    (:func:`modgap.bench.stream.run_bench_stream`) with ``--stream``, ``--engine dask``, an
    fsspec URL, or when its in-memory run would not fit in the memory available."""
    from rich.console import Console

    from ..bench import check_options, run_bench
    from ..compute import resolve
    from ..errors import notice
    from ..files import check_output_folder, check_paths
    from ..io import read_embeddings
    from ..report import bench_document, summary_table, write_bench
    from ..stream.fit import DEFAULT_FIT_SAMPLE
    from ..workflow import fitted_rows_warning
    from ._options import open_streaming
    from ._output import table_console

    compute = resolve(compute)
    if isinstance(inputs, str):
        inputs = [inputs]
    sets = split_inputs(inputs)
    if pairs is not None and len(sets) > 1:
        raise ModgapError("--pairs goes with a single input; give each set its own pairing")
    k_list = parse_ks(ks)
    reducer_params = _reducer_params(params)
    correction_list = name_list(corrections) or []
    # unknown reducers, corrections or parameters fail before any data is read
    names, _ = check_options(reducers, correction_list, reducer_params, repeats, test_fraction)
    reads = [("the input", p) for p, _ in sets] + [("the texts file", t) for _, t in sets]
    check_paths(reads=[*reads, ("--pairs", pairs)], writes=[("--out", out)])
    check_output_folder(out, "results.json", "--out")
    warnings = []
    for path, _ in sets:
        w = fitted_rows_warning(path)
        if w is not None:
            notice(w)
            warnings.append(w)
    streaming = (streaming or Streaming()).check()
    # which sets stream is decided (headers only) before any set is read
    sources = {
        name: open_streaming(p, t, pairs, streaming.stream, streaming.engine, "bench")
        for name, (p, t) in zip(_names(sets), sets, strict=True)
    }
    embs = {
        name: read_embeddings(p, t, pairs=pairs)
        for name, (p, t) in zip(_names(sets), sets, strict=True)
        if sources[name] is None
    }
    runs, views = {}, {}
    err = Console(stderr=True)
    engine = None
    if any(s is not None for s in sources.values()):
        engine = streaming.make_engine()
    shared = dict(
        reducers=names,
        transductive=transductive,
        repeats=repeats,
        test_fraction=test_fraction,
        reducer_params=reducer_params,
        corrections=correction_list,
        ks=k_list,
        folds=folds,
        progress=progress and not quiet,
        compute=compute,
    )
    for name in sources:
        if sources[name] is not None:
            from ..bench.stream import run_bench_stream

            runs[name], views[name] = run_bench_stream(
                sources[name],
                sample_queries=sample_queries,
                fit_sample=DEFAULT_FIT_SAMPLE if fit_sample is None else fit_sample,
                engine=engine,
                **shared,
            )
        else:
            runs[name], views[name] = run_bench(embs[name], console=err, **shared)
    if not any(r["results"] for r in runs.values()):
        reasons = "; ".join(f"{n}: {why}" for r in runs.values() for n, why in r["skipped"].items())
        raise ModgapError(f"every reducer failed, nothing written ({reasons})")
    document = bench_document(runs, warnings)
    records = None
    if result_format == "clip_benchmark":
        from ..report.clip_benchmark import bench_records

        metadata = {
            name: dict(embs[name].metadata) if name in embs else {"streamed": True} for name in runs
        }
        records = bench_records(document, labels[0], labels[1], metadata=metadata)
    write_bench(document, views, out, records=records)
    if not quiet:
        con = table_console(width=200)
        for name, run in runs.items():
            title = f"{name} — {run['setting']['protocol']}: {run['setting']['protocol_note']}"
            con.print(summary_table(run, title=title))
            for task, lines in run["verdicts"].items():
                con.print(f"{task}: " + "; ".join(lines), soft_wrap=True, highlight=False)
            for row, reason in run["skipped"].items():
                con.print(f"skipped {row}: {reason}", soft_wrap=True, highlight=False)
        con.print(
            f"wrote {out}/results.json and {out}/report.html", soft_wrap=True, highlight=False
        )
    return document


@cli.command("bench")
@click.argument("inputs", nargs=-1, required=True, type=INPUT_PATH, metavar="INPUT...")
@click.option(
    "--out", "-o", required=True, type=OUTPUT_PATH, metavar="DIR", help="Output folder (one unit)."
)
@pairs_option
@click.option(
    "--reducers",
    default=None,
    metavar="NAMES",
    help="Comma-separated reducer names and/or 'none' (default: all).",
)
@click.option(
    "--corrections",
    default=None,
    metavar="NAMES",
    help="Retrieval-time score corrections to add as rows (csls, inverted-softmax, qb-norm).",
)
@click.option(
    "--param",
    "params",
    multiple=True,
    metavar="REDUCER.KEY=VALUE",
    help="Reducer parameter, e.g. spectral.n_components=120 (repeatable).",
)
@repeats_option(5)
@click.option(
    "--transductive", is_flag=True, help="Fit reducers on the evaluated images (as the paper)."
)
@click.option(
    "--test-fraction",
    type=float,
    default=0.5,
    show_default=True,
    help="Share of images evaluated in each split.",
)
@k_option
@folds_option
@click.option(
    "--format",
    "result_format",
    type=click.Choice(["modgap", "clip_benchmark"]),
    default="modgap",
    show_default=True,
    help="clip_benchmark: also write CLIP_benchmark records (one per data set, row and task) "
    "into DIR/clip_benchmark/.",
)
@click.option("--model", "model_label", default=None, help="Model label of the records.")
@click.option("--pretrained", "pretrained_label", default=None, help="Pretrained label.")
@sample_queries_option
@fit_sample_option
@stream_options
@run_options
def bench_command(model_label, pretrained_label, run, **params) -> None:
    """Benchmark gap reducers on one or more embedding sets: each reducer (and none) ×
    retrieval, zero-shot, clustering, mixed search × every gap measure, held-out by default,
    over repeated splits. A .npy input takes the next .npy as its texts."""
    run(run_bench_cli)(**params, labels=(model_label, pretrained_label), **run.options())
