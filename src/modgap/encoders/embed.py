"""Embed a captioned image collection into a clip-retrieval style folder (``modgap embed``).

Two sources: a folder of image files with a captions file (:func:`embed_folder`), and
webdataset tar shards (:func:`embed_webdataset`). Both check their input before a model loads
and write the same folder.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator, Sequence
from itertools import islice
from pathlib import Path

import numpy as np

from ..compute import Compute, resolve
from ..datasets.caption_file import read_caption_file
from ..datasets.webdataset import find_shards, read_webdataset
from ..embeddings import EmbeddingSet
from ..errors import ModgapError
from ..files import check_paths
from ..io import write_embeddings
from . import load_encoder
from .base import progress_bar

__all__ = ["EMBED_DTYPES", "embed_folder", "embed_webdataset", "encode_image_stream"]

#: the float types ``embed`` stores; float16 first, clip-retrieval's inference default
EMBED_DTYPES = ("float16", "float32")


def embed_folder(
    images_dir: str | os.PathLike,
    captions: str | os.PathLike,
    out: str | os.PathLike,
    model: str = "pocket",
    *,
    batch_size: int | None = None,
    progress: bool = True,
    compute: Compute | None = None,
    dtype: str = "float16",
) -> dict:
    """Embed the images of ``images_dir`` and the captions of ``captions`` with ``model`` and
    write them as a clip-retrieval folder at ``out`` (one unit; several captions per image
    keep their pairing). ``dtype`` is the stored float type: ``"float16"`` (clip-retrieval's,
    the unit float32 rows rounded to the nearest float16) or ``"float32"``.

    Returns ``{"path", "n_images", "n_texts", "dim", "seconds"}``.
    """
    compute = resolve(compute)
    check_paths(
        reads=[("the images folder", images_dir), ("the captions file", captions)],
        writes=[("--out", out)],
    )
    table = read_caption_file(captions, images_dir)  # bad input fails before a model loads
    meta = {"model": model, "images_dir": str(images_dir), "captions": str(captions)}
    job = (table.image_paths, len(table.image_paths), table, None, meta, str(captions))
    return _embed(model, job, out, compute, batch_size, progress, dtype)


def embed_webdataset(
    shards: str | os.PathLike | Sequence[str | os.PathLike],
    out: str | os.PathLike,
    model: str = "pocket",
    *,
    txt_captions: str = "lines",
    batch_size: int | None = None,
    progress: bool = True,
    compute: Compute | None = None,
    dtype: str = "float16",
) -> dict:
    """Embed webdataset tar shards (img2dataset, CLIP_benchmark ``wds/``) with ``model`` and
    write them as a clip-retrieval folder at ``out``, like :func:`embed_folder`.

    Parameters
    ----------
    shards : path, pattern or sequence of them
        Tar files, folders of tar files or brace patterns (``shards/{000000..000009}.tar``);
        see :mod:`modgap.datasets.webdataset` for what a sample may hold.
    out : path
        The output folder.
    model : str
        Encoder spec (:func:`modgap.encoders.load_encoder`).
    txt_captions : {"lines", "file"}
        A ``.txt`` holds one caption per line (CLIP_benchmark) or is one caption.
    batch_size : int, optional
        Images (and texts) per batch; default the encoder's.
    progress : bool
        Progress bars on stderr.
    compute : Compute, optional
        Device and threads.
    dtype : {"float16", "float32"}
        Stored float type. float16 is what clip-retrieval's inference writes: the unit float32
        rows rounded to the nearest float16 (each within about 1e-3 of unit norm).

    Returns
    -------
    dict
        ``{"path", "n_images", "n_texts", "dim", "seconds"}``. Image ids are
        ``SHARD/MEMBER`` (``000000.tar/000000012.jpg``); ``.cls`` labels are kept.

    Notes
    -----
    The shards are read twice, never extracted: once for keys and captions (so bad input
    fails before the model loads), once streaming the images batch by batch.
    """
    compute = resolve(compute)
    paths = find_shards(shards)
    check_paths(reads=[("the shard", p) for p in paths], writes=[("--out", out)])
    index = read_webdataset(paths, txt_captions=txt_captions, progress=progress)
    meta = {"model": model, "shards": [str(p) for p in paths]}
    source = str(paths[0]) if len(paths) == 1 else f"{paths[0]} and {len(paths) - 1} more"
    job = (index.images(), index.n_images, index, index.labels, meta, source)
    return _embed(model, job, out, compute, batch_size, progress, dtype)


def encode_image_stream(
    encoder,
    images: Iterable,
    n: int,
    *,
    batch_size: int | None = None,
    progress: bool = True,
) -> np.ndarray:
    """Embed ``n`` images from an iterator, holding one batch of them at a time.

    The batches are the ones :meth:`~modgap.encoders.Encoder.encode_images` would cut from a
    list, so the vectors are the same as for the images given at once.
    """
    if batch_size is None:
        batch_size = getattr(encoder, "default_image_batch", 64)
    if int(batch_size) < 1:
        raise ModgapError(f"batch_size must be >= 1, got {batch_size}")
    out: np.ndarray | None = None
    done = 0
    with progress_bar(n, f"{encoder.name}: images", progress) as advance:
        for batch in _batches(iter(images), int(batch_size)):
            emb = encoder.encode_images(batch, batch_size=len(batch), progress=False)
            if out is None:
                out = np.empty((n, emb.shape[1]), dtype=np.float32)
            out[done : done + len(batch)] = emb
            done += len(batch)
            advance(len(batch))
    if out is None or done != n:
        raise ModgapError(f"expected {n} images, got {done}")
    return out


def _batches(items: Iterator, size: int) -> Iterator[list]:
    while batch := list(islice(items, size)):
        yield batch


def _image_columns(table) -> dict | None:
    """The per-image metadata clip-retrieval keeps beside ``image_path`` and ``caption``: a
    caption file's ``url``, a webdataset sample's ``.json`` fields (flattened), in order of
    first appearance; a sample without a field gets a null."""
    urls = getattr(table, "urls", None)
    fields = getattr(table, "json_fields", None)
    columns: dict[str, list] = {}
    if urls is not None:
        columns["url"] = list(urls)
    if fields is not None:
        names = dict.fromkeys(k for f in fields if f for k in f)
        for name in names:
            columns[name] = [f.get(name) if f else None for f in fields]
    return columns or None


def _check_dtype(dtype: str) -> np.dtype:
    """The stored float type; checked before a model loads."""
    if str(dtype) not in EMBED_DTYPES:
        raise ModgapError(f"dtype must be float16 or float32, not {dtype!r}")
    return np.dtype(str(dtype))


def _embed(
    model: str, job: tuple, out, compute: Compute, batch_size, progress, dtype="float16"
) -> dict:
    """Load the encoder, embed the job's images (streamed: one batch held) and captions, and
    write the clip-retrieval folder ``out``. ``job``: ``(images, n_images, table, labels,
    metadata, source)``, ``table`` holding ``captions``, ``text_to_image`` and ``image_ids``."""
    images, n_images, table, labels, metadata, source = job
    stored = _check_dtype(dtype)
    start = time.perf_counter()
    encoder = load_encoder(model, device=compute.device)
    image_emb = encode_image_stream(
        encoder, images, n_images, batch_size=batch_size, progress=progress
    )
    text_emb = encoder.encode_texts(table.captions, batch_size=batch_size, progress=progress)
    emb = EmbeddingSet(
        image_emb,
        text_emb,
        text_to_image=table.text_to_image,
        labels=labels,
        image_ids=table.image_ids,
        texts=table.captions,
        metadata=metadata,
        source=source,
    )
    path = write_embeddings(
        emb, out, format="clip-retrieval", dtype=stored, columns=_image_columns(table)
    )
    return {
        "path": Path(path),
        "n_images": emb.n_images,
        "n_texts": emb.n_texts,
        "dim": emb.dim,
        "seconds": time.perf_counter() - start,
    }
