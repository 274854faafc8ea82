r"""Fitting reducers on data that does not fit in memory.

* From **full-pass moments** (:func:`~modgap.stream.measures.moment_pass`, exact):
  ``center`` (the two means), ``shift`` (:math:`\Delta = \mu_X - \mu_Y`), ``gaussian``
  (means and covariances, :meth:`GaussianMap.fit_from_moments`) and ``procrustes`` (only the
  cross-moment :math:`M = \sum_j x_{\pi(j)}^\top y_j`: :math:`R = UV^\top` from
  :math:`M = U\Sigma V^\top`). The fitted attributes are the ones ``fit`` sets on the
  in-memory set, up to float64 round-off.
* On a **stated sample** (``fit_sample`` images, default :data:`DEFAULT_FIT_SAMPLE`, uniform
  without replacement with the seed, with all their captions): ``spectral``, ``ot-laplace``,
  ``ot-sinkhorn`` — reducers that need all pairs at once. Every row is then mapped through
  their out-of-sample extension (Nyström, POT's nearest-point rule, the entropic map).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..compute import Compute, resolve
from ..errors import InputError, notice
from .engines import Engine
from .measures import moment_pass, sample_index
from .source import Source

__all__ = ["DEFAULT_FIT_SAMPLE", "MOMENT_REDUCERS", "fit_streaming", "sample_pairs"]

#: images the sample-fitted reducers (spectral, OT) are fitted on, with their captions:
#: spectral fits 20,000 pairs in ~10 s on 2 cores and Sinkhorn's cached cost at 10,000 is 0.4 GB
DEFAULT_FIT_SAMPLE = 10_000
#: reducers fitted exactly from one pass of moments
MOMENT_REDUCERS = ("center", "shift", "gaussian", "procrustes")


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


def _finish(reducer: Any, d: int, n_i: int, n_t: int, compute: Compute) -> None:
    reducer._compute = compute
    reducer.n_features_in_ = int(d)
    reducer.n_images_fit_ = int(n_i)
    reducer.n_texts_fit_ = int(n_t)


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
    from .._progress import progress as progress_bar
    from ..embeddings import EmbeddingSet

    compute = resolve(compute)
    reducer.check_params()
    name = reducer.name
    if reducer.requires_pairs and not source.has_pairs:
        raise InputError(
            f"reducer '{name}' needs image-text pairs and the set has none", source.path
        )
    if name in MOMENT_REDUCERS:
        with progress_bar(
            f"fitting {name}: moments", total=source.n_images + source.n_texts, enabled=progress
        ) as bar:
            state = moment_pass(
                source,
                covariance=name == "gaussian",
                matched=name == "procrustes",
                cross=name == "procrustes",
                engine=engine,
                compute=compute,
                bar=bar,
            )
        x, y = state["x"], state["y"]
        if name == "center":
            reducer.image_mean_, reducer.text_mean_ = x["mean"], y["mean"]
        elif name == "shift":
            reducer.gap_ = x["mean"] - y["mean"]
        elif name == "gaussian":
            reducer.fit_from_moments(
                {"count": x["n"], "mean": x["mean"], "cov": x["scatter"] / x["n"]},
                {"count": y["n"], "mean": y["mean"], "cov": y["scatter"] / y["n"]},
            )
        else:
            from ..reducers.procrustes import procrustes_from_cross

            # the same rotation as the in-memory fit (closest to the identity when r < d)
            reducer.rotation_ = procrustes_from_cross(state["pairs"]["cross"])
        _finish(reducer, source.dim, x["n"], y["n"], compute)
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
