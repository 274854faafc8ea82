"""``modgap measure INPUT [TEXTS] [--pairs FILE] [--json OUT] [--only NAMES]``: every gap
measure of one embedding set, as a table and (optionally) a JSON file."""

from __future__ import annotations

import math
from typing import Any

import click

from .._lists import name_list
from . import cli
from ._options import (
    INPUT_PATH,
    Streaming,
    json_option,
    pairs_option,
    run_options,
    sample_queries_option,
    stream_options,
)

#: row label -> (one-line meaning, the value without a gap / by chance), in report order; the
#: hubness and RMG rows read their chance value from the result itself (``*_chance``)
DESCRIPTIONS: dict[str, tuple[str, str]] = {
    "centroid_gap": ("‖mean(X) − mean(Y)‖ (unit rows)", "0"),
    "centroid_cosine": ("cos(mean X, mean Y)", "1"),
    "gap_dims_50": ("dimensions carrying 50% of ‖Δ‖²", ""),
    "gap_dims_90": ("dimensions carrying 90% of ‖Δ‖²", ""),
    "linear_separability": (
        "held-out balanced accuracy, image-vs-text probe; below 0.5 reads as chance",
        "0.5 (chance)",
    ),
    "rmg": (
        "relative modality gap d_M / (d_M + (d_I + d_T)/2) (Schrodi et al.); 0 = no gap, chance "
        "= its value when pairs carry no information (d_M = mean over all pairs), not 0.5",
        "chance",
    ),
    "itr": ("image queries: #nearest is image / #nearest is text", "≈ 1 (n = m)"),
    "tir": ("text queries: #nearest is text / #nearest is image", "≈ 1 (n = m)"),
    "tmr": ("image queries: mean rank of the first text", "≈ 2 (n = m)"),
    "imr": ("text queries: mean rank of the first image", "≈ 2 (n = m)"),
    "tir_excl_siblings": ("TIR with the query's sibling captions left out", "≈ 1 (n = m)"),
    "imr_excl_siblings": ("IMR with the query's sibling captions left out", "≈ 2 (n = m)"),
    "frechet_distance": ("Fréchet distance of the Gaussian fits", "0"),
    "frechet_centroid_term": ("its centroid term ‖μ_X − μ_Y‖²", "0"),
    "frechet_covariance_term": ("its covariance term Tr(Σ_X + Σ_Y − 2(Σ_XΣ_Y)^½)", "0"),
    "hubness_skew_t2i": ("skewness of how often each image is in a text's top 10", "chance"),
    "antihub_share_t2i": ("share of images in no text's top 10", "chance"),
    "hubness_skew_i2t": ("skewness of how often each text is in an image's top 10", "chance"),
    "antihub_share_i2t": ("share of texts in no image's top 10", "chance"),
    "alignment": ("mean ‖x − y‖² over matched pairs", "0"),
    "uniformity_image": ("log mean exp(−2‖u − v‖²), images", "→ −4 (uniform)"),
    "uniformity_text": ("log mean exp(−2‖u − v‖²), texts", "→ −4 (uniform)"),
    "uniformity_cross": ("log mean exp(−2‖x − y‖²), image-text", "→ −4 (uniform)"),
    "matched_cosine_mean": ("cosine of matched pairs: mean", ""),
    "matched_cosine_std": ("cosine of matched pairs: std", ""),
    "unmatched_cosine_mean": ("cosine of unmatched pairs: mean", ""),
    "unmatched_cosine_std": ("cosine of unmatched pairs: std", ""),
}

#: why a measure of rows transformed with their own statistics is not read against chance
OWN_STATISTICS = (
    "rows transformed with their own statistics (the reducer was fitted on them): the probe's "
    "held-out rows are not new to the transform and the accuracy can read below chance, which "
    "is no gap decrease; judge a reducer with 'modgap bench'"
)


def format_value(value: Any) -> str:
    """Numbers for the table: 4 significant digits, integers as they are, ``inf`` spelled."""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return f"{value:.4g}"
    if isinstance(value, list):
        return ", ".join(format_value(v) for v in value)
    return str(value)


def results_table(results: dict, title: str | None = None):
    """A rich table of the flat measure results (nested details summarised)."""
    from rich.table import Table

    table = Table(title=title)
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_column("no gap / chance", justify="right")
    table.add_column("meaning", style="dim")
    estimates = results.get("estimates", {})
    for key, (meaning, reference) in DESCRIPTIONS.items():
        if key in results:
            if reference == "chance":
                reference = format_value(results.get(f"{key}_chance"))
            shown = format_value(results[key])
            est = estimates.get(key)
            if est is not None and not est["exact"]:  # a sampled estimate: its interval
                lo, hi = est["interval"]
                shown += f" [{format_value(lo)}, {format_value(hi)}]"
            why = results.get("own_statistics", {}).get(key)
            if why is not None:  # not read against its chance level
                shown += " †"
                reference, meaning = "not comparable", why
            table.add_row(key, shown, reference, meaning)
            if key == "gap_dims_90" and "per_dimension" in results:
                top = results["per_dimension"]
                shares = ", ".join(
                    f"{d} ({s:.0%})"
                    for d, s in zip(top["top_dims"][:5], top["top_share"][:5], strict=False)
                )
                table.add_row("gap_top_dims", shares, "", "largest Δ_k² (share of ‖Δ‖²)")
    for name, reason in results.get("skipped", {}).items():
        table.add_row(name, "skipped", "", reason)
    if "streaming" in results:
        st = results["streaming"]
        where = f"{st['shards']} shard(s), engine {st['engine']}"
        if st.get("sampled", True):  # a sample row only when some measure drew the sample
            q = st["sample_queries"]
            table.add_row(
                "sampled",
                f"{q['images']:,} / {q['texts']:,}",
                "",
                f"queries (images / texts) of the estimates; [..] = 95% interval; {where}",
            )
        else:
            table.add_row("streamed", "exact", "", f"every value from one pass; {where}")
    return table


