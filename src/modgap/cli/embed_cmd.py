"""``modgap embed``: embed captioned images into a clip-retrieval style folder.

Two forms, told apart by the arguments alone::

    modgap embed IMAGES_DIR CAPTIONS --model SPEC --out FOLDER   # a .csv/.tsv/.jsonl second
    modgap embed SHARDS... --model SPEC --out FOLDER              # webdataset tar shards

``SHARDS`` are tar files, folders of tar files or brace patterns
(``'shards/{000000..000009}.tar'``). The output is a clip-retrieval style folder
(``img_emb/img_emb_0.npy``, ``text_emb/text_emb_0.npy`` in float16 unless ``--dtype float32``,
``metadata/metadata_0.parquet`` with ``image_path`` and ``caption``), written as one unit;
several captions per image are kept with their pairing.
"""

from __future__ import annotations

import click

from ..errors import ModgapError
from . import cli
from ._options import INPUT_PATH, OUTPUT_PATH, run_options

# a second argument with one of these suffixes makes the folder form
CAPTION_SUFFIXES = (".csv", ".tsv", ".jsonl", ".ndjson", ".json")


def split_inputs(inputs: tuple[str, ...]) -> tuple[str, str] | None:
    """``(IMAGES_DIR, CAPTIONS)`` for the folder form, ``None`` for the shards form."""
    captions = [i for i, a in enumerate(inputs) if a.lower().endswith(CAPTION_SUFFIXES)]
    if not captions:
        return None
    if len(inputs) == 2 and captions == [1]:
        return inputs[0], inputs[1]
    raise ModgapError(
        f"{inputs[captions[0]]}: a captions file comes second, after the images folder: "
        "modgap embed IMAGES_DIR CAPTIONS (webdataset shards need no captions file)"
    )


@cli.command("embed")
@click.argument(
    "inputs", nargs=-1, required=True, type=INPUT_PATH, metavar="IMAGES_DIR CAPTIONS | SHARDS..."
)
@click.option(
    "--model",
    "-m",
    default="pocket",
    show_default=True,
    help="Encoder: pocket (bundled, offline), open_clip:ARCH/PRETRAINED, hf:NAME_OR_DIR, "
    "st:NAME_OR_DIR.",
)
@click.option(
    "--out", "-o", required=True, type=OUTPUT_PATH, metavar="FOLDER", help="Output folder."
)
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help="Items per batch.")
@click.option(
    "--txt-captions",
    type=click.Choice(["lines", "file"]),
    default=None,
    help="Shards: a sample's .txt holds one caption per line (default; CLIP_benchmark) or is "
    "one caption (file).",
)
@click.option(
    "--dtype",
    type=click.Choice(["float16", "float32"]),
    default="float16",
    show_default=True,
    help="Stored float type. float16 is clip-retrieval's: the unit float32 rows rounded to "
    "the nearest float16.",
)
@run_options
def embed_command(
    inputs,
    model,
    out,
    batch_size,
    txt_captions,
    dtype,
    run,
) -> None:
    """Embed captioned images into a clip-retrieval style folder.

    IMAGES_DIR CAPTIONS: a folder of images and a .csv/.tsv with columns image,caption or a
    .jsonl of {"image": ..., "caption": ...}. SHARDS: webdataset tar files, folders of them or a
    quoted brace pattern such as 'shards/{000000..000009}.tar' (img2dataset, CLIP_benchmark
    wds/), each sample an image with a .txt or .json caption. Several captions per image are
    allowed in both.
    """
    from rich.console import Console

    from ..encoders.embed import embed_folder, embed_webdataset

    folder_form = split_inputs(inputs)
    if folder_form is not None and txt_captions is not None:
        raise ModgapError("--txt-captions applies to webdataset shards, not to a captions file")
    show = run.progress
    if folder_form is not None:
        info = run(embed_folder)(
            *folder_form,
            out,
            model,
            batch_size=batch_size,
            progress=show,
            compute=run.compute,
            dtype=dtype,
        )
    else:
        info = run(embed_webdataset)(
            list(inputs),
            out,
            model,
            txt_captions=txt_captions or "lines",
            batch_size=batch_size,
            progress=show,
            compute=run.compute,
            dtype=dtype,
        )
    if not run.quiet:
        Console(stderr=True).print(
            f"embedded {info['n_images']} images and {info['n_texts']} captions with {model} "
            f"(d={info['dim']}) in {info['seconds']:.1f}s",
            highlight=False,
        )
        Console().print(f"wrote {info['path']}", soft_wrap=True, highlight=False)
