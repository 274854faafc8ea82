"""Run every task an :class:`~modgap.embeddings.EmbeddingSet` supports, in one flat dict.

Which tasks apply:

* ``retrieval`` and ``mixed`` recall: the set has image-text pairs.
* ``zeroshot``: the set has image ``labels`` and class prompt embeddings ``class_text_emb``
  (or an encoder and ``class_names`` are given to build them).
* ``clustering`` and the own-modality share of ``mixed``: always.

A task that does not apply is listed under ``skipped`` with the reason.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from .._lists import name_list, positive_ints
from .._resultdict import Results
from ..compute import Compute, resolve
from ..errors import ModgapError, notice
from .clustering import clustering_metrics
from .mixed import mixed_search_metrics
from .retrieval import retrieval_metrics
from .zeroshot import DEFAULT_TEMPLATES, class_embeddings, zero_shot_metrics

__all__ = ["TASKS", "applicable_tasks", "check_requested", "retrieval_ks", "run_tasks"]

TASKS = ("retrieval", "zeroshot", "clustering", "mixed")


def check_requested(tasks: Any, skipped: dict[str, str]) -> None:
    """Refuse, in one line, a requested task that is unknown or does not apply (``skipped``:
    task -> why not, from :func:`applicable_tasks` or a route's own reasons)."""
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise ModgapError(f"unknown task(s) {', '.join(unknown)}; choose from {', '.join(TASKS)}")
    missing = [t for t in tasks if t in skipped]
    if missing:
        raise ModgapError("; ".join(f"task '{t}' does not apply: {skipped[t]}" for t in missing))


def applicable_tasks(emb: Any, encoder: Any = None) -> tuple[list[str], dict[str, str]]:
    """``(tasks that apply, {task: why not})`` for ``emb``."""
    run, skipped = [], {}
    if emb.has_pairs:
        run.append("retrieval")
    else:
        skipped["retrieval"] = "needs image-text pairs"
    if not emb.has_labels:
        skipped["zeroshot"] = "needs image labels"
    elif emb.class_text_emb is None and (encoder is None or emb.class_names is None):
        skipped["zeroshot"] = "needs class prompt embeddings (class_text_emb) or an encoder"
    else:
        run.append("zeroshot")
    if emb.has_texts or emb.has_labels:
        run.append("clustering")
    else:
        skipped["clustering"] = "needs texts or image labels"
    if emb.has_texts:
        run.append("mixed")
    else:
        skipped["mixed"] = "needs texts (the set has class prompts only)"
    return run, skipped


def _valid_ks(ks: Sequence[int], limit: int, what: str) -> tuple[int, ...]:
    kept = tuple(k for k in ks if k <= limit)
    if len(kept) < len(ks):
        notice(f"{what}: K > {limit} dropped (only {limit} candidates)")
    if not kept:
        raise ModgapError(f"{what}: every K in {tuple(ks)} exceeds the {limit} candidates")
    return kept


def retrieval_ks(
    ks: Sequence[int], n_images: int, n_texts: int, folds: int | None = None
) -> tuple[int, ...]:
    """The Recall@K cut-offs retrieval keeps: a K above the candidates of a fold (``min(n_i,
    n_t) // folds``) is dropped with a notice; none left is an error."""
    per_fold = max(1, min(n_images, n_texts) // (folds or 1))
    return _valid_ks(ks, per_fold, "retrieval")


def run_tasks(
    emb: Any,
    tasks: Sequence[str] | str | None = None,
    *,
    ks: Sequence[int] | str = (1, 5, 10),
    seed: int | None = None,
    encoder: Any = None,
    templates: Sequence[Any] = DEFAULT_TEMPLATES,
    device: Any = None,
    progress: Callable[[str], None] | None = None,
    folds: int | None = None,
    compute: Compute | None = None,
) -> dict:
    """Run the applicable tasks on ``emb``; returns one flat dict of metrics plus ``skipped``.

    Parameters
    ----------
    emb : EmbeddingSet
    tasks : list of str or comma-separated str, optional
        Subset of ``retrieval``, ``zeroshot``, ``clustering``, ``mixed`` (default: all that
        apply). Asking for one that does not apply is an error.
    ks : sequence of int or comma-separated str
        Recall@K cut-offs (``"1,5,10"`` as ``--k`` takes them); a K above the number of
        candidates is dropped with a notice.
    seed : int, optional
        k-means seed (default: the compute context's).
    encoder : object, optional
        With ``encode_texts``; builds class prompts from ``emb.class_names`` when the set has
        no ``class_text_emb``.
    templates : sequence
        Prompt templates for the encoder route.
    progress : callable, optional
        Called with each task name before it runs.
    folds : int, optional
        Retrieval over this many consecutive folds of images, averaged (COCO 5-fold 1K).
    compute : Compute, optional
        Device, memory budget and seed (default: :func:`modgap.compute.current`); ``device``
        and ``seed`` given here override it.
    """
    compute = resolve(compute, device=device, seed=seed)
    seed = compute.seed
    tasks, ks = name_list(tasks), positive_ints(ks)  # what the command line accepts
    run, skipped = applicable_tasks(emb, encoder)
    if tasks is not None:
        check_requested(tasks, skipped)
        run = [t for t in run if t in tasks]
        skipped = {}
    out: dict[str, Any] = {}
    for task in run:
        if progress is not None:
            progress(task)
        if task == "retrieval":
            k_ok = retrieval_ks(ks, emb.n_images, emb.n_texts, folds)
            out.update(
                retrieval_metrics(
                    emb.image_emb,
                    emb.text_emb,
                    emb.text_to_image,
                    k_ok,
                    folds=folds,
                    compute=compute,
                )
            )
        elif task == "zeroshot":
            cte = emb.class_text_emb
            if cte is None:
                cte = class_embeddings(encoder, emb.class_names, templates)
            out.update(zero_shot_metrics(emb.image_emb, emb.labels, cte, compute=compute))
        elif task == "clustering":
            out.update(
                clustering_metrics(
                    emb.image_emb, emb.text_emb, emb.text_to_image, emb.labels, seed=seed
                )
            )
        elif task == "mixed":
            k_ok = _valid_ks(ks, emb.n_images + emb.n_texts - 1, "mixed search")
            out.update(
                mixed_search_metrics(
                    emb.image_emb, emb.text_emb, emb.text_to_image, k_ok, compute=compute
                )
            )
    if skipped:
        out["skipped"] = skipped
    return Results(out)  # a dict; shows as one short line in a notebook
