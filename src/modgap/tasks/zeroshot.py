"""Zero-shot classification with class prompts (Radford et al. 2021, CLIP; metric names and
``mean_per_class_recall`` as in CLIP_benchmark).

Each class ``c`` gets one text embedding: its prompts ``template(c)`` for every template are
encoded and L2-normalised, averaged, and the mean is L2-normalised again (prompt ensembling,
CLIP §3.1.4). An image is assigned the class whose embedding has the highest cosine with it.

* ``acc1`` / ``acc5``: top-1 / top-5 accuracy (top-``min(5, c)`` when there are fewer than 5
  classes, where it is then 1 by construction).
* ``mean_per_class_recall``: the mean over the classes present in ``labels`` of the share of
  that class's images predicted correctly (``sklearn.metrics.balanced_accuracy_score``).
* prediction concentration (hub classes): ``prediction_entropy`` / ``label_entropy`` and
  ``prediction_top_share`` / ``label_top_share`` (see :func:`prediction_concentration`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .._array import prepare_rows, to_numpy, to_torch
from .._ties import exact_scores, row_scale, topk_rows
from ..compute import Compute, device_for, resolve
from ..errors import InputError, ModgapError

__all__ = [
    "DEFAULT_TEMPLATES",
    "ENSEMBLE_TEMPLATES",
    "class_embeddings",
    "ensemble_class_embeddings",
    "merge_zero_shot_counts",
    "prediction_concentration",
    "require_zero_shot",
    "zero_shot_counts",
    "zero_shot_from_counts",
    "zero_shot_from_encoder",
    "zero_shot_labels",
    "zero_shot_metrics",
]

Template = str | Callable[[str], str]

#: The single CLIP prompt.
DEFAULT_TEMPLATES: tuple[str, ...] = ("a photo of a {c}.",)

#: A small ensemble in the style of CLIP's ImageNet prompts (Radford et al. 2021, notebook).
ENSEMBLE_TEMPLATES: tuple[str, ...] = (
    "a photo of a {c}.",
    "a bad photo of a {c}.",
    "a photo of the large {c}.",
    "a photo of the small {c}.",
    "a close-up photo of a {c}.",
    "a bright photo of a {c}.",
    "a cropped photo of a {c}.",
    "art of the {c}.",
)


def _prompt(template: Template, name: str) -> str:
    if callable(template):
        out = template(name)
        if not isinstance(out, str):
            raise ModgapError(f"a template callable returned {type(out).__name__}, not str")
        return out
    if not isinstance(template, str):
        raise ModgapError(f"a template must be a str or a callable, got {type(template).__name__}")
    if "{c}" in template:
        return template.replace("{c}", name)
    if "{}" in template:
        return template.replace("{}", name)
    raise ModgapError(f"template {template!r} has no '{{c}}' placeholder for the class name")


def ensemble_class_embeddings(class_text_emb: Any) -> np.ndarray:
    """Collapse per-template class embeddings ``(c, templates, d)`` to ``(c, d)``: mean of the
    normalised template embeddings, normalised again. A ``(c, d)`` input is only normalised."""
    cte = to_numpy(class_text_emb)
    if cte.ndim == 3:
        c, t, d = cte.shape
        if c == 0 or t == 0:
            raise InputError(f"'class_text_emb' has shape {tuple(cte.shape)}: no class prompts")
        flat = prepare_rows(cte.reshape(c * t, d), "class_text_emb", unit="checked")
        flat = flat / np.linalg.norm(flat, axis=1, keepdims=True)
        cte = flat.reshape(c, t, d).mean(axis=1)
    elif cte.ndim == 2:
        if cte.shape[0] == 0:
            raise InputError("'class_text_emb' is empty: the class list is empty")
        cte = prepare_rows(cte, "class_text_emb", unit="checked")
    else:
        raise InputError(
            "'class_text_emb' must be (classes, d) or (classes, templates, d), "
            f"got shape {tuple(cte.shape)}"
        )
    norms = np.linalg.norm(cte, axis=1, keepdims=True)
    if (norms == 0).any():
        raise InputError("a class's template embeddings cancel out (zero mean); check the prompts")
    return (cte / norms).astype(np.float32)


def class_embeddings(
    encoder: Any,
    class_names: Sequence[str],
    templates: Sequence[Template] = DEFAULT_TEMPLATES,
    *,
    batch_size: int = 256,
    progress: bool = False,
) -> np.ndarray:
    """Encode ``class × template`` prompts with ``encoder.encode_texts`` and ensemble them.

    Parameters
    ----------
    encoder : object
        Anything with ``encode_texts(list[str], batch_size=...) -> (n, d)`` (see
        :func:`modgap.encoders.load_encoder`).
    class_names : sequence of str
        Class names, in label order.
    templates : sequence of str or callable
        Format strings with ``{c}`` (or ``{}``) for the class name, or callables
        ``name -> prompt``. Several templates are ensembled.

    Returns
    -------
    ndarray (c, d)
        One L2-normalised embedding per class.
    """
    names = [str(c) for c in class_names]
    if not names:
        raise ModgapError("the class list is empty; give at least one class name")
    templates = list(templates)
    if not templates:
        raise ModgapError("no prompt templates given; use e.g. 'a photo of a {c}.'")
    prompts = [_prompt(t, c) for c in names for t in templates]
    if progress:
        from rich.progress import Progress

        with Progress(transient=True) as bar:
            task = bar.add_task("encoding class prompts", total=len(prompts))
            chunks = []
            for s in range(0, len(prompts), batch_size):
                chunks.append(to_numpy(encoder.encode_texts(prompts[s : s + batch_size])))
                bar.advance(task, len(prompts[s : s + batch_size]))
            emb = np.concatenate(chunks)
    else:
        emb = to_numpy(encoder.encode_texts(prompts, batch_size=batch_size))
    emb = np.asarray(emb, dtype=np.float32).reshape(len(names), len(templates), -1)
    return ensemble_class_embeddings(emb)


def _normalised_entropy(counts: np.ndarray) -> float:
    """Shannon entropy of ``counts / counts.sum()`` divided by ``log(len(counts))``."""
    c = counts.size
    if c < 2:
        return 1.0  # one class: nothing could be spread more evenly
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum() / np.log(c))


def prediction_concentration(predictions: Any, labels: Any, n_classes: int) -> dict:
    r"""How unevenly the predicted classes are used, next to the same for the true labels.

    With :math:`\hat p_c` the share of images predicted as class ``c`` and :math:`q_c` the
    share labelled ``c``, over the ``C = n_classes`` classes the classifier chooses from:

    * ``prediction_entropy`` :math:`= H(\hat p) / \log C` and ``label_entropy``
      :math:`= H(q) / \log C` (Shannon entropy, natural log; 1 when every class is used
      equally, 0 when one class takes everything; 1 by convention when ``C = 1``);
    * ``prediction_top_share`` :math:`= \max_c \hat p_c` and ``label_top_share``
      :math:`= \max_c q_c`.

    Why these. A hub class, a class prompt close to many images, attracts predictions beyond
    its share of the data, as hub candidates do in retrieval; reducing the modality gap is
    reported to create such hubs. The right value to read a prediction number against is the
    label number next to it, not 1: a perfect classifier reproduces the label distribution
    exactly, however unbalanced; one prompt that wins every image gives entropy 0 and top
    share 1; random guessing gives an entropy near 1 whatever the labels. Both are normalised
    by ``log C`` of the classes offered, not those present, so classes never predicted lower
    the entropy. The entropy sees the whole distribution, the top share the single worst hub,
    which a large ``C`` can hide in the entropy. Accuracy sees neither: two classifiers with
    the same ``acc1`` can spread their errors evenly or pour them into one class.

    Parameters
    ----------
    predictions, labels : array (n,) of int in [0, n_classes)
    n_classes : int

    Returns
    -------
    dict
        The four values above.
    """
    pred = np.bincount(np.asarray(predictions, dtype=np.int64), minlength=n_classes)
    true = np.bincount(np.asarray(labels, dtype=np.int64), minlength=n_classes)
    return _concentration(pred, true)


def _concentration(pred: np.ndarray, true: np.ndarray) -> dict:
    """:func:`prediction_concentration` from the per-class counts of predictions and labels."""
    n = max(int(true.sum()), 1)
    return {
        "prediction_entropy": _normalised_entropy(pred),
        "label_entropy": _normalised_entropy(true),
        "prediction_top_share": float(pred.max() / n),
        "label_top_share": float(true.max() / n),
    }


def require_zero_shot(labels: Any, class_text_emb: Any) -> None:
    """One-line errors when the labels or the class prompts of zero-shot are missing."""
    if labels is None:
        raise InputError(
            "zero-shot classification needs image labels ('labels', one class index per image)"
        )
    if class_text_emb is None:
        raise InputError(
            "zero-shot classification needs class prompt embeddings ('class_text_emb') or an "
            "encoder with class names"
        )


def zero_shot_labels(labels: Any, n_images: int, n_classes: int) -> np.ndarray:
    """The labels as int64 class indices, checked: one per image, integers in
    ``[0, n_classes)``."""
    y = to_numpy(labels)
    if y.ndim != 1 or y.shape[0] != n_images:
        raise InputError(f"'labels' must have shape ({n_images},), got {tuple(y.shape)}")
    if y.size and not np.all(y == np.round(y)):
        raise InputError("'labels' must be integer class indices")
    y = y.astype(np.int64)
    if y.size and (y.min() < 0 or y.max() >= n_classes):
        raise InputError(
            f"'labels' go from {int(y.min())} to {int(y.max())} but there are {n_classes} "
            f"classes; labels must be in [0, {n_classes})"
        )
    return y


def zero_shot_counts(
    image_emb: Any,
    labels: np.ndarray,
    classes: np.ndarray,
    *,
    device: Any = None,
    compute: Compute | None = None,
    predictions: bool = False,
) -> dict:
    """The zero-shot kernel: per-class counts of one block of images, which add up over
    blocks and shards (:func:`merge_zero_shot_counts`) and give the metrics
    (:func:`zero_shot_from_counts`). The in-memory route is one block; a streamed source
    runs it on every block of its images.

    Each image is L2-normalised and assigned its exact top ``min(5, c)`` classes by cosine
    (:func:`modgap._ties.topk_rows`: float32 blocks, the near-ties recomputed exactly, ties to
    the lower class index), so the counts do not depend on the block, device or thread count.

    Parameters
    ----------
    image_emb : array (n, d)
        Image embeddings (float32 rows as an :class:`~modgap.embeddings.EmbeddingSet` holds
        them).
    labels : int64 array (n,)
        Checked class indices (:func:`zero_shot_labels`).
    classes : float32 array (c, d)
        Unit class embeddings (:func:`ensemble_class_embeddings`).
    predictions : bool
        Also return the top-1 class of each image (``"predictions"``).

    Returns
    -------
    dict
        ``n`` images, ``hit5`` (top-5 hits), and per class (length c): ``labels`` (images of
        the class), ``hit1`` (of them predicted correctly), ``predicted`` (images predicted as
        the class).
    """
    import torch

    c, d = classes.shape
    # the float32 unit rows every scoring kernel takes (the one row preparation)
    X = prepare_rows(image_emb, "image_emb", unit="exact", dim=d, min_rows=0)
    y = np.asarray(labels, dtype=np.int64)
    k5 = min(5, c)
    dev = device_for(compute, device)
    Wt = to_torch(prepare_rows(classes, "class_embeddings", unit="exact"), dev)
    yt = torch.from_numpy(y).to(dev)
    top1 = torch.empty(len(y), dtype=torch.int64, device=dev)
    hit5 = torch.empty(len(y), dtype=torch.bool, device=dev)
    step = resolve(compute).rows_per_block(4 * max(c, 1) + 4 * d, buffers=2)
    with torch.no_grad():
        for s in range(0, len(y), step):
            xb = to_torch(X[s : s + step], dev)
            logits = xb @ Wt.T

            def exact(rows, cols, xb=xb):
                return exact_scores(xb, Wt, rows, cols)

            # the exact top classes (modgap._ties): ties go to the lower class index
            top, _ = topk_rows(logits, k5, row_scale(xb, Wt), d, exact)
            top1[s : s + step] = top[:, 0]
            hit5[s : s + step] = (top == yt[s : s + step, None]).any(dim=1)
    pred = top1.cpu().numpy()
    out = {
        "n": int(y.size),
        "hit5": int(hit5.sum()),
        "labels": np.bincount(y, minlength=c),
        "hit1": np.bincount(y[pred == y], minlength=c),
        "predicted": np.bincount(pred, minlength=c),
    }
    if predictions:
        out["predictions"] = pred
    return out


def merge_zero_shot_counts(a: dict, b: dict) -> dict:
    """Add two :func:`zero_shot_counts` results (``b``'s images after ``a``'s)."""
    out = {k: a[k] + b[k] for k in ("n", "hit5", "labels", "hit1", "predicted")}
    if "predictions" in a and "predictions" in b:
        out["predictions"] = np.concatenate([a["predictions"], b["predictions"]])
    return out


def zero_shot_from_counts(counts: dict) -> dict:
    """``acc1``, ``acc5``, ``mean_per_class_recall`` and the prediction concentration from
    merged :func:`zero_shot_counts`.

    ``mean_per_class_recall`` is the mean over the classes present in the labels of
    ``hit1 / labels`` in class order: the arithmetic of
    ``sklearn.metrics.balanced_accuracy_score``, so the same bits.
    """
    n = counts["n"]
    if n == 0:
        raise InputError("zero-shot classification needs at least one image")
    true = np.asarray(counts["labels"])
    present = true > 0
    return {
        "acc1": int(counts["hit1"].sum()) / n,
        "acc5": counts["hit5"] / n,
        "mean_per_class_recall": float(np.mean(counts["hit1"][present] / true[present])),
        **_concentration(np.asarray(counts["predicted"]), true),
    }


def zero_shot_metrics(
    image_emb: Any,
    labels: Any,
    class_text_emb: Any,
    *,
    device: Any = None,
    return_predictions: bool = False,
    compute: Compute | None = None,
) -> dict:
    """Zero-shot ``acc1``, ``acc5`` and ``mean_per_class_recall`` from class embeddings.

    Parameters
    ----------
    image_emb : array (n, d)
        Image embeddings.
    labels : array (n,) of int
        True class index of each image, into the rows of ``class_text_emb``.
    class_text_emb : array (c, d) or (c, templates, d)
        Class prompt embeddings; several templates per class are ensembled
        (:func:`ensemble_class_embeddings`).
    device : str, optional
        Torch device for the logits (default: the compute context's).
    return_predictions : bool
        Also return ``"predictions"`` (top-1 class per image, a list).
    compute : Compute, optional
        Device and memory budget (default: :func:`modgap.compute.current`).

    Returns
    -------
    dict
        ``acc1``, ``acc5``, ``mean_per_class_recall`` in [0, 1], and the prediction
        concentration next to the labels' (:func:`prediction_concentration`):
        ``prediction_entropy``, ``label_entropy``, ``prediction_top_share``,
        ``label_top_share``. One block of :func:`zero_shot_counts`, the kernel of the
        streamed route (:func:`modgap.stream.tasks.stream_zero_shot`) too.
    """
    require_zero_shot(labels, class_text_emb)
    W = ensemble_class_embeddings(class_text_emb)
    X = prepare_rows(image_emb, "image_emb", unit="checked", dim=W.shape[1])
    y = zero_shot_labels(labels, X.shape[0], W.shape[0])
    counts = zero_shot_counts(
        X, y, W, device=device, compute=compute, predictions=return_predictions
    )
    out = zero_shot_from_counts(counts)
    if return_predictions:
        out["predictions"] = counts["predictions"].tolist()
    return out


def zero_shot_from_encoder(
    image_emb: Any,
    labels: Any,
    encoder: Any,
    class_names: Sequence[str],
    templates: Sequence[Template] = DEFAULT_TEMPLATES,
    **kwargs: Any,
) -> dict:
    """Encode the class prompts with ``encoder`` then :func:`zero_shot_metrics`."""
    if labels is None:
        raise InputError(
            "zero-shot classification needs image labels ('labels', one class index per image)"
        )
    W = class_embeddings(encoder, class_names, templates)
    return zero_shot_metrics(image_emb, labels, W, **kwargs)
