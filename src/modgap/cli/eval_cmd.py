"""``modgap eval INPUT [TEXTS] [--json OUT] [--tasks ...] [--k 1,5,10] [--encoder SPEC]``:
the downstream tasks an embedding set supports (retrieval, zero-shot, clustering, mixed
search), as a table and (optionally) a JSON file."""

from __future__ import annotations

from typing import Any

import click

from .._lists import name_list
from ..errors import ModgapError
from . import cli
from ._options import (
    INPUT_PATH,
    Streaming,
    folds_option,
    json_option,
    k_option,
    pairs_option,
    parse_ks,
    results_format_options,
    run_options,
    sample_queries_option,
    stream_options,
)

#: row label -> meaning, in table order
DESCRIPTIONS: dict[str, str] = {
    "image_retrieval_recall@": "text → image Recall@K",
    "text_retrieval_recall@": "image → text Recall@K (best-ranked caption)",
    "rsum": "sum of the Recall@K both ways, percent",
    "i2t_median_rank": "image → text median rank",
    "i2t_mean_rank": "image → text mean rank",
    "t2i_median_rank": "text → image median rank",
    "t2i_mean_rank": "text → image mean rank",
    "acc1": "zero-shot top-1 accuracy",
    "acc5": "zero-shot top-5 accuracy",
    "mean_per_class_recall": "zero-shot balanced accuracy",
    "prediction_entropy": "zero-shot: normalised entropy of the predicted classes",
    "label_entropy": "the same for the true labels (what an even classifier would match)",
    "prediction_top_share": "zero-shot: share of predictions in the most predicted class",
    "label_top_share": "the largest true class share",
    "cluster_ami": "k-means adjusted mutual information vs classes (chance 0)",
    "cluster_ari": "k-means adjusted Rand index vs classes (chance 0)",
    "pair_coclustering": "k-means: share of pairs whose image and text share a cluster",
    "pair_coclustering_chance": "the same for a random image and text, these cluster sizes",
    "modality_purity": "k-means clusters: majority-modality share (1 = split by modality)",
    "modality_purity_blind": "modality purity of modality-blind clusters",
    "n_clusters": "k of k-means",
    "mixed_recall@": "mixed corpus: partner in the top K",
    "mixed_image_query_recall@": "mixed corpus, image queries",
    "mixed_text_query_recall@": "mixed corpus, text queries",
    "mixed_same_modality@": "mixed corpus: share of the top K in the query's modality",
}


def _meaning(key: str) -> str:
    for prefix, text in DESCRIPTIONS.items():
        if key == prefix or (prefix.endswith("@") and key.startswith(prefix)):
            return text.replace("K", key.split("@")[1]) if "@" in key else text
    return ""


def run_eval(
    inputs: str,
    texts: str | None = None,
    pairs: str | None = None,
    json_out: str | None = None,
    tasks: str | None = None,
    ks: str = "1,5,10",
    encoder: str | None = None,
    *,
    folds: int | None = None,
    progress: bool = True,
    quiet: bool = False,
    compute: Any = None,
    result_format: str = "modgap",
    labels: tuple[str | None, str | None, str | None] = (None, None, None),
    streaming: Streaming | None = None,
    sample_queries: int | None = 10_000,
) -> dict:
    """What ``modgap eval`` does; returns the document written to ``--json`` (with
    ``result_format="clip_benchmark"``, the records written there)."""
    from rich.table import Table

    from .._progress import progress as progress_bar
    from ..compute import resolve
    from ..errors import notice
    from ..files import check_paths
    from ..io import read_embeddings
    from ..provenance import jsonable, provenance
    from ..tasks.suite import run_tasks
    from ..workflow import fitted_rows_warning
    from ._output import announce_replace, print_and_save

    streaming = (streaming or Streaming()).check()
    compute = resolve(compute)
    k_list = parse_ks(ks)
    task_list = name_list(tasks)
    if result_format == "clip_benchmark" and json_out is None:
        raise ModgapError("--format clip_benchmark writes records: give --json NAME_{task}.json")
    if result_format == "clip_benchmark" and str(json_out) != "-":
        from ..report.clip_benchmark import check_template

        check_template(json_out)  # a bad template fails before any work, not after it
    check_paths(
        reads=[("the input", inputs), ("the texts file", texts), ("--pairs", pairs)],
        writes=[("--json", json_out)],
    )
    announce_replace(json_out)
    warnings = []
    leak = fitted_rows_warning(inputs)
    if leak is not None:
        notice(leak)
        warnings.append(leak)
    source = streaming.open(inputs, texts, pairs)
    if source is not None:
        if encoder is not None:
            raise ModgapError(
                "--encoder needs the set in memory, and this one is streamed (--stream, "
                "--engine, or larger than the memory budget); drop --encoder"
            )
        results, counts = _eval_stream(
            source,
            task_list,
            k_list,
            streaming,
            sample_queries,
            progress and not quiet,
            compute,
            folds,
        )
        emb = None
    else:
        emb = read_embeddings(inputs, texts, pairs=pairs)
    if emb is not None:
        enc = None
        if encoder is not None:
            from ..encoders import load_encoder

            enc = load_encoder(encoder, device=compute.device)
        with progress_bar("evaluating", enabled=progress and not quiet) as bar:
            results = run_tasks(
                emb,
                task_list,
                ks=k_list,
                encoder=enc,
                folds=folds,
                progress=lambda name: bar.describe(f"task: {name}"),
                compute=compute,
            )
        counts = emb.describe()
    document = {
        "tasks": jsonable(results),
        "warnings": warnings,
        "provenance": provenance(
            inputs={"input": inputs, "texts": texts, "pairs": pairs},
            counts=counts,
            seed=compute.seed,
            compute=compute.describe(),
            ks=list(k_list),
            folds=folds,
            encoder=encoder,
            metadata=dict(emb.metadata) if emb is not None else {"streamed": True},
        ),
    }
    table = Table(
        title=f"tasks: {counts['n_images']} images, {counts['n_texts']} texts, d={counts['dim']}"
    )
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("meaning", style="dim")
    for key, value in results.items():
        if key in ("skipped", "estimates", "sampling"):
            continue
        shown = (
            f"{value:.1f}"
            if key == "rsum"
            else (f"{value:.4g}" if isinstance(value, float) else str(value))
        )
        est = results.get("estimates", {}).get(key)
        if est is not None and not est["exact"]:  # a streamed estimate: its 95% interval
            shown += f" [{est['interval'][0]:.4g}, {est['interval'][1]:.4g}]"
        table.add_row(key, shown, _meaning(key))
    for name, reason in results.get("skipped", {}).items():
        table.add_row(name, "skipped", reason)
    if result_format == "clip_benchmark":
        from ..report.clip_benchmark import eval_records, label_defaults

        defaults = label_defaults(inputs, dict(emb.metadata) if emb is not None else {})
        dataset, model, pretrained = (a or b for a, b in zip(labels, defaults, strict=True))
        records = eval_records(results, dataset, model, pretrained)
        _write_records(records, json_out, table, quiet, inputs, texts, pairs)
        return {"records": records}
    print_and_save(table, document, json_out, quiet=quiet)
    return document


