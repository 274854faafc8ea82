r"""Clustering of the union of image and text embeddings (as in Fill the Gap, Role et al. 2025).

k-means runs on ``Z = [X; Y]`` (rows L2-normalised). Three questions are asked of the clusters:

* **Do they follow meaning?** Adjusted scores against semantic labels, when image labels
  exist (a text takes the class of its image): ``cluster_ami`` (adjusted mutual information)
  and ``cluster_ari`` (adjusted Rand index), scikit-learn. Both are 0 in expectation for a
  random clustering (their chance level) and 1 for the classes themselves. Raw NMI is not
  reported: against many small groups it reads high for random clusterings (0.72 for a random
  clustering of COCO pair ids, 0.70 for raw CLIP) and cannot tell them apart.
* **Do they keep pairs together?** When the set is paired, ``pair_coclustering`` is the share of
  (text, its image) pairs that land in one cluster, next to ``pair_coclustering_chance``
  :math:`= \sum_C p_I(C)\,p_T(C)`, the share a random image and a random text would get with
  these cluster sizes (:math:`p_I(C)`, :math:`p_T(C)`: shares of the images and of the texts in
  cluster C). A gap-free space keeps pairs together far above chance; a gap that splits
  clusters by modality drives it to 0.
* **Do they follow modality?** *Modality purity*: for cluster ``C`` with ``n_C`` points of
  which ``i_C`` are images and ``t_C`` texts,

      purity = Σ_C (n_C / N) · max(i_C, t_C) / n_C = (1/N) Σ_C max(i_C, t_C).

  It is 1 when every cluster holds a single modality (the gap dominates) and equals
  ``max(p, 1 − p)`` with ``p = n_texts / N`` when every cluster mixes the modalities in the
  global proportion (modality-blind; 0.5 for one caption per image). That baseline is reported
  as ``modality_purity_blind``.

Defaults: ``k`` = number of classes when labels exist, else ``min(n_images, 100)``. k-means:
scikit-learn ``KMeans`` (k-means++, ``n_init=3``, ``random_state=seed``). Sets larger than
``max_points`` (default 20,000) are subsampled by image (captions follow their image) with the
same seed.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._array import check_pairing, prepare_rows, to_numpy
from ..errors import InputError, ModgapError

__all__ = ["cluster_points", "cluster_sample", "clustering_metrics", "modality_purity"]

DEFAULT_MAX_CLUSTERS = 100


def modality_purity(cluster: Any, is_text: Any) -> float:
    """``(1/N) Σ_C max(#images in C, #texts in C)``: 1 = clusters split by modality, and
    ``max(p, 1 - p)`` (p = share of texts) for modality-blind clusters."""
    cluster = np.asarray(cluster)
    is_text = np.asarray(is_text, dtype=bool)
    if cluster.shape != is_text.shape or cluster.size == 0:
        raise ModgapError("cluster and is_text must be non-empty and of the same length")
    _, inv = np.unique(cluster, return_inverse=True)
    texts = np.bincount(inv, weights=is_text.astype(np.float64))
    sizes = np.bincount(inv).astype(np.float64)
    return float(np.maximum(texts, sizes - texts).sum() / cluster.size)


def clustering_metrics(
    image_emb: Any,
    text_emb: Any,
    text_to_image: Any = None,
    labels: Any = None,
    *,
    n_clusters: int | None = None,
    seed: int = 0,
    n_init: int = 3,
    max_points: int = 20_000,
) -> dict:
    """k-means on images ∪ texts: adjusted scores against classes, pair co-clustering and
    modality purity (see the module docstring).

    Parameters
    ----------
    image_emb : array (n_i, d)
    text_emb : array (n_t, d)
    text_to_image : array (n_t,) of int, optional
        Pairing; needed for labels on texts. Row ``i`` ↔ row ``i`` when absent and the counts
        match.
    labels : array (n_i,) of int, optional
        Image classes; texts inherit their image's class.
    n_clusters : int, optional
        k; default number of classes, or ``min(n_images, 100)`` with pair ids.
    seed : int
        k-means and subsampling seed.
    n_init : int
        k-means restarts (the best inertia is kept).
    max_points : int
        Subsample (by image) above this many points in total.

    Returns
    -------
    dict
        ``cluster_ami``, ``cluster_ari`` (with labels), ``pair_coclustering`` and
        ``pair_coclustering_chance`` (with pairs), ``modality_purity``,
        ``modality_purity_blind``, ``n_clusters``.
    """
    X = prepare_rows(image_emb, "image_emb", unit="checked")
    Y = prepare_rows(text_emb, "text_emb", unit="checked", dim=X.shape[1], min_rows=0)
    n_i, n_t = len(X), len(Y)
    if n_t == 0 and labels is None:
        raise InputError("clustering without texts needs image labels (nothing to compare)")
    if text_to_image is None and n_i == n_t:
        text_to_image = np.arange(n_t)
    t2i = None if text_to_image is None else check_pairing(text_to_image, n_i, n_t)
    y_img = None if labels is None else to_numpy(labels).astype(np.int64)
    if y_img is not None and y_img.shape != (n_i,):
        raise InputError(f"'labels' must have shape ({n_i},), got {tuple(y_img.shape)}")

    keep_i, keep_t = cluster_sample(n_i, n_t, t2i, max_points, seed)
    default_k = None if y_img is None else len(np.unique(y_img))
    return cluster_points(
        X[keep_i],
        Y[keep_t],
        None if t2i is None else t2i[keep_t],
        keep_i,
        None if y_img is None else y_img[keep_i],
        default_k=default_k,
        n_clusters=n_clusters,
        seed=seed,
        n_init=n_init,
        has_texts=n_t > 0,
    )


def cluster_sample(
    n_i: int, n_t: int, text_to_image: np.ndarray | None, max_points: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """The rows :func:`clustering_metrics` clusters: all of them up to ``max_points`` points,
    else a uniform sample of ``max(2, ⌊n_i · max_points / (n_i + n_t)⌋)`` images
    (``numpy.random.default_rng(seed).choice``, sorted) with all their captions (without
    pairs, texts sampled the same way). The same rows in memory and on a streamed source.

    Returns ``(image rows, text rows)``, sorted int64.
    """
    rng = np.random.default_rng(seed)
    keep_t = np.arange(n_t)
    if n_i + n_t > max_points:
        keep_i = np.sort(
            rng.choice(n_i, size=max(2, int(n_i * max_points / (n_i + n_t))), replace=False)
        )
        if text_to_image is not None:
            mask = np.zeros(n_i, dtype=bool)
            mask[keep_i] = True
            keep_t = np.flatnonzero(mask[text_to_image])
        elif n_t:
            keep_t = np.sort(
                rng.choice(n_t, size=max(2, int(n_t * max_points / (n_i + n_t))), replace=False)
            )
    else:
        keep_i = np.arange(n_i)
    return keep_i.astype(np.int64), keep_t.astype(np.int64)


def cluster_points(
    X: Any,
    Y: Any,
    text_image: np.ndarray | None,
    image_rows: np.ndarray,
    image_labels: np.ndarray | None,
    *,
    default_k: int | None,
    n_clusters: int | None = None,
    seed: int = 0,
    n_init: int = 3,
    has_texts: bool | None = None,
) -> dict:
    """k-means on the rows :func:`cluster_sample` chose, and the scores of
    :func:`clustering_metrics`.

    ``X``, ``Y``: the chosen image and text rows; ``text_image``: the global image row of each
    chosen text (None: unpaired); ``image_rows``: the global row of each chosen image (sorted);
    ``image_labels``: the chosen images' classes; ``default_k``: the number of classes of all
    the labels (None without labels); ``has_texts``: whether the whole set has texts
    (default: whether ``Y`` has rows).
    """
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_mutual_info_score, adjusted_rand_score

    keep_i = np.arange(len(X))
    keep_t = np.arange(len(Y))
    t2i = None if text_image is None else np.searchsorted(image_rows, text_image)
    y_img = image_labels
    Z = prepare_rows(np.concatenate([X[keep_i], Y[keep_t]]), "points", unit="exact")
    is_text = np.r_[np.zeros(len(keep_i), bool), np.ones(len(keep_t), bool)]

    if default_k is None:
        default_k = min(len(keep_i), DEFAULT_MAX_CLUSTERS)
    k = int(n_clusters) if n_clusters is not None else max(2, default_k)
    if k < 2 or k > len(Z):
        raise ModgapError(f"n_clusters must be in [2, {len(Z)}], got {k}")

    km = KMeans(n_clusters=k, n_init=n_init, random_state=seed).fit(Z)
    assign = km.labels_
    a_img, a_txt = assign[: len(keep_i)], assign[len(keep_i) :]
    p = is_text.mean()
    out: dict[str, Any] = {}
    if y_img is not None:
        # a text takes its image's class; without pairs, texts have no class and are left out
        if t2i is not None:
            semantic = np.r_[y_img[keep_i], y_img[t2i[keep_t]]]
            points = assign
        else:
            semantic, points = y_img[keep_i], a_img
        out["cluster_ami"] = float(adjusted_mutual_info_score(semantic, points))
        out["cluster_ari"] = float(adjusted_rand_score(semantic, points))
    if t2i is not None and len(keep_t):
        partner = a_img[t2i[keep_t]]
        out["pair_coclustering"] = float(np.mean(partner == a_txt))
        p_img = np.bincount(a_img, minlength=k) / max(len(a_img), 1)
        p_txt = np.bincount(a_txt, minlength=k) / max(len(a_txt), 1)
        out["pair_coclustering_chance"] = float(p_img @ p_txt)
    if (
        len(Y) if has_texts is None else has_texts
    ):  # images alone (a zero-shot set) have no modality to mix
        out["modality_purity"] = modality_purity(assign, is_text)
        out["modality_purity_blind"] = float(max(p, 1 - p))
    out["n_clusters"] = k
    return out
