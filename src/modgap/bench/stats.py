r"""Uncertainty of benchmark numbers over repeated random splits, and the verdicts drawn from it.

The bench evaluates every reducer on ``R`` random splits of the images (fit part, evaluated
part). Repeated random splits share most of their images, so the ``R`` values are not
independent and the plain :math:`s/\sqrt R` underestimates their spread. Intervals use the
**corrected resampled t** of Nadeau & Bengio ("Inference for the Generalization Error",
Machine Learning 52, 2003):

.. math:: \bar x \pm t_{0.975,\,R-1}\,\sqrt{\Big(\frac1R + \frac{n_\mathrm{eval}}{n_\mathrm{fit}}
          \Big)\, s^2}

with :math:`s^2` the sample variance over the repeats and :math:`n_\mathrm{eval}/n_\mathrm{fit}`
the ratio of evaluated to fitted images. A difference against ``none`` is computed split by split
(paired, so what the split does to both cancels) and called **significant** only when its
interval excludes 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["LEVEL", "interval", "paired", "summarize", "verdict"]

#: confidence level of every interval
LEVEL = 0.95


def _t(df: int) -> float:
    from scipy.stats import t

    return float(t.ppf(0.5 + LEVEL / 2, df))


def interval(values: Sequence[float], ratio: float) -> tuple[float, float, float]:
    """``(mean, low, high)``: the corrected resampled t interval of ``values`` (see the module
    docstring); ``ratio`` = evaluated / fitted images. With one value the interval is empty
    (``nan``)."""
    raw = [float(v) for v in values if v is not None and not math.isnan(v)]
    if raw and all(math.isinf(v) for v in raw) and len(set(raw)) == 1:
        return raw[0], raw[0], raw[0]  # e.g. ITR = inf on every split: no gap was bridged
    x = np.asarray([v for v in raw if math.isfinite(v)], dtype=np.float64)
    if x.size == 0 or x.size < len(raw):
        return math.nan, math.nan, math.nan
    mean = float(x.mean())
    if x.size < 2:
        return mean, math.nan, math.nan
    var = float(x.var(ddof=1))
    half = _t(x.size - 1) * math.sqrt((1 / x.size + ratio) * var)
    return mean, mean - half, mean + half


def summarize(values: Sequence[float], ratio: float) -> dict:
    """``{"mean", "ci95": [low, high], "values"}`` of one metric over the repeats."""
    mean, lo, hi = interval(values, ratio)
    return {"mean": mean, "ci95": [lo, hi], "values": [float(v) for v in values]}


def paired(values: Sequence[float], baseline: Sequence[float], ratio: float) -> dict:
    """The split-by-split difference ``values - baseline``: ``{"mean", "ci95",
    "significant"}`` (significant: the interval excludes 0)."""
    diff = [a - b for a, b in zip(values, baseline, strict=True)]
    mean, lo, hi = interval(diff, ratio)
    significant = bool(math.isfinite(lo) and (lo > 0 or hi < 0))
    return {"mean": mean, "ci95": [lo, hi], "significant": significant}


def _number(v: float) -> str:
    if not math.isfinite(v):
        return str(v)
    a = abs(v)
    return f"{v:+.1f}" if a >= 10 else f"{v:+.3f}" if a < 1 else f"{v:+.2f}"


def verdict(name: str, metric: str, diff: dict) -> str:
    """One line: ``"center: +0.4 ± 1.1 rsum, not significant"``."""
    mean, (lo, hi) = diff["mean"], diff["ci95"]
    if not math.isfinite(lo):
        return f"{name}: {_number(mean)} {metric} (one split: no interval)"
    half = (hi - lo) / 2
    word = "significant" if diff["significant"] else "not significant"
    return f"{name}: {_number(mean)} ± {abs(half):.3g} {metric}, {word}"