def _write_records(records, json_out, table, quiet, *inputs) -> None:
    """CLIP_benchmark records: JSON lines on stdout for ``-``, else one file per record."""
    import json
    import sys

    from ..files import check_paths
    from ..provenance import jsonable
    from ..report.clip_benchmark import record_paths, write_records
    from ._output import table_console

    to_stdout = str(json_out) == "-"
    if not quiet:
        table_console(stderr=to_stdout).print(table)
    if to_stdout:
        for rec in records:
            sys.stdout.write(json.dumps(jsonable(rec), allow_nan=False) + "\n")
        return
    check_paths(
        [("the input", p) for p in inputs],
        [("--json", n) for n in record_paths(records, json_out)],
    )
    for path in write_records(records, json_out):
        if not quiet:
            table_console().print(f"wrote {path}", soft_wrap=True, highlight=False)


def _eval_stream(source, tasks, ks, streaming, sample_queries, progress, compute, folds=None):
    """Every task the streamed source supports (:func:`modgap.stream.tasks.stream_eval`):
    retrieval and mixed search by exact scans (``folds``: retrieval averaged over folds of
    the images, the in-memory rule), zero-shot exactly with the images streamed, clustering
    on the in-memory sample rule; the rest under ``skipped`` with the reason."""
    from ..stream.tasks import stream_eval

    eng = streaming.make_engine()
    try:
        results = stream_eval(
            source,
            tasks,
            ks,
            sample_queries=sample_queries,
            engine=eng,
            compute=compute,
            progress=progress,
            folds=folds,
        )
    finally:
        eng.close()
    return results, source.describe()


@cli.command("eval")
@click.argument("inputs", type=INPUT_PATH, metavar="INPUT")
@click.argument("texts", required=False, type=INPUT_PATH, metavar="[TEXTS]")
@pairs_option
@json_option
@click.option(
    "--tasks",
    default=None,
    metavar="NAMES",
    help="Comma-separated subset of retrieval, zeroshot, clustering, mixed (default: all that "
    "apply).",
)
@k_option
@folds_option
@click.option(
    "--encoder",
    default=None,
    metavar="SPEC",
    help="Encoder to build class prompts from class_names when the input has no "
    "class_text_emb (e.g. pocket, open_clip:ViT-B-32/openai).",
)
@results_format_options
@stream_options
@sample_queries_option
@run_options
def eval_command(dataset_label, model_label, pretrained_label, run, **params) -> None:
    """The downstream tasks an embedding set supports: cross-modal retrieval (Recall@K, rSum,
    ranks), zero-shot classification, clustering, mixed-modality search."""
    labels = (dataset_label, model_label, pretrained_label)
    run(run_eval)(**params, labels=labels, **run.options())
