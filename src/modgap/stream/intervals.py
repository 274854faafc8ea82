r"""Confidence intervals of the estimates made on a sample of queries.

Queries are drawn uniformly **without replacement** from a finite pool of ``N`` rows, so every
interval carries the finite-population correction :math:`\mathrm{fpc} = (N - s)/(N - 1)`; a
sample of the whole pool has a zero-width interval (the value is exact).

* proportions (share of queries whose nearest neighbour is of their own modality, recall@K,
  accuracy): Wilson's score interval (Wilson 1927; Brown, Cai & DasGupta, *Interval Estimation
  for a Binomial Proportion*, Statistical Science 2001) with the effective sample size
  :math:`s / \mathrm{fpc}`;
* ratios ITR/TIR :math:`= p/(1-p)`: the Wilson interval of :math:`p` mapped through that
  increasing function (an upper end of :math:`p = 1` gives ``inf``);
* means (mean ranks TMR/IMR, the uniformity kernel): the normal interval
  :math:`\bar r \pm z\, \mathrm{sd}(r)\sqrt{\mathrm{fpc}/s}` (central limit theorem; the ranks
  are bounded, and s = 10,000 by default).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["LEVEL", "Z", "estimate", "mean_interval", "ratio_interval", "wilson"]

#: two-sided level of every interval
LEVEL = 0.95
Z = 1.959963984540054


def _fpc(s: int, n: int) -> float:
    if n <= 1 or s >= n:
        return 0.0
    return (n - s) / (n - 1)


def wilson(successes: int, s: int, n: int) -> tuple[float, float]:
    """Wilson interval of a proportion estimated from ``s`` of ``n`` items (exact when
    ``s == n``)."""
    if s == 0:
        return (float("nan"), float("nan"))
    p = successes / s
    f = _fpc(s, n)
    if f == 0.0:
        return (p, p)
    m = s / f
    denom = 1 + Z * Z / m
    centre = (p + Z * Z / (2 * m)) / denom
    half = Z * math.sqrt(p * (1 - p) / m + Z * Z / (4 * m * m)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def balanced_interval(hits: list[tuple[int, int]]) -> tuple[float, float]:
    r"""Normal interval of a balanced accuracy, the mean of independent per-class recalls
    ``hits / rows``: variance :math:`\sum_c p_c(1 - p_c)/n_c` over the number of classes
    squared (a recall of 0 or 1 on few rows gets the Wilson half-width instead of 0)."""
    parts = [(h / n, n) for h, n in hits if n]
    if not parts:
        return (float("nan"), float("nan"))
    m = sum(p for p, _ in parts) / len(parts)
    var = 0.0
    for (h, n), (p, _) in zip([x for x in hits if x[1]], parts, strict=True):
        lo, hi = wilson(h, n, 10**18)  # no population correction: the probe's own test rows
        var += max(p * (1 - p) / n, ((hi - lo) / (2 * Z)) ** 2)
    half = Z * math.sqrt(var) / len(parts)
    return (max(0.0, m - half), min(1.0, m + half))


def _odds(p: float) -> float:
    return float("inf") if p >= 1 else p / (1 - p)


def ratio_interval(same: int, s: int, n: int) -> tuple[float, float]:
    """Interval of ``same / (s - same)`` (ITR, TIR) from the Wilson interval of
    ``same / s``."""
    lo, hi = wilson(same, s, n)
    return (_odds(lo), _odds(hi))


def mean_interval(values: np.ndarray, n: int) -> tuple[float, float]:
    """Normal interval of the population mean from a sample without replacement."""
    v = np.asarray(values, dtype=np.float64)
    m = float(v.mean())
    f = _fpc(v.size, n)
    if f == 0.0 or v.size < 2:
        return (m, m)
    half = Z * float(v.std(ddof=1)) * math.sqrt(f / v.size)
    return (m - half, m + half)


def estimate(value: float, interval: tuple[float, float], s: int, n: int, method: str) -> dict:
    """The record every sampled result carries (a sample of the whole population is exact:
    its interval is the value itself)."""
    if int(s) >= int(n) and value is not None:
        interval = (value, value)
    return {
        "value": value,
        "interval": [float(interval[0]), float(interval[1])],
        "level": LEVEL,
        "sample": int(s),
        "population": int(n),
        "exact": int(s) >= int(n),
        "method": method,
    }
