"""Matplotlib figures of the benchmark report, returned as PNG bytes (Agg backend, no display).

Every figure takes ``views``: reducer name -> the evaluated :class:`EmbeddingSet` after that
reducer ("none" = the original embeddings), and draws one small panel per reducer.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from ..measures.centroid import per_dimension_gap

__all__ = [
    "cosine_histogram_figure",
    "metric_bars_figure",
    "pca_pairs_figure",
    "per_dimension_gap_figure",
]

IMAGE_COLOUR = "#1f77b4"
TEXT_COLOUR = "#ff7f0e"


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    _plt().close(fig)
    return buf.getvalue()


def _grid(n: int, ncols: int = 4, size: float = 3.2):
    plt = _plt()
    ncols = min(ncols, n)
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(size * ncols, size * nrows), squeeze=False, layout="constrained"
    )
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    return fig, axes.ravel()


def _unit(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    n = np.linalg.norm(a, axis=1, keepdims=True)
    return a / np.where(n == 0, 1, n)


def pca_pairs_figure(views: dict, max_pairs: int = 150, seed: int = 0) -> bytes:
    """2-D PCA of images ∪ texts per reducer, with a grey line from each image to its caption
    (up to ``max_pairs`` pairs drawn, chosen at random with ``seed``)."""
    fig, axes = _grid(len(views))
    rng = np.random.default_rng(seed)
    for ax, (name, emb) in zip(axes, views.items(), strict=False):
        X, Y = _unit(emb.image_emb), _unit(emb.text_emb)
        Z = np.concatenate([X, Y])
        mu = Z.mean(axis=0)
        _, _, vt = np.linalg.svd(Z - mu, full_matrices=False)
        P = (Z - mu) @ vt[:2].T
        # fewer than two components (d = 1): a flat second axis, not a missing one
        P = np.pad(P, ((0, 0), (0, 2 - P.shape[1])))
        px, py = P[: len(X)], P[len(X) :]
        if emb.text_to_image is not None:
            sel = rng.choice(len(Y), size=min(max_pairs, len(Y)), replace=False)
            for j in sel:
                a, b = px[emb.text_to_image[j]], py[j]
                ax.plot([a[0], b[0]], [a[1], b[1]], color="0.7", lw=0.5, zorder=1)
        ax.scatter(px[:, 0], px[:, 1], s=6, c=IMAGE_COLOUR, label="image", zorder=2)
        ax.scatter(py[:, 0], py[:, 1], s=6, c=TEXT_COLOUR, label="text", zorder=2)
        ax.set_title(name, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0].legend(loc="best", fontsize=8)
    fig.suptitle("PCA of both modalities (lines join matched pairs)", fontsize=11)
    return _png(fig)


def _cosines(emb: Any, n_unmatched: int = 20_000, seed: int = 0):
    X, Y = _unit(emb.image_emb), _unit(emb.text_emb)
    t2i = emb.text_to_image
    matched = np.einsum("ij,ij->i", X[t2i], Y)
    rng = np.random.default_rng(seed)
    i = rng.integers(0, len(X), n_unmatched)
    j = rng.integers(0, len(Y), n_unmatched)
    keep = t2i[j] != i
    unmatched = np.einsum("ij,ij->i", X[i[keep]], Y[j[keep]])
    return matched, unmatched


def cosine_histogram_figure(views: dict, seed: int = 0) -> bytes:
    """Histograms of matched vs unmatched image-text cosines per reducer (pairs needed; the
    unmatched ones are a random sample of up to 20,000 non-pairs)."""
    paired = {k: v for k, v in views.items() if v.text_to_image is not None}
    fig, axes = _grid(max(1, len(paired)))
    for ax, (name, emb) in zip(axes, paired.items(), strict=False):
        matched, unmatched = _cosines(emb, seed=seed)
        lo = min(matched.min(), unmatched.min())
        hi = max(matched.max(), unmatched.max())
        bins = np.linspace(lo, hi, 40)
        ax.hist(unmatched, bins=bins, density=True, alpha=0.6, color="0.5", label="unmatched")
        ax.hist(matched, bins=bins, density=True, alpha=0.6, color="#2ca02c", label="matched")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("cosine", fontsize=8)
        ax.tick_params(labelsize=7)
    if paired:
        axes[0].legend(fontsize=8)
    fig.suptitle("Matched vs unmatched image-text cosine", fontsize=11)
    return _png(fig)


def per_dimension_gap_figure(views: dict, top: int = 30) -> bytes:
    """Per reducer: the ``top`` largest squared centroid-gap components Δ_k² (sorted), with
    the number of dimensions that carry 50% and 90% of ‖Δ‖²."""
    fig, axes = _grid(len(views))
    for ax, (name, emb) in zip(axes, views.items(), strict=False):
        per = per_dimension_gap(emb.image_emb, emb.text_emb)  # the numbers of the gap table
        sq = np.sort(per["gap_sq"])[::-1]
        d50, d90 = per["dims_50"], per["dims_90"]
        ax.bar(np.arange(min(top, len(sq))), sq[:top], color="#9467bd")
        ax.set_title(
            f"{name}\n‖Δ‖={np.sqrt(sq.sum()):.3f}, 50%: {d50} dims, 90%: {d90}", fontsize=9
        )
        ax.set_xlabel("dimension (sorted)", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.suptitle("Per-dimension gap Δ_k² (largest first)", fontsize=11)
    return _png(fig)


def metric_bars_figure(doc: dict, columns: Any) -> bytes:
    """One bar panel per summary metric, one bar per row, with its 95% interval over the splits
    as an error bar. ``columns``: (key, header, better) triples; a dashed line marks the value
    without reduction."""
    results = doc["results"]
    names = list(results)

    def stat(name: str, key: str) -> tuple[float, float]:
        m = results[name].get("metrics", {}).get(key)
        if m is None or not isinstance(m["mean"], int | float) or not np.isfinite(m["mean"]):
            return np.nan, 0.0
        lo, hi = m["ci95"]
        half = (hi - lo) / 2 if isinstance(lo, int | float) and np.isfinite(lo) else 0.0
        return float(m["mean"]), float(half)

    cols = [(k, h, b) for k, h, b in columns if any(np.isfinite(stat(n, k)[0]) for n in names)]
    fig, axes = _grid(max(1, len(cols)), ncols=4, size=3.0)
    colours = _plt().cm.tab10(np.arange(len(names)) % 10)
    for ax, (key, header, better) in zip(axes, cols, strict=False):
        means, halves = zip(*(stat(n, key) for n in names), strict=True)
        ax.bar(np.arange(len(names)), means, yerr=halves, color=colours, capsize=2)
        if "none" in results and np.isfinite(stat("none", key)[0]):
            ax.axhline(stat("none", key)[0], color="k", ls="--", lw=0.8)
        ax.set_xticks(np.arange(len(names)))
        ax.set_xticklabels(names, rotation=60, ha="right", fontsize=7)
        arrow = {"high": " (↑ better)", "low": " (↓ smaller gap)"}.get(better or "", "")
        ax.set_title(header + arrow, fontsize=9)
        ax.tick_params(axis="y", labelsize=7)
    fig.suptitle("Metrics per row, 95% intervals over the splits (dashed: none)", fontsize=11)
    return _png(fig)
