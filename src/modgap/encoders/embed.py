"""Embed a captioned image collection into a clip-retrieval style folder (``modgap embed``)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from ..compute import Compute, resolve

__all__ = ["embed_folder"]


def embed_folder(
    images_dir: str | os.PathLike,
    captions: str | os.PathLike,
    out: str | os.PathLike,
    model: str = "pocket",
    *,
    batch_size: int | None = None,
    progress: bool = True,
    compute: Compute | None = None,
) -> dict:
    """Embed the images of ``images_dir`` and the captions of ``captions`` with ``model`` and
    write them as a clip-retrieval folder at ``out`` (one unit; several captions per image
    keep their pairing).

    Returns ``{"path", "n_images", "n_texts", "dim", "seconds"}``.
    """
    from ..datasets.caption_file import read_caption_file
    from ..embeddings import EmbeddingSet
    from ..files import check_paths
    from ..io import write_embeddings
    from . import load_encoder

    compute = resolve(compute)
    check_paths(
        reads=[("the images folder", images_dir), ("the captions file", captions)],
        writes=[("--out", out)],
    )
    table = read_caption_file(captions, images_dir)  # bad input fails before a model loads
    start = time.perf_counter()
    encoder = load_encoder(model, device=compute.device)
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
    return {
        "path": Path(path),
        "n_images": emb.n_images,
        "n_texts": emb.n_texts,
        "dim": emb.dim,
        "seconds": time.perf_counter() - start,
    }
