"""``modgap measure IMAGES [TEXTS] [--pairs FILE] [--json OUT] [--only NAMES] [--seed N]``:
every gap measure of one embedding set, as a table and (optionally) a JSON file."""

from __future__ import annotations

import math
from typing import Any

import typer

#: row label and one-line meaning of each flat result key, in report order
DESCRIPTIONS: dict[str, str] = {
    "centroid_gap": "‖mean(X) − mean(Y)‖ (unit rows)",
    "centroid_cosine": "cos(mean X, mean Y)",
    "gap_dims_50": "dimensions carrying 50% of ‖Δ‖²",
    "gap_dims_90": "dimensions carrying 90% of ‖Δ‖²",
    "linear_separability": "held-out accuracy, logistic regression image vs text",
    "rmg": "relative modality gap d_M / (d_M + (d_I + d_T)/2)",
    "itr": "image queries: #nearest is image / #nearest is text",
    "tir": "text queries: #nearest is text / #nearest is image",
    "tmr": "image queries: mean rank of the first text",
    "imr": "text queries: mean rank of the first image",
    "frechet_distance": "Fréchet distance of the Gaussian fits",
    "alignment": "mean ‖x − y‖² over matched pairs",
    "uniformity_image": "log mean exp(−2‖u − v‖²), images",
    "uniformity_text": "log mean exp(−2‖u − v‖²), texts",
    "uniformity_cross": "log mean exp(−2‖x − y‖²), image-text",
    "matched_cosine_mean": "cosine of matched pairs: mean",
    "matched_cosine_std": "cosine of matched pairs: std",
    "unmatched_cosine_mean": "cosine of unmatched pairs: mean",
    "unmatched_cosine_std": "cosine of unmatched pairs: std",
}


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
    table.add_column("meaning", style="dim")
    for key, meaning in DESCRIPTIONS.items():
        if key in results:
            table.add_row(key, format_value(results[key]), meaning)
            if key == "gap_dims_90" and "per_dimension" in results:
                top = results["per_dimension"]
                shares = ", ".join(
                    f"{d} ({s:.0%})"
                    for d, s in zip(top["top_dims"][:5], top["top_share"][:5], strict=False)
                )
                table.add_row("gap_top_dims", shares, "largest Δ_k² (share of ‖Δ‖²)")
    for name, reason in results.get("skipped", {}).items():
        table.add_row(name, "skipped", reason)
    return table


def _split_names(only: str | None) -> list[str] | None:
    if only is None:
        return None
    names = [n for part in only.split(",") for n in part.split() if n]
    return names or None


def run_measure(
    images: str,
    texts: str | None = None,
    pairs: str | None = None,
    json_out: str | None = None,
    only: str | None = None,
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """What ``modgap measure`` does; returns the document written to ``--json``."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from ..io import read_embeddings
    from ..measures import MEASURES, measure_all, resolve_measures
    from ..provenance import jsonable, provenance
    from ._output import print_and_save

    names = _split_names(only)
    selected = resolve_measures(names)  # unknown names fail before any data is read
    emb = read_embeddings(images, texts, pairs=pairs)
    todo = [n for n in selected if emb.has_pairs or not MEASURES[n][0]]

    err = Console(stderr=True)
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=not progress,
    ) as bar:
        task = bar.add_task("measuring", total=len(todo))
        started: list[str] = []

        def step(name: str) -> None:
            started.append(name)
            bar.update(task, completed=len(started) - 1, description=f"measuring {name}")

        def partial(name: str, fraction: float) -> None:
            bar.update(task, completed=len(started) - 1 + fraction)

        results = measure_all(emb, only=names, seed=seed, progress=step, progress_fraction=partial)
        bar.update(task, completed=len(todo))

    counts = emb.describe()
    document = {
        "measures": jsonable(results),
        "provenance": provenance(
            inputs={"images": images, "texts": texts, "pairs": pairs},
            counts={k: counts[k] for k in ("n_images", "n_texts", "dim", "paired")},
            seed=seed,
            only=names,
        ),
    }
    title = (
        f"modality gap: {counts['n_images']} images, {counts['n_texts']} texts, d={counts['dim']}"
    )
    print_and_save(results_table(results, title=title), document, json_out)
    return document


def register(app: typer.Typer) -> None:
    @app.command("measure")
    def measure_command(
        images: str = typer.Argument(
            ...,
            help="Image embeddings (.npy), or one file/folder holding both "
            "(.npz, clip-retrieval folder, parquet, safetensors, .pt).",
        ),
        texts: str | None = typer.Argument(None, help="Text embeddings when in a second file."),
        pairs: str | None = typer.Option(
            None, "--pairs", help="text_to_image: one image index per text (.npy or text/CSV)."
        ),
        json_out: str | None = typer.Option(
            None, "--json", help="Write the results and their provenance to this JSON file."
        ),
        only: str | None = typer.Option(
            None,
            "--only",
            help="Comma-separated measures (centroid, per_dimension, linear_separability, rmg, "
            "neighbours, frechet_distance, alignment, uniformity, cosine) or result keys.",
        ),
        seed: int = typer.Option(0, "--seed", help="Seed of every subsample and split."),
        no_progress: bool = typer.Option(False, "--no-progress", help="No progress bar."),
    ) -> None:
        """Measure the modality gap of an embedding set: centroid gap, separability, RMG,
        mixed-neighbour ratios, Fréchet distance, alignment/uniformity, cosine statistics."""
        run_measure(images, texts, pairs, json_out, only, seed, progress=not no_progress)