def _split_names(only: str | None) -> list[str] | None:
    return name_list(only)


def run_measure(
    images: str,
    texts: str | None = None,
    pairs: str | None = None,
    json_out: str | None = None,
    only: str | None = None,
    *,
    progress: bool = True,
    quiet: bool = False,
    compute: Any = None,
    streaming: Streaming | None = None,
    sample_queries: int | None = 10_000,
) -> dict:
    """What ``modgap measure`` does; returns the document written to ``--json``."""
    from ..compute import resolve
    from ..errors import notice
    from ..files import check_paths
    from ..io import read_embeddings
    from ..measures import resolve_measures
    from ..provenance import jsonable, provenance
    from ..workflow import fitted_rows_warning
    from ._output import announce_replace, print_and_save

    streaming = (streaming or Streaming()).check()
    compute = resolve(compute)
    names = _split_names(only)
    selected = resolve_measures(names)  # unknown names fail before any data is read
    check_paths(
        reads=[("the input", images), ("the texts file", texts), ("--pairs", pairs)],
        writes=[("--json", json_out)],
    )
    announce_replace(json_out)
    leak = fitted_rows_warning(images)
    if leak is not None:
        notice(leak)
    source = streaming.open(images, texts, pairs)
    keys = ("n_images", "n_texts", "dim", "paired")
    if source is not None:
        results = _stream_results(
            source, names, streaming, sample_queries, compute, progress and not quiet
        )
        counts = source.describe()
        keys, extra = (*keys, "shards"), {"sample_queries": sample_queries}
        title = (
            f"modality gap (streamed): {counts['n_images']:,} images, "
            f"{counts['n_texts']:,} texts, d={counts['dim']}"
        )
    else:
        emb = read_embeddings(images, texts, pairs=pairs)
        results = _memory_results(emb, names, selected, compute, progress and not quiet)
        counts, extra = emb.describe(), {}
        texts_are = (
            f"{counts['n_texts']} texts"
            if emb.has_texts
            else f"{counts['n_classes']} class prompts (no captions)"
        )
        title = f"modality gap: {counts['n_images']} images against {texts_are}, d={counts['dim']}"
    if leak is not None and "linear_separability" in results:
        results["own_statistics"] = {"linear_separability": OWN_STATISTICS}
    document = {
        "measures": jsonable(results),
        "provenance": provenance(
            inputs={"images": images, "texts": texts, "pairs": pairs},
            counts={k: counts[k] for k in keys},
            seed=compute.seed,
            compute=compute.describe(),
            only=names,
            **extra,
        ),
    }
    if leak is not None:
        document["warnings"] = [leak]
    print_and_save(results_table(results, title=title), document, json_out, quiet=quiet)
    return document


def _memory_results(emb, names, selected, compute, progress: bool) -> dict:
    """Every selected measure of an in-memory set, with a progress bar over the measures."""
    from .._progress import progress as progress_bar
    from ..measures import MEASURES, measure_all

    todo = [n for n in selected if emb.has_pairs or not MEASURES[n].needs_pairs]
    with progress_bar("measuring", total=len(todo), enabled=progress) as bar:
        started: list[str] = []

        def step(name: str) -> None:
            started.append(name)
            bar.update(completed=len(started) - 1, description=f"measuring {name}")

        def partial(name: str, fraction: float) -> None:
            bar.update(completed=len(started) - 1 + fraction)

        results = measure_all(
            emb, only=names, progress=step, progress_fraction=partial, compute=compute
        )
        bar.update(completed=len(todo))
    return results


def _stream_results(source, names, streaming, sample_queries, compute, progress: bool) -> dict:
    """The measures of a streamed source (:func:`modgap.stream.stream_measures`)."""
    from ..stream import stream_measures

    eng = streaming.make_engine()
    try:
        return stream_measures(
            source,
            names,
            sample_queries=sample_queries,
            engine=eng,
            compute=compute,
            progress=progress,
        )
    finally:
        eng.close()


@cli.command("measure")
@click.argument("images", type=INPUT_PATH, metavar="INPUT")
@click.argument("texts", required=False, type=INPUT_PATH, metavar="[TEXTS]")
@pairs_option
@json_option
@click.option(
    "--only",
    default=None,
    metavar="NAMES",
    help="Comma-separated measures (centroid, per_dimension, linear_separability, rmg, "
    "neighbours, frechet_distance, alignment, uniformity, cosine) or result keys.",
)
@stream_options
@sample_queries_option
@run_options
def measure_command(run, **params) -> None:
    """Every gap measure of one embedding set: centroid gap, separability, RMG,
    mixed-neighbour ratios, Fréchet distance, alignment/uniformity, cosine statistics.

    INPUT is one file or folder holding both modalities (.npz, clip-retrieval folder, parquet,
    safetensors, .pt), or the image .npy / .parquet file with TEXTS the text one.
    """
    run(run_measure)(**params, **run.options())
