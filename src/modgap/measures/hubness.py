r"""Hubness of cross-modal retrieval: how unevenly candidates appear in the queries' top-k.

The k-occurrence of a candidate ``c`` is :math:`N_k(c) = \#\{q : c \in \mathrm{top}_k(q)\}`
(Radovanović, Nanopoulos & Ivanović, "Hubs in space: popular nearest neighbors in
high-dimensional data", JMLR 11, 2010). Hubs have large :math:`N_k`, anti-hubs
:math:`N_k = 0`; the paper's measure of hubness is the skewness of the :math:`N_k`
distribution. Computed both ways: texts querying images (``t2i``: the k-occurrence of each
image) and images querying texts (``i2t``: of each text).

Every number comes with its value under **uniformly random retrieval** with the same counts
(each query's top-k a uniform draw of ``k`` of the ``n_c`` candidates), under which each
:math:`N_k(c) \sim \mathrm{Binomial}(n_q, p)`, :math:`p = k / n_c`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .._array import prepare_rows, to_numpy, to_torch
from .._ties import exact_scores, row_scale, score_block_rows, topk_rows
from ..compute import Compute, device_for
from ..errors import ModgapError

__all__ = [
    "MIN_HUBNESS_POOL",
    "hubness",
    "hubness_from_topk",
    "hubness_k",
    "hubness_skip_reason",
    "hubness_statistics",
    "k_occurrence",
    "random_retrieval_hubness",
]

#: the smallest pool (rows of the smaller modality) :func:`hubness_k` measures hubness on
MIN_HUBNESS_POOL = 50


def hubness_k(n_images: int, n_texts: int) -> int:
    r"""Neighbours per query of the gap measure (in memory and streamed): with
    :math:`n = \min(n_\mathrm{images}, n_\mathrm{texts})`, :math:`k = \min(10, \lfloor
    \sqrt n\rfloor)`, or 0 (skip, :func:`hubness_skip_reason`) when :math:`n <`
    :data:`MIN_HUBNESS_POOL`.

    Why: hubness is the skew of :math:`N_k` when :math:`k \ll n` (Radovanović et al. 2010
    use :math:`k = 5`–10 on thousands of points); as :math:`k/n \to 1` every candidate is in
    nearly every top-k and :math:`N_k` is flat whatever the geometry (10 class prompts with
    :math:`k = 9` read the same skew for every reducer). :math:`\lfloor\sqrt n\rfloor`, the
    usual k-NN rule, keeps :math:`k/n \le 1/\sqrt n` (at most 1/7 from 50 rows up), and 10
    from 100 rows on, so every set of 100 rows or more keeps the k it always had."""
    n = min(int(n_images), int(n_texts))
    return 0 if n < MIN_HUBNESS_POOL else min(10, math.isqrt(n))


def hubness_skip_reason(n_images: int, n_texts: int) -> str | None:
    """Why the hubness measure is skipped on these counts (None when it runs)."""
    n = min(int(n_images), int(n_texts))
    if n >= MIN_HUBNESS_POOL:
        return None
    return (
        f"only {n} rows in the smaller modality (fewer than {MIN_HUBNESS_POOL}): a top-k over "
        "so few candidates puts nearly every one in every list, and its skew says nothing"
    )


def _unit_tensor(x: Any, name: str, device: Any, dim: int | None):
    """The rows hubness ranks: float32 unit rows of the one row preparation
    (:func:`modgap._array.prepare_rows`, ``unit="exact"``), the rows of every route."""
    return to_torch(prepare_rows(x, name, dim=dim, unit="exact"), device).contiguous()


def k_occurrence(
    queries: Any,
    candidates: Any,
    k: int = 10,
    *,
    block_size: int | None = None,
    device: Any = None,
    compute: Compute | None = None,
) -> np.ndarray:
    """:math:`N_k(c)` for every candidate: how many queries have ``c`` in their exact top-k.

    Scores are cosines. The top-k is exact (:func:`modgap._ties.topk_rows`: float32 blocks,
    near-ties decided by reproducible float64 scores, exact ties to the lower candidate
    index), so the counts do not depend on the BLAS kernel, the block size or the threads.

    Parameters
    ----------
    queries : array (n_q, d)
    candidates : array (n_c, d)
    k : int
        Neighbours per query, ``1 <= k < n_c``.
    block_size : int, optional
        Queries per score block (default: :func:`modgap._ties.score_block_rows`, two
        ``block × n_c`` float32 blocks within the compute context's memory budget, one at most
        16 MiB); one block buffer is reused for every block.
    device, compute
        Where to compute and the memory budget.

    Returns
    -------
    ndarray (n_c,) of int64
        Sums to ``k n_q``.
    """
    import torch

    dev = device_for(compute, device)
    Q = _unit_tensor(queries, "queries", dev, None)
    C = _unit_tensor(candidates, "candidates", dev, Q.shape[1])
    n_q, n_c = Q.shape[0], C.shape[0]
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or not 1 <= k < n_c:
        raise ModgapError(
            f"hubness needs 1 <= k < the {n_c} candidates, got k={k!r}; use a smaller k"
        )
    if block_size is None:
        # the score block and torch.topk's work space
        block_size = score_block_rows(n_c, 2, compute)
    if block_size < 1:
        raise ModgapError(f"block_size must be positive, got {block_size}")
    counts = torch.zeros(n_c, dtype=torch.int64, device=dev)
    scale = row_scale(Q, C)
    with torch.no_grad():
        # every block is written into one buffer: a fresh one per block costs page faults
        S_buf = torch.empty(min(block_size, n_q) * n_c, dtype=Q.dtype, device=dev)
        for s in range(0, n_q, block_size):
            q = Q[s : s + block_size]
            S = torch.mm(q, C.T, out=S_buf[: q.shape[0] * n_c].view(q.shape[0], n_c))

            def exact(rows, cols, s=s):
                return exact_scores(Q, C, rows + s, cols)

            ids, _ = topk_rows(S, int(k), scale[s : s + block_size], C.shape[1], exact)
            counts += torch.bincount(ids.reshape(-1), minlength=n_c)
    return to_numpy(counts)


def _skewness(n: np.ndarray) -> float:
    """Population skewness E[(N - μ)³] / σ³; 0 for a constant N (a symmetric distribution)."""
    x = n.astype(np.float64)
    dev = x - x.mean()
    var = float(np.mean(dev**2))
    if var == 0:
        return 0.0
    return float(np.mean(dev**3) / var**1.5)


def _occupancy(n: np.ndarray, hubs: int) -> float:
    """Share of all top-k slots held by the ``hubs`` most frequent candidates."""
    top = np.sort(n)[::-1][:hubs]
    return float(top.sum() / n.sum())


def _n_hubs(n_candidates: int, hub_fraction: float) -> int:
    return max(1, math.ceil(hub_fraction * n_candidates - 1e-9))


def random_retrieval_hubness(
    n_queries: int, n_candidates: int, k: int = 10, hub_fraction: float = 0.01
) -> dict:
    r"""Chance values: hubness of uniformly random retrieval with the same counts.

    With :math:`p = k / n_c` and :math:`N \sim \mathrm{Binomial}(n_q, p)` for every candidate:

    * skewness :math:`(1 - 2p) / \sqrt{n_q p (1 - p)}`;
    * anti-hub share :math:`P(N = 0) = (1 - p)^{n_q}` (exact: a uniform k-subset misses a
      given candidate with probability ``1 - p``, independently across queries);
    * hub occupancy :math:`E[\sum_{j \le h} N_{(j)}] / (k n_q)`, the ``h`` largest of the
      :math:`n_c` counts taken as independent binomials. By
      :math:`\sum_{j \le h} N_{(j)} = \sum_{x \ge 1} \min(M_x, h)`, with
      :math:`M_x = \#\{c : N(c) \ge x\} \sim \mathrm{Binomial}(n_c, P(N \ge x))`, it is
      :math:`\sum_{x \ge 1} \sum_{j=0}^{h-1} P(M_x > j)`, evaluated exactly with
      ``scipy.stats.binom``. (The true counts are slightly dependent, as they sum to
      ``k n_q``; the independent model is the one the skewness formula uses too.)

    * the largest count, :math:`E[\max_c N(c)]`, the same sum with ``h = 1``.

    Returns
    -------
    dict
        ``skew``, ``antihub_share``, ``hub_occupancy``, ``max`` and ``hubs`` (``h``).
    """
    n, m = int(n_queries), int(n_candidates)
    p = k / m
    h = _n_hubs(m, hub_fraction)
    skew = (1 - 2 * p) / math.sqrt(n * p * (1 - p)) if 0 < p < 1 else 0.0
    antihub = float(np.exp(n * np.log1p(-p))) if p < 1 else 0.0
    return {
        "skew": float(skew),
        "antihub_share": antihub,
        "hub_occupancy": _expected_top(n, m, p, h) / (k * n),
        "max": _expected_top(n, m, p, 1),
        "hubs": h,
    }


def _binomial_sf() -> Any:
    """``sf(k, n, p) = P(Binomial(n, p) > k)`` for ``0 <= k < n``: the kernel
    ``scipy.stats.binom.sf`` itself calls there (the same bits), taken from ``scipy.special``
    because importing ``scipy.stats`` costs about a second of every first command; the public
    function where a scipy release moves the kernel."""
    try:
        from scipy.special._ufuncs import _binom_sf
    except ImportError:  # pragma: no cover - another scipy layout
        from scipy.stats import binom

        return binom.sf
    return _binom_sf


def _expected_top(n: int, m: int, p: float, h: int) -> float:
    """E[sum of the h largest of m independent Binomial(n, p)] = Σ_x E[min(M_x, h)]."""
    binom_sf = _binomial_sf()
    mu, sigma = n * p, math.sqrt(n * p * (1 - p))
    # for x below lo, P(N >= x) is 1 to double precision and min(M_x, h) = h; above hi, 0
    lo = max(1, math.floor(mu - 40 * sigma))
    hi = min(n, math.ceil(mu + 40 * sigma + 40))
    x = np.arange(lo, hi + 1)
    q = binom_sf(x - 1, n, p)  # P(N >= x)
    j = np.arange(h)
    total = float(h * (lo - 1))
    for s in range(0, x.size, 256):  # bounded memory: (256, h) probabilities at a time
        total += float(binom_sf(j[None, :], m, q[s : s + 256, None]).sum())
    return total


def hubness(
    image_emb: Any,
    text_emb: Any,
    k: int = 10,
    *,
    hub_fraction: float = 0.01,
    block_size: int | None = None,
    device: Any = None,
    compute: Compute | None = None,
    return_counts: bool = False,
) -> dict:
    r"""Hubness of cross-modal retrieval both ways, next to its chance values.

    For each direction (``t2i``: every text queries all images, :math:`N_k` of the images;
    ``i2t``: every image queries all texts, :math:`N_k` of the texts) with
    :math:`N_k(c)` from :func:`k_occurrence` (exact top-k by cosine):

    * ``hubness_skew_*`` — skewness :math:`E[(N_k - \mu)^3] / \sigma^3` over the candidates
      (population moments; Radovanović et al. 2010, eq. 4). 0 for a constant :math:`N_k`.
    * ``antihub_share_*`` — share of candidates with :math:`N_k = 0` (never retrieved).
    * ``hub_occupancy_*`` — share of all :math:`k n_q` top-k slots taken by the
      :math:`h = \lceil \text{hub\_fraction} \cdot n_c \rceil` most frequent candidates.

    and, next to each, ``*_chance``: its value under uniformly random retrieval with the same
    counts (:func:`random_retrieval_hubness`). The ideal, even retrieval (every candidate
    retrieved :math:`k n_q / n_c` times) has skewness 0, no anti-hubs (when
    :math:`k n_q \ge n_c`) and occupancy :math:`h / n_c`; retrieval less even than chance
    reads above the chance values. Needs no pairs.

    Parameters
    ----------
    image_emb : array (n_i, d)
    text_emb : array (n_t, d)
    k : int
        Neighbours per query (default 10), below both counts.
    hub_fraction : float
        Share of the candidates counted as hubs for the occupancy (default 1%).
    block_size, device, compute
        As in :func:`k_occurrence`.
    return_counts : bool
        Also return ``k_occurrence_t2i`` (n_i,) and ``k_occurrence_i2t`` (n_t,) arrays.

    Returns
    -------
    dict
        ``hubness_k``, ``hub_fraction``, and for ``dir`` in ``t2i``, ``i2t``:
        ``hubness_skew_{dir}``, ``hubness_skew_{dir}_chance``, ``antihub_share_{dir}``,
        ``antihub_share_{dir}_chance``, ``hub_occupancy_{dir}``,
        ``hub_occupancy_{dir}_chance``, ``hubness_max_{dir}`` (the largest :math:`N_k`) and
        ``hubness_max_{dir}_chance``.
    """
    if isinstance(hub_fraction, bool) or not (
        isinstance(hub_fraction, int | float) and 0 < hub_fraction <= 1
    ):
        raise ModgapError(f"hub_fraction must be in (0, 1], got {hub_fraction!r}")
    out: dict[str, Any] = {"hubness_k": int(k), "hub_fraction": float(hub_fraction)}
    X = prepare_rows(image_emb, "image_emb", unit="checked")
    Y = prepare_rows(text_emb, "text_emb", unit="checked", dim=X.shape[1])
    for name, Q, C in (("t2i", Y, X), ("i2t", X, Y)):
        n = k_occurrence(Q, C, k, block_size=block_size, device=device, compute=compute)
        out.update(hubness_statistics(n, Q.shape[0], int(k), name, hub_fraction))
        if return_counts:
            out[f"k_occurrence_{name}"] = n
    return out


def _statistics(n: np.ndarray, h: int) -> dict[str, float]:
    return {
        "hubness_skew": _skewness(n),
        "antihub_share": float(np.mean(n == 0)),
        "hub_occupancy": _occupancy(n, h),
        "hubness_max": int(n.max()),
    }


def hubness_statistics(
    counts: np.ndarray, n_queries: int, k: int, direction: str, hub_fraction: float = 0.01
) -> dict[str, Any]:
    """The hubness keys of one direction (``t2i`` or ``i2t``) from the k-occurrence
    ``counts`` of every candidate over all ``n_queries`` queries, with their chance values
    (:func:`random_retrieval_hubness`); see :func:`hubness`."""
    n_c = counts.shape[0]
    chance = _chance(n_queries, n_c, k, hub_fraction)
    out: dict[str, Any] = {}
    for stat, value in _statistics(counts, _n_hubs(n_c, hub_fraction)).items():
        out[f"{stat}_{direction}"] = value
        out[f"{stat}_{direction}_chance"] = chance[stat]
    return out


def _chance(n_queries: int, n_candidates: int, k: int, hub_fraction: float) -> dict[str, float]:
    c = random_retrieval_hubness(n_queries, n_candidates, int(k), hub_fraction)
    return {
        "hubness_skew": c["skew"],
        "antihub_share": c["antihub_share"],
        "hub_occupancy": c["hub_occupancy"],
        "hubness_max": c["max"],
    }


def _sampled(counts: np.ndarray, s: int, n: int, h: int) -> dict[str, float]:
    r"""Estimates of the statistics of the k-occurrence over all ``n`` queries from the
    counts of ``s`` of them drawn without replacement (a hypergeometric thinning of each
    :math:`N_k(c)`). The skewness from the unbiased factorial moments
    :math:`\widehat{\sum_c (N)_r} = \sum_c (N^s)_r\,(n)_r / (s)_r`, ``r = 1, 2, 3``; the
    anti-hub share, occupancy and largest count (scaled by ``n / s``) by plug-in."""
    x = counts.astype(np.float64)
    f = [1.0]
    for r in range(1, 4):
        f.append(f[-1] * (n - r + 1) / max(s - r + 1, 1))
    m = x.size
    f1 = float(x.sum()) * f[1] / m
    f2 = float((x * (x - 1)).sum()) * f[2] / m
    f3 = float((x * (x - 1) * (x - 2)).sum()) * f[3] / m
    e2, e3 = f2 + f1, f3 + 3 * f2 + f1  # x² = (x)₂ + x, x³ = (x)₃ + 3(x)₂ + x
    var = e2 - f1 * f1
    third = e3 - 3 * f1 * e2 + 2 * f1**3
    return {
        "hubness_skew": float(third / var**1.5) if var > 0 else 0.0,
        "antihub_share": float(np.mean(counts == 0)),
        "hub_occupancy": _occupancy(counts, h),
        "hubness_max": float(counts.max()) * n / s,
    }


def hubness_from_topk(
    top_ids: np.ndarray,
    n_queries: int,
    n_candidates: int,
    k: int,
    direction: str,
    *,
    hub_fraction: float = 0.01,
    n_boot: int = 200,
    seed: int = 0,
) -> tuple[dict[str, Any], dict[str, tuple[float, float]]]:
    r"""Hubness of one direction from the exact top-``k`` candidate ids of ``s`` queries
    drawn uniformly without replacement from ``n_queries`` (the streamed route: each sampled
    query scored against the complete pool).

    When ``s == n_queries`` the counts are :func:`k_occurrence`'s and every value is
    :func:`hubness_statistics`' exactly. Otherwise each candidate's sampled count is a
    thinning of its k-occurrence :math:`N_k(c)` (:func:`_sampled`): the skewness is
    estimated from unbiased factorial moments; the anti-hub share, hub occupancy and largest
    count (scaled by :math:`n_q / s`) are plug-ins, biased upward when the sample is a small
    share of the queries (a candidate retrieved by few queries is often missed by the
    sample). The 95% interval is the percentile interval over ``n_boot`` bootstrap resamples
    of the queries (Efron & Tibshirani 1993): it carries the sampling variability, not that
    bias. The anti-hub share gets a bracket instead: a candidate no query retrieves is not
    retrieved by the sample either, so the sampled share :math:`z` is an upper bound, and
    since a retrieved candidate is missed with probability at most :math:`1 - \pi`,
    :math:`E z \le a + (1 - \pi)(1 - a)`, i.e. :math:`a \ge (z - (1 - \pi))/\pi`
    (in expectation) — the interval is :math:`[\max(0, (z - 1 + \pi)/\pi), z]`. The
    chance values are exact (they depend on the counts only).

    Returns
    -------
    (dict, dict)
        The keys of :func:`hubness_statistics` for ``direction``, and ``key -> (low, high)``
        for the estimated ones (empty when the sample is every query).
    """
    ids = np.asarray(top_ids, dtype=np.int64)
    s = ids.shape[0]
    h = _n_hubs(n_candidates, hub_fraction)
    if s >= n_queries:
        counts = np.bincount(ids.ravel(), minlength=n_candidates)
        return hubness_statistics(counts, n_queries, k, direction, hub_fraction), {}
    chance = _chance(n_queries, n_candidates, k, hub_fraction)
    out: dict[str, Any] = {}
    rng = np.random.default_rng(seed)

    def stats(rows: np.ndarray) -> dict[str, float]:
        return _sampled(np.bincount(ids[rows].ravel(), minlength=n_candidates), s, n_queries, h)

    point = stats(np.arange(s))
    boot = [stats(rng.integers(0, s, s)) for _ in range(n_boot)]
    intervals = {}
    for stat, value in point.items():
        key = f"{stat}_{direction}"
        out[key] = float(value)
        out[f"{key}_chance"] = chance[stat]
        lo, hi = np.percentile([b[stat] for b in boot], [2.5, 97.5])
        if stat == "antihub_share":  # see the docstring: a bracket, not a bootstrap
            pi = s / n_queries
            lo, hi = max(0.0, (value - (1 - pi)) / pi), value
        intervals[key] = (float(lo), float(hi))
    return out, intervals
