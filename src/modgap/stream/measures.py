r"""Every gap measure of a :class:`~modgap.io.source.Source`, out of core.

* **Exact, in one pass** over the shards (:func:`~modgap.stream.moments.moment_kernel`,
  merged in a tree): centroid gap, per-dimension gap, Fréchet distance, RMG, alignment, and the
  means and standard deviations of the matched and unmatched cosines. They equal the in-memory
  functions of :mod:`modgap.measures` up to float64 round-off: the unmatched cosine sums come
  from :math:`(\sum x)\cdot(\sum y)` and :math:`\langle X^\top X, Y^\top Y\rangle_F`, with
  :math:`X^\top X = M_X + n\mu_X\mu_X^\top` from the scatter matrix.
* **Estimated on a uniform sample of queries** (``sample_queries`` per modality, default
  10,000, drawn with the seed without replacement) **scored exactly against the whole pool**
  (:func:`~modgap.stream.kernels.scan_kernel`, query block × shard tasks): ITR, TIR, TMR, IMR
  and the three uniformities; and fitted on the sample: linear separability and the cosine
  quantiles. Each estimate carries its sample size and a 95% interval
  (:mod:`modgap.stream.intervals`) under ``estimates``. When a modality has at most
  ``sample_queries`` rows the sample is the whole modality and the value is exact: the same
  comparisons as the in-memory function.

Memory: one row block per kernel (from the compute context's budget), the query sample
(``2 · s · d`` float32) and :math:`O(d^2)` moments — independent of the number of rows.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np

from .._array import prepare_rows
from .._progress import progress as progress_bar
from ..compute import Compute, resolve
from ..errors import ModgapError
from ..io.source import Source
from ..measures import MEASURES, resolve_measures
from ..measures.centroid import gap_from_means, per_dimension_from_delta
from ..measures.cosine import cosine_stats
from ..measures.frechet import frechet_terms
from ..measures.hubness import hubness_k, hubness_skip_reason
from ..measures.neighbours import ratio
from ..measures.rmg import rmg_chance_from_sums, rmg_from_sums
from ..measures.separability import linear_separability
from .blocks import QUERY_BLOCK, has_siblings, pairs_of, scan_rows, sibling_pairs
from .engines import Engine, LocalEngine
from .hubness import hubness_results, hubness_specs
from .intervals import balanced_interval, estimate, mean_interval, ratio_interval
from .kernels import merge_scans, scan_kernel
from .moments import merge_moments, moment_kernel

__all__ = [
    "DEFAULT_SAMPLE_QUERIES",
    "moment_pass",
    "run_scans",
    "sample_index",
    "stream_measures",
]

#: queries sampled per modality for the neighbour, separability and uniformity estimates
DEFAULT_SAMPLE_QUERIES = 10_000


def sample_index(n: int, size: int | None, seed: int) -> np.ndarray:
    """``size`` row numbers out of ``n``, uniform without replacement, sorted; all rows when
    ``size`` is None or at least ``n``."""
    if size is None or size >= n:
        return np.arange(n, dtype=np.int64)
    return np.sort(np.random.default_rng(seed).choice(n, size=int(size), replace=False))


def moment_pass(
    source: Source,
    *,
    covariance: bool = True,
    matched: bool = True,
    cross: bool = False,
    set_rows: bool = False,
    gram64: bool = False,
    engine: Engine | None = None,
    compute: Compute | None = None,
    bar: Any = None,
) -> dict:
    """One pass over every shard: the merged :func:`moment_kernel` state, with ``x`` and ``y``
    as ``{"n", "mean", "scatter"}`` (``None`` for a modality without rows). ``set_rows``: the
    rows a reducer's fit sees, with exact means (``rows="set"`` of :func:`moment_kernel`).
    ``gram64``: also ``x64``/``y64``, the float64 scatter matrices (the unmatched cosines)."""
    engine = engine or LocalEngine()
    compute = resolve(compute)
    opts = {"covariance": covariance, "matched": matched and source.has_pairs, "cross": cross}
    if set_rows:
        opts["rows"] = "set"
    elif gram64:
        opts["gram64"] = True
    shards = list(source.shards)

    def done(i: int, _: Any) -> None:
        if bar is not None:
            bar.advance(shards[i].n_images + shards[i].n_texts)

    state = engine.reduce(moment_kernel, shards, merge_moments, source, opts, compute, on_done=done)
    for side in ("x", "y", "x64", "y64"):
        if side in state:
            state[side] = state[side].as_dict() if state[side].n else None
    return state


def run_scans(
    source: Source,
    specs: list[dict],
    *,
    engine: Engine | None = None,
    compute: Compute | None = None,
    bar: Any = None,
) -> dict:
    """Run :func:`~modgap.stream.kernels.scan_kernel` for every (query block, shard) and
    return, per spec name, its merged fields concatenated over the query blocks."""
    engine = engine or LocalEngine()
    compute = resolve(compute)
    for s in specs:
        s.setdefault("block", QUERY_BLOCK)
    n_blocks = max(math.ceil(len(s["queries"]) / s["block"]) for s in specs)
    items = [(b, shard) for b in range(n_blocks) for shard in source.shards]
    pools = {s["pool"] for s in specs}

    def weight(item: Any) -> int:
        shard = item[1]
        return sum(shard.n_images if p == "image" else shard.n_texts for p in pools)

    def done(i: int, _: Any) -> None:
        if bar is not None:
            bar.advance(weight(items[i]))

    handle = engine.put(specs)
    merged = engine.reduce(scan_kernel, items, merge_scans, source, handle, compute, on_done=done)
    out: dict[str, dict] = {}
    for s in specs:
        nb = math.ceil(len(s["queries"]) / s["block"])
        parts = [merged[(s["name"], b)] for b in range(nb)]
        out[s["name"]] = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return out


def _moment_results(state: dict, names: list[str], source: Source, paired: bool) -> dict:
    x, y, p = state["x"], state["y"], state["pairs"]
    out: dict[str, Any] = {}
    if "centroid" in names:
        g = gap_from_means(x["mean"], y["mean"])
        out["centroid_gap"], out["centroid_cosine"] = g["centroid_gap"], g["centroid_cosine"]
    if "per_dimension" in names:
        pd = per_dimension_from_delta(x["mean"] - y["mean"])
        pd.pop("gap_sq")
        out.update(gap_dims_50=pd["dims_50"], gap_dims_90=pd["dims_90"], per_dimension=pd)
    if "frechet_distance" in names:
        if min(x["n"], y["n"]) < 2:
            raise ModgapError("the Fréchet distance needs at least 2 rows of each modality")
        t = frechet_terms(
            x["mean"], x["scatter"] / (x["n"] - 1), y["mean"], y["scatter"] / (y["n"] - 1)
        )
        out["frechet_distance"] = t["centroid"] + t["covariance"]
        out["frechet_centroid_term"] = t["centroid"]
        out["frechet_covariance_term"] = t["covariance"]
    if paired and "rmg" in names:
        out["rmg"] = rmg_from_sums(
            x["mean"] * x["n"], x["n"], y["mean"] * y["n"], y["n"], p["sum"], p["n"]
        )
        out["rmg_chance"] = rmg_chance_from_sums(
            x["mean"] * x["n"], x["n"], y["mean"] * y["n"], y["n"]
        )
    if paired and "alignment" in names:
        out["alignment"] = p["align"] / p["n"]
    if paired and "cosine" in names:
        m = p["n"]
        mean = p["sum"] / m
        out["matched_cosine"] = {
            "mean": mean,
            "std": math.sqrt(max(p["sq"] / m - mean * mean, 0.0)),
            "count": int(m),
        }
        n = x["n"]
        count = n * m - m
        if count == 0:
            out["unmatched_cosine"] = {"mean": float("nan"), "std": float("nan"), "count": 0}
        else:
            total = float((x["mean"] * n) @ (y["mean"] * m)) - p["sum"]
            # float64 second moments: the std is a difference of them, which would amplify
            # the float32 scatter's rounding (measures.moments)
            x64, y64 = state["x64"], state["y64"]
            xtx = x64["scatter"] + n * np.outer(x64["mean"], x64["mean"])
            yty = y64["scatter"] + m * np.outer(y64["mean"], y64["mean"])
            total_sq = float(np.sum(xtx * yty)) - p["sq"]
            um = total / count
            out["unmatched_cosine"] = {
                "mean": um,
                "std": math.sqrt(max(total_sq / count - um * um, 0.0)),
                "count": int(count),
            }
    return out


def stream_measures(
    source: Source,
    only: Iterable[str] | str | None = None,
    *,
    sample_queries: int | None = DEFAULT_SAMPLE_QUERIES,
    engine: Engine | None = None,
    compute: Compute | None = None,
    progress: bool = False,
) -> dict:
    """The gap measures of a streamed source (see the module docstring).

    Parameters
    ----------
    source : Source
        From :func:`modgap.stream.open_source`.
    only : list of str, optional
        Measure names as for :func:`modgap.measures.measure_all`.
    sample_queries : int or None
        Queries per modality of the sampled measures (None: every row, exact and quadratic).
    engine : Engine, optional
        :class:`~modgap.stream.engines.LocalEngine` (default) or a
        :class:`~modgap.stream.engines.DaskEngine`.
    compute : Compute, optional
        Memory budget (row blocks), threads and seed.
    progress : bool
        A progress bar per pass, with rows done and the time left.

    Returns
    -------
    dict
        The keys of :func:`~modgap.measures.measure_all`, plus ``estimates`` (key -> value,
        95% interval, sample size, population, method) for the sampled ones and ``streaming``
        (shards, engine, the measures that drew a query sample and its sizes: 0 when none
        did).
    """
    compute = resolve(compute)
    engine = engine or LocalEngine()
    seed = compute.seed
    names = resolve_measures(only)
    paired = source.has_pairs
    if only is not None and not paired:
        need = [n for n in names if MEASURES[n].needs_pairs]
        if need:
            raise ModgapError(
                f"{', '.join(need)} need(s) image-text pairs and the set has none "
                "(give a pairing, e.g. --pairs FILE, or equal counts paired row by row)"
            )
    if sample_queries is not None and int(sample_queries) < 2:
        raise ModgapError(f"--sample-queries must be at least 2, got {sample_queries}")
    results: dict[str, Any] = {}
    estimates: dict[str, dict] = {}
    skipped = {n: "needs image-text pairs" for n in names if MEASURES[n].needs_pairs and not paired}
    # the records say how each measure runs here; one that cannot is listed with its reason
    skipped.update({n: MEASURES[n].stream_reason for n in names if MEASURES[n].stream is None})
    names = [n for n in names if n not in skipped]
    n_i, n_t = source.n_images, source.n_texts
    moments = [n for n in names if MEASURES[n].stream == "moments"]
    passes = (
        bool(moments)
        + 2 * ("neighbours" in names)
        + ("uniformity" in names and "neighbours" not in names)
        + ("hubness" in names)
    )
    k = 0
    state = None
    if moments:
        k += 1
        with progress_bar(f"pass {k}/{passes}: moments", total=n_i + n_t, enabled=progress) as bar:
            state = moment_pass(
                source,
                covariance="frechet_distance" in moments,
                gram64="cosine" in moments,
                matched=any(n in moments for n in ("rmg", "alignment", "cosine")),
                engine=engine,
                compute=compute,
                bar=bar,
            )
        results.update(_moment_results(state, moments, source, paired))

    I = sample_index(n_i, sample_queries, seed)
    T = sample_index(n_t, sample_queries, seed + 1)
    sampled = {"neighbours", "uniformity", "hubness", "linear_separability", "cosine"} & set(names)
    Xs = source.gather("image", I) if sampled else None
    Ys = source.gather("text", T) if sampled else None
    if "neighbours" in names or "uniformity" in names:
        # the one row preparation: float32 unit rows (the scans score those) and float64 unit
        # rows (the uniformity sums take those, as measure_all does)
        Qx = prepare_rows(Xs, "image_emb", unit="exact")
        Qy = prepare_rows(Ys, "text_emb", unit="exact")
        nb, un = "neighbours" in names, "uniformity" in names
        Ux = prepare_rows(Xs, "image_emb", unit="exact", dtype=np.float64) if un else None
        Uy = prepare_rows(Ys, "text_emb", unit="exact", dtype=np.float64) if un else None
        first = [
            {"name": "xy", "pool": "text", "queries": Qx, "best": nb, "ksum": un, "queries64": Ux},
            {"name": "yx", "pool": "image", "queries": Qy, "best": nb},
        ]
        if not nb:
            first = first[:1]
        second_specs = [
            {"name": "xx", "pool": "image", "queries": Qx, "self_index": I, "ksum": un},
            {"name": "yy", "pool": "text", "queries": Qy, "self_index": T, "ksum": un},
        ]
        second_specs[0]["queries64"], second_specs[1]["queries64"] = Ux, Uy
        if not nb:
            first += second_specs
        k += 1
        with progress_bar(
            f"pass {k}/{passes}: {'neighbours, nearest other modality' if nb else 'uniformity'}",
            total=scan_rows(source, first),
            enabled=progress,
        ) as bar:
            a = run_scans(source, first, engine=engine, compute=compute, bar=bar)
        if nb:
            second_specs[0]["threshold"] = a["xy"]["best"]
            second_specs[1]["threshold"] = a["yx"]["best"]
            # the text queries again with their image's other captions left out (exact pairs)
            multi = paired and has_siblings(source)  # the keys measure_all gives
            siblings = sibling_pairs(source, T) if multi else None
            if siblings is not None:
                spec = {"name": "yy_x", "pool": "text", "queries": Qy, "exclude": siblings}
                second_specs.append({**spec, "threshold": a["yx"]["best"]})
            k += 1
            with progress_bar(
                f"pass {k}/{passes}: neighbours, own modality",
                total=scan_rows(source, second_specs),
                enabled=progress,
            ) as bar:
                a.update(run_scans(source, second_specs, engine=engine, compute=compute, bar=bar))

            sides = [("itr", "tmr", "xx", n_i, I.size), ("tir", "imr", "yy", n_t, T.size)]
            if multi:  # no sampled query with a sibling: the plain scan's counts
                scan = "yy_x" if siblings else "yy"
                sides.append(("tir_excl_siblings", "imr_excl_siblings", scan, n_t, T.size))
            for key, rkey, name, n, s in sides:
                ahead = a[name]["count"]
                same = int((ahead > 0).sum())
                results[key] = ratio(same, s - same)
                ranks = (ahead + 1).astype(np.float64)
                results[rkey] = float(ranks.mean())
                estimates[key] = estimate(
                    results[key],
                    ratio_interval(same, s, n),
                    s,
                    n,
                    "ratio of queries whose nearest neighbour is of their own modality; "
                    "Wilson interval of the share, mapped to the ratio",
                )
                estimates[rkey] = estimate(
                    results[rkey],
                    mean_interval(ranks, n),
                    s,
                    n,
                    "mean rank of the first row of the other modality; normal interval",
                )
        if un:
            for key, name, n_pool, n_q, s, own in (
                ("uniformity_image", "xx", n_i, n_i, I.size, True),
                ("uniformity_text", "yy", n_t, n_t, T.size, True),
                ("uniformity_cross", "xy", n_t, n_i, I.size, False),
            ):
                denom = (n_pool - 1) if own else n_pool
                if denom < 1:
                    results[key] = float("nan")
                    continue
                r = a[name]["ksum"] / denom
                lo, hi = mean_interval(r, n_q)
                results[key] = float(math.log(r.mean()))
                estimates[key] = estimate(
                    results[key],
                    (math.log(lo) if lo > 0 else float("-inf"), math.log(hi)),
                    s,
                    n_q,
                    "log of the mean kernel exp(-2|u-v|^2) of sampled queries against the "
                    "whole pool; normal interval of the mean, on the log scale",
                )
    if "hubness" in names:
        k += 1
        hk = hubness_k(n_i, n_t)  # the in-memory route's k
        hub: dict[str, Any] = {}
        hub_est: dict[str, tuple] = {}
        if hk < 1:
            skipped["hubness"] = hubness_skip_reason(n_i, n_t)
        else:
            specs = hubness_specs(Xs, Ys, hk)
            with progress_bar(
                f"pass {k}/{passes}: hubness",
                total=scan_rows(source, specs),
                enabled=progress,
            ) as bar:
                scanned = run_scans(source, specs, engine=engine, compute=compute, bar=bar)
            hub, hub_est = hubness_results(scanned, n_i, n_t, hk, seed)
        results.update(hub)
        for key, (interval, s, n) in hub_est.items():
            estimates[key] = estimate(
                results[key],
                interval,
                s,
                n,
                "k-occurrence counts of the sampled queries' exact top-k over the whole pool, "
                "extrapolated over the sampling rate; bootstrap percentile interval over queries",
            )
    if "linear_separability" in names:
        acc, hits = linear_separability(Xs, Ys, seed=seed, max_per_modality=None, counts=True)
        results["linear_separability"] = acc
        estimates["linear_separability"] = estimate(
            acc,
            balanced_interval(hits),
            I.size + T.size,
            n_i + n_t,
            f"balanced accuracy on {hits[0][1]} image and {hits[1][1]} text held-out rows of "
            "the sample; normal interval of the mean of the two recalls",
        )
    if "cosine" in names:
        t2i = source.pairs() if T.size == n_t and I.size == n_i else None
        if t2i is not None:  # the whole set: the in-memory function, exactly
            q = cosine_stats(Xs, Ys, t2i, seed=seed, compute=compute)
        else:
            matched = source.gather("image", pairs_of(source, T))
            q = cosine_stats(matched, Ys, None, seed=seed, compute=compute)
        for side in ("matched", "unmatched"):
            exact = results.pop(f"{side}_cosine")
            quant = {k2: v for k2, v in q[side].items() if k2.startswith("q")}
            results[f"{side}_cosine"] = {**exact, **quant}
            results[f"{side}_cosine_mean"] = exact["mean"]
            results[f"{side}_cosine_std"] = exact["std"]
        if t2i is None:
            estimates["cosine_quantiles"] = estimate(
                None,
                (float("nan"), float("nan")),
                T.size,
                n_t,
                "quantiles from the sampled texts with their images (matched) and the "
                "unmatched pairs among them; mean, std and count are exact",
            )
    ordered: dict[str, Any] = {}
    for name in MEASURES:
        for key in MEASURES[name].keys:
            if key in results:
                ordered[key] = results[key]
    if skipped:
        ordered["skipped"] = skipped
    ordered["estimates"] = estimates
    ordered["streaming"] = {
        "shards": len(source.shards),
        **engine.describe(),
        # queries drawn only for the measures that sample them: none for a moments-only run
        "sample_queries": {
            "images": int(I.size) if sampled else 0,
            "texts": int(T.size) if sampled else 0,
        },
        "sampled": [n for n in MEASURES if n in sampled],
        "exact": [k for k in ordered if k not in estimates and k not in ("skipped", "estimates")],
    }
    return ordered
