"""Matched vs unmatched cosine similarity distributions."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..compute import Compute, resolve
from ._common import as_pairs, canonical_order

__all__ = ["DEFAULT_QUANTILES", "MAX_UNMATCHED", "cosine_stats"]

DEFAULT_QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
#: unmatched pairs whose cosines are materialised for the quantiles (8 MB of float64).
MAX_UNMATCHED = 1_000_000
_CHUNK = 65_536


def _summary(values: np.ndarray, mean: float, std: float, count: int, quantiles) -> dict:
    out = {"mean": mean, "std": std, "count": int(count)}
    if values.size:
        for q, v in zip(quantiles, np.quantile(values, quantiles), strict=True):
            out[f"q{round(q * 100):02d}"] = float(v)
    return out


def cosine_stats(
    X: Any,
    Y: Any,
    text_to_image: Any = None,
    quantiles: tuple[float, ...] = DEFAULT_QUANTILES,
    max_unmatched: int = MAX_UNMATCHED,
    seed: int = 0,
    compute: Compute | None = None,
) -> dict:
    r"""Cosine similarity of matched pairs vs unmatched image-text pairs.

    Matched: :math:`c_j = \cos(x_{\pi(j)}, y_j)` for every text :math:`j` and its image
    :math:`\pi(j)`. Unmatched: :math:`\cos(x_i, y_j)` for every :math:`(i, j)` with
    :math:`i \ne \pi(j)`. Mean and (population) standard deviation of the unmatched cosines are
    exact for any size, from sums:
    :math:`\sum_{i,j} x_i\cdot y_j = (\sum_i x_i)\cdot(\sum_j y_j)` and
    :math:`\sum_{i,j} (x_i\cdot y_j)^2 = \langle X^\top X, Y^\top Y\rangle_F`, minus the matched
    terms. Quantiles are exact when there are at most ``max_unmatched`` unmatched pairs, and
    otherwise come from that many pairs drawn uniformly with ``seed`` (in a canonical row order,
    so the input's row order does not matter).

    The distance between the two distributions is what retrieval uses; a modality gap shifts
    both down together (Liang et al. 2022), so their means alone say little about the gap.

    Parameters
    ----------
    X, Y : array (n, d), (m, d)
        Image and text embeddings (rows L2-normalised first), paired by ``text_to_image``.
    text_to_image : array (m,) of int, optional
        Row ``i`` <-> row ``i`` when absent.
    quantiles : tuple of float
        Reported as ``q05``, ``q25``, ... (percent, two digits).
    max_unmatched : int
        Cap on unmatched cosines materialised for the quantiles.
    seed : int
        Seed of the unmatched sample.
    compute : Compute, optional
        Memory budget of the blocks (default: :func:`modgap.compute.current`).

    Returns
    -------
    dict
        ``{"matched": {mean, std, count, q..}, "unmatched": {mean, std, count, q..}}``;
        ``unmatched`` has count 0 and ``nan`` statistics when every pair is matched.
    """
    X, Y, t2i = as_pairs(X, Y, text_to_image)
    n, m = X.shape[0], Y.shape[0]
    matched = np.einsum("ij,ij->i", X[t2i], Y)
    out = {"matched": _summary(matched, float(matched.mean()), float(matched.std()), m, quantiles)}

    count = n * m - m
    if count == 0:
        nan = float("nan")
        out["unmatched"] = _summary(np.empty(0), nan, nan, 0, quantiles)
        return out
    total = float(X.sum(0) @ Y.sum(0)) - float(matched.sum())
    total_sq = float(np.sum((X.T @ X) * (Y.T @ Y))) - float(matched @ matched)
    mean = total / count
    std = float(np.sqrt(max(total_sq / count - mean**2, 0.0)))
    if count <= max_unmatched:
        values = []
        step = resolve(compute).rows_per_block(8 * n, buffers=2)
        for a in range(0, m, step):  # blocks of texts: (step, n) float64 cosines
            b = min(a + step, m)
            s = Y[a:b] @ X.T
            s[np.arange(b - a), t2i[a:b]] = np.nan
            values.append(s[~np.isnan(s)])
        sample = np.concatenate(values)
    else:
        xo, yo = canonical_order(X, Y), canonical_order(Y, X)
        rng = np.random.default_rng(seed)
        pieces, got = [], 0
        while got < max_unmatched:  # chunks: a gathered (chunk, d) pair of row blocks at a time
            i = xo[rng.integers(0, n, size=_CHUNK)]
            j = yo[rng.integers(0, m, size=_CHUNK)]
            keep = i != t2i[j]
            i, j = i[keep], j[keep]
            pieces.append(np.einsum("ij,ij->i", X[i], Y[j]))
            got += i.size
        sample = np.concatenate(pieces)[:max_unmatched]
    out["unmatched"] = _summary(sample, mean, std, count, quantiles)
    return out
