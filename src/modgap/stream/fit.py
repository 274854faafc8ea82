r"""Fitting reducers on data that does not fit in memory.

* From **one pass of moments**, for every reducer that declares ``moment_fit`` (``center``,
  ``shift``, ``gaussian``, ``procrustes``): the pass accumulates what the reducer asks for
  (means, scatter matrices, the cross moment of matched pairs) over the rows an in-memory set
  would hold, and the reducer's own :meth:`~modgap.reducers.base.Reducer.fit_from_moments`
  finishes the fit — the method its in-memory ``fit`` calls too. Means are exact sums
  (:class:`~modgap.measures.accumulators.Moments` with ``exact=True``), so ``center`` and
  ``shift`` have the same bits on every route and block size; scatter and cross moments are
  merged in float64 and agree with the in-memory fit to float64 round-off (about 1e-15
  relative).
* On a **stated sample** (``fit_sample`` images, default :data:`DEFAULT_FIT_SAMPLE`, uniform
  without replacement with the seed, with all their captions): the other reducers
  (``spectral``, ``ot-laplace``, ``ot-sinkhorn``), which need all pairs at once. Every row is
  then mapped through their out-of-sample extension (Nyström, POT's nearest-point rule, the
  entropic map)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .._progress import progress as progress_bar
from ..compute import Compute, resolve
from ..embeddings import EmbeddingSet
from ..errors import InputError, notice
from ..io.source import Source
from .engines import Engine
from .measures import moment_pass, sample_index

__all__ = ["DEFAULT_FIT_SAMPLE", "fit_streaming", "sample_pairs"]

#: images the sample-fitted reducers (spectral, OT) are fitted on, with their captions:
#: spectral fits 20,000 pairs in ~10 s on 2 cores and Sinkhorn's cached cost at 10,000 is 0.4 GB
DEFAULT_FIT_SAMPLE = 10_000


def sample_pairs(
    source: Source, size: int | None, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """``(image rows, text rows, text_to_image within the sample)``: ``size`` images drawn
    uniformly and every caption of them (paired), or ``size`` of each modality (unpaired)."""
    images = sample_index(source.n_images, size, seed)
    if source.pairing is None:
        return images, sample_index(source.n_texts, size, seed + 1), None
    if source.pairing == "rows":
        return images, images.copy(), np.arange(images.size)
    pos = np.full(source.n_images, -1, dtype=np.int64)
    pos[images] = np.arange(images.size)
    texts, t2i = [], []
    for shard in source.shards:  # the pairing column of each shard, one at a time
        p = pos[source.shard_pairs(shard)]
        keep = np.flatnonzero(p >= 0)
        texts.append(keep + shard.text_start)
        t2i.append(p[keep])
    return images, np.concatenate(texts), np.concatenate(t2i)


def fit_streaming(
    reducer: Any,
    source: Source,
    *,
    fit_sample: int | None = DEFAULT_FIT_SAMPLE,
    engine: Engine | None = None,
    compute: Compute | None = None,
    progress: bool = False,
) -> dict:
    """Fit ``reducer`` on ``source`` without loading it; returns the ``fitted_on`` record
    (which rows, how) for ``reduce.json``."""
    compute = resolve(compute)
    reducer.check_params()
    name = reducer.name
    if reducer.requires_pairs and not source.has_pairs:
        raise InputError(
            f"reducer '{name}' needs image-text pairs and the set has none", source.path
        )
    if reducer.moment_fit is not None:
        need = reducer.moment_fit
        with progress_bar(
            f"fitting {name}: moments", total=source.n_images + source.n_texts, enabled=progress
        ) as bar:
            state = moment_pass(
                source,
                covariance=need.get("covariance", False),
                matched=need.get("cross", False),
                cross=need.get("cross", False),
                set_rows=True,
                engine=engine,
                compute=compute,
                bar=bar,
            )
        x, y = state["x"], state["y"]
        if x is None or y is None:
            raise InputError(f"reducer '{name}' needs rows of both modalities", source.path)
        reducer.fit_from_moments(x, y, state["pairs"], compute=compute)
        return {
            "source": source.path,
            "rows": "all",
            "how": "one streaming pass of moments",
            "n_images": int(x["n"]),
            "n_texts": int(y["n"]),
        }
    size = fit_sample
    cap = getattr(reducer, "max_size", None)
    if cap is not None and (size is None or size > cap):
        notice(f"{name} fits on at most {cap} points per side: --fit-sample lowered to {cap}")
        size = cap
    images, texts, t2i = sample_pairs(source, size, compute.seed)
    X = source.gather("image", images)
    Y = source.gather("text", texts)
    with progress_bar(
        f"fitting {name} on {images.size} images, {texts.size} texts", enabled=progress
    ):
        reducer.fit(
            EmbeddingSet(X, Y, text_to_image=t2i, paired=t2i is not None, normalize=False),
            compute=compute,
        )
    exact = images.size == source.n_images and texts.size == source.n_texts
    return {
        "source": source.path,
        "rows": "all" if exact else "sample",
        "how": "fitted on every row"
        if exact
        else (
            f"fitted on a uniform sample of {images.size} images (seed {compute.seed}) "
            "with their captions; every row mapped by the out-of-sample extension"
        ),
        "n_images": int(images.size),
        "n_texts": int(texts.size),
        "seed": compute.seed,
    }
