"""The downstream tasks on a streamed source: every task ``modgap eval`` runs in memory, with
the in-memory task code.

* **retrieval, mixed search**: :func:`modgap.stream.retrieval.stream_retrieval` (exact scans
  of every candidate, for all queries or a stated sample); with ``folds``, retrieval is
  averaged over folds of the images (:func:`stream_retrieval_folds`,
  the fold rule of the in-memory retrieval) and mixed search stays on the whole set, as in
  memory.
* **zero-shot**: the class prompts stay in memory; the images are streamed shard by shard
  through :func:`modgap.tasks.zeroshot.zero_shot_counts` — the kernel the in-memory route
  runs on its one block — and the per-class counts add up in the engine's merge tree. Exact:
  the same ``acc1``, ``acc5`` and ``mean_per_class_recall`` as in memory.
* **clustering**: the rows :func:`modgap.tasks.clustering.cluster_sample` chooses (all of
  them up to ``max_points`` points, else a uniform sample of images with their captions, with
  the seed) are read with :meth:`Source.gather` and clustered by
  :func:`~modgap.tasks.clustering.cluster_points`, as in memory: the same values, with the
  sample and population sizes stated.

Labels and class prompts come from the folder's ``extra.npz`` (read whole: they are one
number per image and one row per class).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import numpy as np

from .._array import prepare_rows
from .._progress import progress as progress_bar
from ..compute import Compute, resolve
from ..errors import InputError
from ..io.source import Source
from ..io.subset import SubsetSource
from ..tasks.clustering import cluster_points, cluster_sample
from ..tasks.retrieval import average_folds, fold_parts
from ..tasks.suite import applicable_tasks, check_requested, retrieval_ks
from ..tasks.zeroshot import (
    ensemble_class_embeddings,
    merge_zero_shot_counts,
    require_zero_shot,
    zero_shot_counts,
    zero_shot_from_counts,
    zero_shot_labels,
)
from .engines import Engine, LocalEngine
from .intervals import LEVEL, estimate
from .retrieval import stream_retrieval

__all__ = [
    "source_classes",
    "stream_clustering",
    "stream_eval",
    "stream_retrieval_folds",
    "stream_zero_shot",
]

#: points (images with their captions) clustered by default, as in memory
DEFAULT_CLUSTER_POINTS = 20_000


def source_classes(source: Any) -> dict:
    """``labels`` and ``class_text_emb`` of a source (from its ``extra.npz``; absent keys are
    left out), as plain arrays; nothing is unpickled. A view of a source (a subset, a
    reduced source) answers with its own ``classes()``."""
    own = getattr(source, "classes", None)
    if callable(own):
        return own()
    keys = [k for k in ("labels", "class_text_emb") if k in source.layout.get("extra", [])]
    if not keys:
        return {}
    path = source.path.rstrip("/") + "/extra.npz"
    try:
        with source.fs().open(path) as f:
            data = f.read()
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            out = {k: np.asarray(z[k]) for k in keys}
    except (OSError, ValueError) as e:
        raise InputError(f"cannot read {', '.join(keys)}: {e}", path) from None
    cte = out.get("class_text_emb")
    if cte is not None and cte.ndim in (2, 3) and cte.size:
        # the class prompts as the in-memory set holds them (the one row preparation), so
        # both routes ensemble the same float32 rows
        flat = prepare_rows(
            cte.reshape(-1, cte.shape[-1]), "class_text_emb", path, notice_divided=True
        )
        out["class_text_emb"] = flat.reshape(cte.shape)
    return out


def zero_shot_kernel(item: tuple, source: Any, classes: np.ndarray, compute: Compute) -> dict:
    """:func:`~modgap.tasks.zeroshot.zero_shot_counts` of one shard's images, block by block
    (``item``: the shard and its images' labels)."""
    shard, labels = item
    rows = compute.rows_per_block(4 * max(1, source.dim) * 2, share=0.5, cap=1 << 16)
    out = None
    for start, block in source.blocks(shard, "image", rows):
        c = zero_shot_counts(
            block, labels[start : start + block.shape[0]], classes, compute=compute
        )
        out = c if out is None else merge_zero_shot_counts(out, c)
    if out is None:  # a shard without images
        out = zero_shot_counts(np.empty((0, classes.shape[1]), np.float32), labels, classes)
    return out


def stream_zero_shot(
    source: Any,
    labels: Any = None,
    class_text_emb: Any = None,
    *,
    engine: Engine | None = None,
    compute: Compute | None = None,
    progress: bool = False,
) -> dict:
    """Zero-shot ``acc1``, ``acc5``, ``mean_per_class_recall`` and the prediction
    concentration of a source's images, exactly (the keys and values of
    :func:`modgap.tasks.zeroshot.zero_shot_metrics`). ``labels`` / ``class_text_emb``
    default to those of the source's ``extra.npz``."""
    if labels is None or class_text_emb is None:
        found = source_classes(source)
        labels = found.get("labels") if labels is None else labels
        class_text_emb = found.get("class_text_emb") if class_text_emb is None else class_text_emb
    require_zero_shot(labels, class_text_emb)
    W = ensemble_class_embeddings(class_text_emb)
    if W.shape[1] != source.dim:
        raise InputError(
            f"'class_text_emb' has {W.shape[1]} dimensions but the images have {source.dim}"
        )
    y = zero_shot_labels(labels, source.n_images, W.shape[0])
    compute = resolve(compute)
    engine = engine or LocalEngine()
    items = [(s, y[s.image_start : s.image_start + s.n_images]) for s in source.shards]
    with progress_bar(
        "zero-shot: streaming the images", total=source.n_images, enabled=progress
    ) as bar:
        counts = engine.reduce(
            zero_shot_kernel,
            items,
            merge_zero_shot_counts,
            source,
            engine.put(W),
            compute,
            on_done=lambda i, _: bar.advance(items[i][0].n_images),
        )
    return zero_shot_from_counts(counts)


def stream_clustering(
    source: Any,
    labels: Any = None,
    *,
    max_points: int = DEFAULT_CLUSTER_POINTS,
    compute: Compute | None = None,
) -> dict:
    """:func:`modgap.tasks.clustering.clustering_metrics` of a source: the same rows (the
    sample rule of :func:`~modgap.tasks.clustering.cluster_sample`, ``max_points`` points,
    the compute context's seed), read with :meth:`Source.gather`, the same k-means; so the
    same values as in memory. Adds ``sampling["clustering"]``: images and texts clustered,
    of how many, and the seed."""
    compute = resolve(compute)
    seed = compute.seed
    n_i, n_t = source.n_images, source.n_texts
    if labels is None:
        labels = source_classes(source).get("labels")
    if n_t == 0 and labels is None:
        raise InputError("clustering without texts needs image labels (nothing to compare)")
    y = None
    if labels is not None:
        y = np.asarray(labels).astype(np.int64)
        if y.shape != (n_i,):
            raise InputError(f"'labels' must have shape ({n_i},), got {tuple(y.shape)}")
    t2i = source.pairs()
    if t2i is None and n_i == n_t:  # as in memory: equal counts pair row by row
        t2i = np.arange(n_t, dtype=np.int64)
    keep_i, keep_t = cluster_sample(n_i, n_t, t2i, int(max_points), seed)
    X = source.gather("image", keep_i)
    Y = source.gather("text", keep_t) if n_t else np.empty((0, source.dim), np.float32)
    out = cluster_points(
        X,
        Y,
        None if t2i is None else t2i[keep_t],
        keep_i,
        None if y is None else y[keep_i],
        default_k=None if y is None else len(np.unique(y)),
        seed=seed,
        has_texts=n_t > 0,
    )
    out["sampling"] = {
        "clustering": {
            "images": int(keep_i.size),
            "texts": int(keep_t.size),
            "population_images": int(n_i),
            "population_texts": int(n_t),
            "exact": bool(keep_i.size == n_i and keep_t.size == n_t),
            "seed": int(seed),
            "method": f"k-means on a uniform sample of images with their captions, at most "
            f"{int(max_points)} points (as in memory)",
        }
    }
    return out


def stream_retrieval_folds(
    source: Source,
    ks: Sequence[int] = (1, 5, 10),
    folds: int | None = None,
    *,
    sample_queries: int | None = 10_000,
    engine: Engine | None = None,
    compute: Compute | None = None,
    progress: bool = False,
    correction: Any = None,
) -> dict:
    """Retrieval averaged over ``folds`` folds of the source's images, as
    :func:`modgap.tasks.retrieval.retrieval_metrics` with ``folds``: the parts of
    :func:`~modgap.tasks.retrieval.fold_parts` (consecutive images of the source, each a
    :class:`~modgap.io.subset.SubsetSource` view with its own captions) are scanned by
    :func:`stream_retrieval` one after the other (``sample_queries`` queries per modality
    and fold), and every key is averaged by :func:`~modgap.tasks.retrieval.average_folds`.

    An averaged recall's interval is the mean of the folds' intervals: the folds are
    independent samples, so this is wider than the interval of their mean (conservative);
    on whole folds it is the value. ``sampling`` sums the queries of the folds.
    ``correction``: a fitted score correction, applied to each fold as
    ``retrieval_metrics(..., folds=, correction=)`` applies it."""

    def scan(view: Source, label: str = "") -> dict:
        return stream_retrieval(
            view,
            ks,
            sample_queries=sample_queries,
            mixed=False,
            engine=engine,
            compute=compute,
            progress=progress,
            label=label,
            correction=correction,
        )

    parts = fold_parts(source.n_images, folds)
    if len(parts) == 1:
        return scan(source)
    results = []
    for j, part in enumerate(parts):
        view = SubsetSource(source, part)
        if view.n_texts == 0:
            raise InputError(
                f"images {part[0]}..{part[-1]} have no caption; cannot evaluate retrieval",
                source.path,
            )
        results.append(scan(view, f" (fold {j + 1}/{len(parts)})"))
    numbers = [{k: v for k, v in r.items() if k not in ("estimates", "sampling")} for r in results]
    out: dict[str, Any] = average_folds(numbers)
    est = {}
    for key, first in results[0]["estimates"].items():
        each = [r["estimates"][key] for r in results]
        lo = float(np.mean([e["interval"][0] for e in each]))
        hi = float(np.mean([e["interval"][1] for e in each]))
        est[key] = estimate(
            out[key],
            (lo, hi),
            sum(e["sample"] for e in each),
            sum(e["population"] for e in each),
            f"mean over {len(parts)} folds of: {first['method']}; the mean of their intervals",
        )
    out["estimates"] = est
    out["sampling"] = {
        "images": sum(r["sampling"]["images"] for r in results),
        "texts": sum(r["sampling"]["texts"] for r in results),
        "level": LEVEL,
        "folds": len(parts),
    }
    return out


def stream_eval(
    source: Any,
    tasks: list[str] | None = None,
    ks: Any = (1, 5, 10),
    *,
    sample_queries: int | None = 10_000,
    folds: int | None = None,
    engine: Engine | None = None,
    compute: Compute | None = None,
    progress: bool = False,
) -> dict:
    """Every task ``modgap eval`` runs on a set in memory, on a source: one flat dict with the
    keys of :func:`modgap.tasks.suite.run_tasks`, ``estimates`` and ``sampling`` for the
    sampled ones, and ``skipped`` (task: reason) for those that do not apply or cannot run
    streamed. Asking (``tasks``) for one of those is an error. ``folds``: retrieval averaged
    over this many consecutive folds of images (``run_tasks``'s ``folds``; a K above a
    fold's candidates is dropped with a notice, as there)."""
    compute = resolve(compute)
    classes = source_classes(source)
    view = SimpleNamespace(
        has_pairs=source.has_pairs,
        has_labels=classes.get("labels") is not None,
        class_text_emb=classes.get("class_text_emb"),
        class_names=None,
        has_texts=source.n_texts > 0,
    )
    run, skipped = applicable_tasks(view)
    if "mixed" in run and not source.has_pairs:
        run.remove("mixed")
        skipped["mixed"] = "an unpaired set: mixed search streams only with image-text pairs"
    if tasks:
        check_requested(tasks, skipped)
        run, skipped = [t for t in run if t in tasks], {}
    out: dict[str, Any] = {}
    sampling: dict[str, Any] = {}
    by_folds = "retrieval" in run and folds not in (None, 1)
    if by_folds:
        r = stream_retrieval_folds(
            source,
            retrieval_ks(ks, source.n_images, source.n_texts, folds),
            folds,
            sample_queries=sample_queries,
            engine=engine,
            compute=compute,
            progress=progress,
        )
        sampling["retrieval_folds"] = r.pop("sampling")
        out.update(r)
    if ("retrieval" in run and not by_folds) or "mixed" in run:
        r = stream_retrieval(
            source,
            ks,
            sample_queries=sample_queries,
            mixed="mixed" in run,
            engine=engine,
            compute=compute,
            progress=progress,
        )
        if "retrieval" not in run or by_folds:
            r = {
                k: v
                for k, v in r.items()
                if k.startswith("mixed") or k in ("estimates", "sampling")
            }
            r["estimates"] = {k: v for k, v in r["estimates"].items() if k.startswith("mixed")}
        sampling.update(r.pop("sampling"))
        estimates = {**out.pop("estimates", {}), **r.pop("estimates")}
        out.update(r)
        out["estimates"] = estimates
    if "zeroshot" in run:
        out.update(
            stream_zero_shot(
                source,
                classes["labels"],
                classes["class_text_emb"],
                engine=engine,
                compute=compute,
                progress=progress,
            )
        )
    if "clustering" in run:
        c = stream_clustering(source, classes.get("labels"), compute=compute)
        sampling.update(c.pop("sampling"))
        out.update(c)
    if sampling:
        out["sampling"] = sampling
    if skipped:
        out["skipped"] = skipped
    return out
