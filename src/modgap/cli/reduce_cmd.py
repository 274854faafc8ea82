"""``modgap reduce METHOD INPUT [TEXTS] --out FOLDER``: fit a gap reducer and write the
transformed embeddings (same format as the input), the fitted reducer and ``reduce.json`` into
one output folder; ``modgap reduce --apply MODEL INPUT [TEXTS] --out FOLDER`` transforms new
embeddings with a saved reducer."""

from __future__ import annotations

import click

from ..errors import ModgapError
from . import cli
from ._options import (
    INPUT_PATH,
    OUTPUT_PATH,
    finite,
    fit_sample_option,
    pairs_option,
    parse_params,
    run_options,
    stream_options,
)


def _print_summary(summary: dict) -> None:
    from rich.console import Console

    con = Console()
    counts = summary["provenance"]["counts"]
    con.print(
        f"{summary['reducer']}: {counts['n_images']} images, {counts['n_texts']} texts, "
        f"d={counts['dim_in']} -> {counts['dim_out']}",
        highlight=False,
    )
    for p in summary["outputs"]:
        con.print(f"wrote {p}", soft_wrap=True, highlight=False)
    st = summary.get("streaming")
    if st:
        kept = (
            f", {st['resumed_shards']} kept from an interrupted run" if st["resumed_shards"] else ""
        )
        con.print(
            f"{st['shards']} shard(s) ({st['image_dtype']} / {st['text_dtype']}){kept}",
            highlight=False,
        )
    fo = summary.get("fitted_on") or {}
    if fo.get("how"):
        con.print(f"fit: {fo['how']}", soft_wrap=True, highlight=False)
    if summary["mode"] == "fit":
        con.print(f"saved reducer to {summary['model']}", soft_wrap=True, highlight=False)
    if summary.get("saved_model"):
        con.print(f"saved reducer to {summary['saved_model']}", soft_wrap=True, highlight=False)


@cli.command("reduce")
@click.argument("args", nargs=-1, required=True, type=INPUT_PATH, metavar="METHOD INPUT [TEXTS]")
@click.option(
    "--out",
    "-o",
    required=True,
    type=OUTPUT_PATH,
    metavar="FOLDER",
    help="Output folder (one unit).",
)
@click.option(
    "--apply",
    type=INPUT_PATH,
    default=None,
    metavar="MODEL",
    help="Transform with this saved reducer instead.",
)
@click.option(
    "--save-model",
    type=OUTPUT_PATH,
    default=None,
    metavar="PATH",
    help="Also save the fitted reducer here (it is always in FOLDER/reducer.safetensors).",
)
@pairs_option
@click.option(
    "--param", "-p", multiple=True, metavar="KEY=VALUE", help="Reducer parameter (repeatable)."
)
@click.option(
    "--direction",
    default=None,
    help="gaussian/procrustes/ot-*: images->texts, texts->images or barycenter (quote it).",
)
@click.option("--n-components", type=int, default=None, help="spectral: output dimensions.")
@click.option(
    "--n-neighbors", type=int, default=None, help="spectral: cross-modal neighbours per point."
)
@click.option(
    "--lam", type=float, default=None, callback=finite("--lam"), help="shift: share of the gap."
)
@click.option(
    "--reg", type=float, default=None, callback=finite("--reg"), help="ot-sinkhorn: entropic reg."
)
@click.option(
    "--dtype",
    type=click.Choice(["float16", "float32"]),
    default=None,
    help="Output float type of a clip-retrieval folder or .npy pair (default: the input's).",
)
@stream_options
@fit_sample_option
@run_options
def reduce_command(
    args,
    out,
    apply,
    save_model,
    pairs,
    param,
    direction,
    n_components,
    n_neighbors,
    lam,
    reg,
    dtype,
    streaming,
    fit_sample,
    run,
) -> None:
    """Fit a modality-gap reducer (center, shift, gaussian, procrustes, spectral, ot-laplace,
    ot-sinkhorn) and write the reduced embeddings and the fitted reducer, or apply a saved
    one (--apply). With --apply, give only INPUT [TEXTS]."""
    from ..workflow import reduce_to_folder

    positional = list(args)
    method = None if apply else positional.pop(0)
    if not positional or len(positional) > 2:
        raise ModgapError(
            "usage: modgap reduce METHOD INPUT [TEXTS] --out FOLDER, or "
            "modgap reduce --apply MODEL INPUT [TEXTS] --out FOLDER"
        )
    params = parse_params(param)
    typed = {
        "direction": direction,
        "n_components": n_components,
        "n_neighbors": n_neighbors,
        "lam": lam,
        "reg": reg,
    }
    params.update({k: v for k, v in typed.items() if v is not None})
    # a distributed engine connects here, before any work; the in-process one is the default
    eng = None if streaming.in_process else streaming.make_engine()
    try:
        summary = run(reduce_to_folder)(
            method,
            positional[0],
            positional[1] if len(positional) > 1 else None,
            out,
            apply=apply,
            save_model=save_model,
            pairs=pairs,
            params=params,
            progress=run.progress,
            compute=run.compute,
            stream=streaming.stream or None,
            engine=eng,
            fit_sample=fit_sample,
            dtype=dtype,
        )
    finally:
        if eng is not None:
            eng.close()
    if not run.quiet:
        _print_summary(summary)
