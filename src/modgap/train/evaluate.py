"""Evaluation of a matching model: retrieval (instance- or class-level), zero-shot accuracy and
the modality-gap measures of its joint space.

Instance-level retrieval follows the VSE++/VSE∞ protocol through
:func:`modgap.tasks.retrieval.retrieval_metrics` (COCO 5-fold 1K via ``folds=5``).

Class-level relevance (for captions that only name a class, e.g. Fashion-MNIST prompts): a
retrieved item is relevant when it has the query's class. ``recall@K`` is the fraction of
queries with at least one relevant item in the top K, with the same optimistic tie rule as the
instance protocol:

    rank(q) = 1 + #{non-relevant c : s(q, c) > max over relevant c' of s(q, c')}

``rsum`` is again the sum of the six recalls in percent. With few classes this saturates
quickly. The ranks come from :func:`modgap.tasks.ranking.first_relevant_ranks` (labels as
relevance), the kernel of the instance protocol too. Mean average precision
(``class_map_t2i``/``class_map_i2t``; precision at each relevant item, ranks optimistic on ties
like the recalls) is reported next to it because it does not.
"""

from __future__ import annotations

import numpy as np
import torch

from ..embeddings import EmbeddingSet, FeatureSet
from ..errors import ModgapError
from ..measures import measure_all
from ..tasks.ranking import first_relevant_ranks
from ..tasks.retrieval import retrieval_metrics
from ..tasks.zeroshot import zero_shot_metrics

__all__ = ["class_retrieval_metrics", "encode_data", "evaluate_model"]


@torch.no_grad()
def _encode(encoder, x: np.ndarray, lengths: np.ndarray | None, device, batch_size: int):
    out = []
    for lo in range(0, x.shape[0], batch_size):
        xb = torch.from_numpy(np.array(x[lo : lo + batch_size])).to(device)  # copy: x may be mmap
        if xb.is_floating_point():
            xb = xb.float()
        lb = None
        if lengths is not None:
            lb = torch.from_numpy(lengths[lo : lo + batch_size]).to(device)
            if not xb.is_floating_point():
                xb = xb[:, : int(lb.max())]
        out.append(encoder(xb, lb).float().cpu())
    return torch.cat(out).numpy()


@torch.no_grad()
def encode_data(model, data: FeatureSet, device=None, batch_size: int = 1024):
    """Joint embeddings ``(images, texts, class_texts or None)`` as float32 numpy."""
    was_training = model.training
    model.eval()
    try:
        img = _encode(model.encode_images, data.images, None, device, batch_size)
        txt = _encode(model.encode_texts, data.texts, data.text_lengths, device, batch_size)
        cls = None
        if data.class_texts is not None and data.text_kind == "features":
            ct = np.asarray(data.class_texts, dtype=np.float32)
            flat = ct.reshape(-1, ct.shape[-1])
            cls = _encode(model.encode_texts, flat, None, device, batch_size)
            cls = cls.reshape(*ct.shape[:-1], cls.shape[-1])
    finally:
        model.train(was_training)
    return img, txt, cls


def _average_precision(s: torch.Tensor, rel: torch.Tensor) -> torch.Tensor:
    """AP of each row: mean over its relevant items of (rank among relevant) / (rank overall),
    ranks optimistic on ties as for the recalls.

    One sort per row (numpy's, much faster than torch's on CPU); the relevant items are located
    in the sorted rows by a single binary search over all rows at once, the rows being separated
    by offsets larger than their range (float64 keeps every float32 score distinct)."""
    sc = s.detach().cpu().numpy().astype(np.float64)
    rl = rel.cpu().numpy()
    b, n = sc.shape
    n_rel = rl.sum(1)
    width = int(n_rel.max()) if b else 0
    if width == 0:
        return torch.zeros(b)
    span = float(sc.max() - sc.min()) + 1.0
    off = span * np.arange(b, dtype=np.float64)[:, None]
    flat = (np.sort(sc, axis=1) + off).ravel()
    rel_scores = -np.sort(-np.where(rl, sc, -np.inf), axis=1)[:, :width]  # descending
    valid = np.arange(1, width + 1)[None, :] <= n_rel[:, None]
    q = np.where(valid, rel_scores, 0.0) + off
    not_above = np.searchsorted(flat, q.ravel(), side="right").reshape(b, width)
    rank = n - (not_above - n * np.arange(b)[:, None]) + 1  # 1 + #scores strictly above
    prec = np.where(valid, np.arange(1, width + 1)[None, :] / rank, 0.0)
    return torch.from_numpy(prec.sum(1) / np.maximum(n_rel, 1))


