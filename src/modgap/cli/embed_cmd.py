"""``modgap embed IMAGES_DIR CAPTIONS --model SPEC --out FOLDER``: embed a captioned image folder.

The output is a clip-retrieval style folder (``img_emb/img_emb_0.npy``,
``text_emb/text_emb_0.npy``, ``metadata/metadata_0.parquet`` with ``image_path`` and
``caption``), written atomically; several captions per image are kept with their pairing.
"""

from __future__ import annotations

import time
from pathlib import Path

import typer


def run_embed(
    images_dir: str,
    captions: str,
    model: str = "pocket",
    out: str = "embeddings",
    device: str | None = None,
    batch_size: int | None = None,
    progress: bool = True,
) -> Path:
    """What ``modgap embed`` does; returns the output folder."""
    from rich.console import Console

    from ..datasets.caption_file import read_caption_file
    from ..embeddings import EmbeddingSet
    from ..encoders import load_encoder
    from ..io import write_embeddings

    table = read_caption_file(captions, images_dir)  # bad input fails before a model loads
    start = time.perf_counter()
    encoder = load_encoder(model, device=device)
    image_emb = encoder.encode_images(table.image_paths, batch_size=batch_size, progress=progress)
    text_emb = encoder.encode_texts(table.captions, batch_size=batch_size, progress=progress)
    emb = EmbeddingSet(
        image_emb,
        text_emb,
        text_to_image=table.text_to_image,
        image_ids=table.image_ids,
        texts=table.captions,
        metadata={"model": model, "images_dir": str(images_dir), "captions": str(captions)},
        source=str(captions),
    )
    path = write_embeddings(emb, out, format="clip-retrieval")
    Console(stderr=True).print(
        f"embedded {emb.n_images} images and {emb.n_texts} captions with {model} "
        f"(d={emb.dim}) in {time.perf_counter() - start:.1f}s"
    )
    Console().print(f"wrote {path}")
    return path


def register(app: typer.Typer) -> None:
    @app.command("embed")
    def embed_command(
        images_dir: str = typer.Argument(..., help="Folder holding the images."),
        captions: str = typer.Argument(
            ...,
            help="Captions file: .csv/.tsv with columns image,caption, or .jsonl with "
            '{"image": ..., "caption": ...} per line; several captions per image allowed.',
        ),
        model: str = typer.Option(
            "pocket",
            "--model",
            "-m",
            help="Encoder: pocket (bundled, offline), open_clip:ARCH/PRETRAINED, "
            "hf:NAME_OR_DIR, st:NAME_OR_DIR.",
        ),
        out: str = typer.Option(..., "--out", "-o", help="Output folder (clip-retrieval layout)."),
        device: str | None = typer.Option(None, "--device", help="cpu, cuda, cuda:1, ..."),
        batch_size: int | None = typer.Option(None, "--batch-size", help="Items per batch."),
        no_progress: bool = typer.Option(False, "--no-progress", help="No progress bar."),
    ) -> None:
        """Embed a folder of captioned images into a clip-retrieval style folder."""
        run_embed(images_dir, captions, model, out, device, batch_size, progress=not no_progress)
