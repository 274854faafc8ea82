"""``modgap eval INPUT [TEXTS] [--json OUT] [--tasks ...] [--k 1,5,10] [--encoder SPEC]``:
the downstream tasks an embedding set supports (retrieval, zero-shot, clustering, mixed
search), as a table and (optionally) a JSON file."""

from __future__ import annotations

import typer

from ..errors import ModgapError

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
    "cluster_nmi": "k-means NMI vs classes / pair ids",
    "cluster_ari": "k-means ARI vs classes / pair ids",
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


def parse_ks(text: str) -> tuple[int, ...]:
    try:
        ks = tuple(int(k) for k in text.split(",") if k.strip())
    except ValueError:
        raise ModgapError(f"--k must be comma-separated integers, got {text!r}") from None
    if not ks:
        raise ModgapError("--k is empty")
    return ks


def run_eval(
    inputs: str,
    texts: str | None = None,
    pairs: str | None = None,
    json_out: str | None = None,
    tasks: str | None = None,
    ks: str = "1,5,10",
    encoder: str | None = None,
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """What ``modgap eval`` does; returns the document written to ``--json``."""
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from ..io import read_embeddings
    from ..provenance import jsonable, provenance
    from ..tasks.suite import run_tasks
    from ._output import print_and_save

    k_list = parse_ks(ks)
    task_list = [t.strip() for t in tasks.split(",") if t.strip()] if tasks else None
    emb = read_embeddings(inputs, texts, pairs=pairs)
    enc = None
    if encoder is not None:
        from ..encoders import load_encoder

        enc = load_encoder(encoder)
    err = Console(stderr=True)
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=not progress,
    ) as bar:
        t = bar.add_task("evaluating")
        results = run_tasks(
            emb,
            task_list,
            ks=k_list,
            seed=seed,
            encoder=enc,
            progress=lambda name: bar.update(t, description=f"task: {name}"),
        )
    counts = emb.describe()
    document = {
        "tasks": jsonable(results),
        "provenance": provenance(
            inputs={"input": inputs, "texts": texts, "pairs": pairs},
            counts=counts,
            seed=seed,
            ks=list(k_list),
            encoder=encoder,
            metadata=dict(emb.metadata),
        ),
    }
    table = Table(
        title=f"tasks: {counts['n_images']} images, {counts['n_texts']} texts, d={counts['dim']}"
    )
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("meaning", style="dim")
    for key, value in results.items():
        if key == "skipped":
            continue
        shown = (
            f"{value:.1f}"
            if key == "rsum"
            else (f"{value:.4g}" if isinstance(value, float) else str(value))
        )
        table.add_row(key, shown, _meaning(key))
    for name, reason in results.get("skipped", {}).items():
        table.add_row(name, "skipped", reason)
    print_and_save(table, document, json_out)
    return document


def register(app: typer.Typer) -> None:
    @app.command("eval")
    def eval_command(
        inputs: str = typer.Argument(
            ..., help="Embeddings: .npz (image_emb, text_emb, ...), folder, or image .npy file."
        ),
        texts: str | None = typer.Argument(None, help="Text embeddings when in a second file."),
        pairs: str | None = typer.Option(
            None, "--pairs", help="text_to_image: one image index per text."
        ),
        json_out: str | None = typer.Option(None, "--json", help="Write results to this JSON."),
        tasks: str | None = typer.Option(
            None, "--tasks", help="Comma-separated subset of retrieval,zeroshot,clustering,mixed."
        ),
        ks: str = typer.Option("1,5,10", "--k", help="Recall@K cut-offs, comma-separated."),
        encoder: str | None = typer.Option(
            None,
            "--encoder",
            help="Encoder spec to build class prompts from class_names when the input has no "
            "class_text_emb (e.g. pocket, open_clip:ViT-B-32/openai).",
        ),
        seed: int = typer.Option(0, "--seed", help="k-means seed."),
        no_progress: bool = typer.Option(False, "--no-progress", help="No progress display."),
    ) -> None:
        """Evaluate the downstream tasks an embedding set supports: cross-modal retrieval
        (Recall@K, rSum, ranks), zero-shot classification, clustering, mixed-modality search."""
        run_eval(inputs, texts, pairs, json_out, tasks, ks, encoder, seed, not no_progress)