def class_retrieval_metrics(
    image_emb: np.ndarray,
    text_emb: np.ndarray,
    image_labels: np.ndarray,
    text_labels: np.ndarray,
    ks=(1, 5, 10),
    block_size: int = 1024,
) -> dict:
    """Class-level retrieval (see module docstring): Recall@K both ways, rSum and mAP."""
    x = torch.from_numpy(np.ascontiguousarray(image_emb, dtype=np.float32))
    y = torch.from_numpy(np.ascontiguousarray(text_emb, dtype=np.float32))
    li = torch.from_numpy(np.asarray(image_labels, dtype=np.int64))
    lt = torch.from_numpy(np.asarray(text_labels, dtype=np.int64))
    # ranks: the one ranking kernel of retrieval, with class labels as relevance
    r_x, r_y = first_relevant_ranks(x, y, li, lt, block_size=block_size)
    out: dict = {}
    for name, q, c, lq, lc, r in (("i2t", x, y, li, lt, r_x), ("t2i", y, x, lt, li, r_y)):
        aps = []
        for lo in range(0, q.shape[0], block_size):
            qb, lb = q[lo : lo + block_size], lq[lo : lo + block_size]
            rel = lb[:, None] == lc[None, :]
            aps.append(_average_precision(qb @ c.T, rel)[rel.any(1)])
        r = r[r > 0].numpy()  # queries with a relevant item
        key = "text_retrieval_recall" if name == "i2t" else "image_retrieval_recall"
        for k in ks:
            out[f"{key}@{k}"] = float(np.mean(r <= k))
        out[f"class_map_{name}"] = float(torch.cat(aps).mean())
        out[f"{name}_median_rank"] = float(np.median(r))
    out["rsum"] = 100.0 * sum(
        out[f"{key}@{k}"] for key in ("text_retrieval_recall", "image_retrieval_recall") for k in ks
    )
    return out


def evaluate_model(
    model,
    data: FeatureSet,
    relevance: str = "instance",
    folds: int | None = None,
    measures: list[str] | None = None,
    zero_shot: bool = True,
    device=None,
    batch_size: int = 1024,
) -> dict:
    """Retrieval metrics (+ zero-shot + gap measures) of ``model`` on ``data``; flat dict."""
    img, txt, cls = encode_data(model, data, device, batch_size)
    if relevance == "instance":
        ks = tuple(k for k in (1, 5, 10) if k <= min(data.n_images, data.n_texts) // (folds or 1))
        out = retrieval_metrics(img, txt, data.text_to_image, ks=ks or (1,), folds=folds)
    elif relevance == "class":
        if data.labels is None:
            raise ModgapError("class-level relevance needs image labels")
        out = class_retrieval_metrics(img, txt, data.labels, data.labels[data.text_to_image])
    else:
        raise ModgapError(f"unknown relevance {relevance!r} (choose from instance, class)")
    out = {k: float(v) for k, v in out.items()}
    if zero_shot and cls is not None and data.labels is not None:
        zs = zero_shot_metrics(img, data.labels, cls)
        out.update({f"zeroshot_{k}": float(v) for k, v in zs.items() if _is_number(v)})
    if measures:
        emb = EmbeddingSet(img, txt, text_to_image=data.text_to_image, normalize=False)
        for k, v in measure_all(emb, only=list(measures)).items():
            if _is_number(v):
                out[f"gap_{k}"] = float(v)
    return out


def _is_number(v) -> bool:
    return isinstance(v, int | float | np.floating | np.integer) and not isinstance(v, bool)
