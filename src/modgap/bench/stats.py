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
interval excludes 0 and it is evidence (:func:`not_evidence`):

* every split giving the same difference (a discrete metric: a median rank of 2, 2, 2 against
  1, 1, 1) makes a zero-width interval, which says nothing about other splits: a difference
  needs at least :data:`MIN_DISTINCT` distinct per-split values to be marked;
* a statistic whose per-split sample of a modality is below :data:`MIN_ROWS` rows (the 10 class
  prompts of a zero-shot set) describes those few rows, not the modality: it is neither marked
  nor ranked;
* a metric with a chance level (:data:`CHANCE`: linear separability, 0.5) whose mean reads
  *below* chance is not less gap: a held-out probe with nothing to learn reads below chance
  (the held-out rows of each class are missing from its training mean), and rows transformed
  with statistics of their own split read further below. Such a value means "no separability
  detected" and is neither marked nor ranked.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = [
    "CHANCE",
    "LEVEL",
    "MIN_DISTINCT",
    "MIN_ROWS",
    "interval",
    "is_evidence",
    "not_evidence",
    "paired",
    "summarize",
    "verdict",
]

#: confidence level of every interval
LEVEL = 0.95
#: distinct per-split differences (at 1e-12 relative) a difference needs to be marked: fewer
#: is a zero-width interval, which is no evidence
MIN_DISTINCT = 2
#: fewest rows of each modality per split a statistic needs to be marked (a handful of class
#: prompts is a description of those prompts, not a sample of a modality)
MIN_ROWS = 20
#: chance level of the metrics that have one; a mean below it reads as chance, never as less gap
CHANCE: dict[str, float] = {"linear_separability": 0.5}
#: relative width under which an interval counts as zero width (float64 round-off of equal values)
_ZERO_WIDTH = 1e-12


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


def _distinct(values: Sequence[float]) -> int:
    """Number of distinct finite values, equal at :data:`_ZERO_WIDTH` relative counted once."""
    out: list[float] = []
    for v in sorted(float(v) for v in values if v is not None and math.isfinite(v)):
        if not out or v - out[-1] > _ZERO_WIDTH * max(1.0, abs(v)):
            out.append(v)
    return len(out)


def not_evidence(
    diff: dict, metric: str | None = None, row_mean: float | None = None
) -> str | None:
    """Why the paired difference ``diff`` (of :func:`paired`) of ``metric`` is no evidence
    even if its interval excludes 0, or ``None`` when it is: a zero-width interval (fewer than
    :data:`MIN_DISTINCT` distinct per-split differences, when ``diff`` counts them), a
    statistic resting on fewer than :data:`MIN_ROWS` rows of a modality per split (``diff``'s
    ``rows``), or a row whose ``row_mean`` is below the metric's chance level
    (:data:`CHANCE`). Works on stored results too (then from the interval's width)."""
    lo, hi = diff["ci95"]
    rows = diff.get("rows")
    if rows is not None and rows < MIN_ROWS:
        return (
            f"few rows: {rows} rows of a modality per split (fewer than {MIN_ROWS}) describe "
            "those rows, not the modality"
        )
    mean = diff["mean"]
    few = diff.get("distinct")
    if (few is not None and few < MIN_DISTINCT) or (
        lo is not None
        and math.isfinite(lo)
        and math.isfinite(hi)
        and hi - lo <= _ZERO_WIDTH * max(1.0, abs(mean))
    ):
        return (
            "zero-width interval: every split gave the same difference (a discrete metric), "
            "which is no evidence about other splits"
        )
    chance = CHANCE.get(metric or "")
    if chance is not None and row_mean is not None and row_mean < chance:
        return (
            f"mean below chance ({chance:g}): reads as chance (no separability detected), an "
            "artefact of held-out probes and of rows transformed with their own statistics, "
            "not less gap"
        )
    return None


def is_evidence(diff: dict, metric: str | None = None, row_mean: float | None = None) -> bool:
    """Whether ``diff`` may be marked: its interval excludes 0 and :func:`not_evidence` finds
    nothing against it (the one rule of the bench's verdicts and of every result table)."""
    lo, hi = diff["ci95"]
    excludes = lo is not None and math.isfinite(lo) and (lo > 0 or hi < 0)
    return bool(excludes and not_evidence(diff, metric, row_mean) is None)


def paired(
    values: Sequence[float],
    baseline: Sequence[float],
    ratio: float,
    metric: str | None = None,
    rows: int | None = None,
) -> dict:
    """The split-by-split difference ``values - baseline``: ``{"mean", "ci95", "distinct",
    "significant"}`` (and ``rows``, the fewest rows of a modality per split the statistic rests
    on, when given) and, when the interval excludes 0 but is no evidence, ``"not_evidence"``
    (why: :func:`not_evidence`). Significant: the interval excludes 0 and is evidence;
    ``metric`` names the metric for its chance level (:data:`CHANCE`)."""
    diff = [a - b for a, b in zip(values, baseline, strict=True)]
    mean, lo, hi = interval(diff, ratio)
    out = {"mean": mean, "ci95": [lo, hi], "distinct": _distinct(diff)}
    if rows is not None:
        out["rows"] = int(rows)
    row = [float(v) for v in values if v is not None and math.isfinite(v)]
    row_mean = float(np.mean(row)) if row else None
    excludes = bool(math.isfinite(lo) and (lo > 0 or hi < 0))
    why = not_evidence(out, metric, row_mean) if excludes else None
    out["significant"] = excludes and why is None
    if why is not None:
        out["not_evidence"] = why
    return out


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
    if diff.get("not_evidence"):
        word += f" ({diff['not_evidence'].split(':', 1)[0]}: no evidence)"
    return f"{name}: {_number(mean)} ± {abs(half):.3g} {metric}, {word}"
