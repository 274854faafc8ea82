"""``modgap embed IMAGES_DIR CAPTIONS --model SPEC --out FOLDER``: embed a captioned image folder.

The output is a clip-retrieval style folder (``img_emb/img_emb_0.npy``,
``text_emb/text_emb_0.npy``, ``metadata/metadata_0.parquet`` with ``image_path`` and
``caption``), written as one unit; several captions per image are kept with their pairing.
"""

from __future__ import annotations

import click

from . import cli
from ._options import compute_options, make_compute, output_options, run_with


@cli.command("embed")
@click.argument("images_dir", metavar="IMAGES_DIR")
@click.argument("captions", metavar="CAPTIONS")
@click.option(
    "--model",
    "-m",
    default="pocket",
    show_default=True,
    help="Encoder: pocket (bundled, offline), open_clip:ARCH/PRETRAINED, hf:NAME_OR_DIR, "
    "st:NAME_OR_DIR.",
)
@click.option("--out", "-o", required=True, metavar="FOLDER", help="Output folder.")
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help="Items per batch.")
@compute_options
@output_options
def embed_command(
    images_dir,
    captions,
    model,
    out,
    batch_size,
    device,
    memory_budget,
    threads,
    seed,
    no_progress,
    quiet,
) -> None:
    """Embed a folder of captioned images into a clip-retrieval style folder. CAPTIONS is a
    .csv/.tsv with columns image,caption or a .jsonl of {"image": ..., "caption": ...};
    several captions per image are allowed."""
    from rich.console import Console

    from ..encoders.embed import embed_folder

    compute = make_compute(device, memory_budget, threads, seed)
    info = run_with(compute, quiet)(embed_folder)(
        images_dir,
        captions,
        out,
        model,
        batch_size=batch_size,
        progress=not (no_progress or quiet),
        compute=compute,
    )
    if not quiet:
        Console(stderr=True).print(
            f"embedded {info['n_images']} images and {info['n_texts']} captions with {model} "
            f"(d={info['dim']}) in {info['seconds']:.1f}s",
            highlight=False,
        )
        Console().print(f"wrote {info['path']}", soft_wrap=True, highlight=False)
