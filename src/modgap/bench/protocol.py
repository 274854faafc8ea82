"""The gap benchmark: every reducer (and "none") × every applicable task × every gap measure,
over repeated random splits, with intervals and paired differences against "none".

Protocol. Each of ``repeats`` splits (seeds ``seed``, ``seed + 1``, ...) divides the images
into a *fit part* and an *evaluated part* (:meth:`EmbeddingSet.split`: by image, captions follow
their image; ``test_fraction`` of the images are evaluated). **Held-out** (default): each
reducer is fitted on the fit part and everything is scored on the evaluated part, so the numbers
say what the reducer does to unseen data. **Transductive**: the reducer is fitted on the
evaluated part itself, as Fill the Gap (Role et al. 2025) does; such rows are flagged
``scored_on_fitted_rows``. A reducer without an out-of-sample extension is always fitted
transductively, and says so. Each row's ``fitted_on`` says which rows its reducer saw:
``{"images": "fit" | "evaluated", "texts": the same}``; on a zero-shot set (class prompts as its
texts) the same few prompts are in every split, so they are fitted and scored in every split:
``{"images": ..., "prompts": "all"}`` and ``scored_on_fitted_rows`` is true. A statistic whose
per-split sample of a modality is below :data:`.stats.MIN_ROWS` rows (the class prompts of a
zero-shot set) is kept but never marked (:func:`.stats.not_evidence`); linear separability on so
few rows, or on prompts its reducer was fitted on, is skipped with the reason in the row's
``skipped``. Linear separability is never measured on rows its reducer was
fitted on: for those rows the reducer is refitted on the probe's own training part
(:func:`~modgap.measures.separability.probe_accuracy`). A probe with nothing to learn still
reads below 0.5, so a mean below chance reads as chance, never as less gap
(:func:`.stats.not_evidence`).

Every numeric metric gets a mean and a 95% interval over the splits, and a split-by-split
difference against ``none`` with its interval (:mod:`modgap.bench.stats`); a difference is
*significant* only when its interval excludes 0. One verdict line per task says it.

Retrieval-time score corrections (CSLS, inverted softmax, querybank normalisation;
:mod:`modgap.tasks.scoring`) are rows beside the reducers: fitted on the fit part's query banks,
they change the scores of retrieval only, on the raw embeddings.

A reducer that fails on the data is skipped with the reason recorded; the benchmark goes on.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any

from .._lists import positive_ints
from .._progress import progress as progress_bar
from .._resultdict import Results
from ..compute import Compute, resolve
from ..embeddings import EmbeddingSet
from ..measures import MEASURES, measure_all, resolve_measures
from ..measures.separability import probe_accuracy
from ..provenance import provenance
from ..reducers import get_reducer
from ..tasks.retrieval import retrieval_metrics
from ..tasks.scoring import get_correction
from ..tasks.suite import run_tasks
from .rows import (
    check_options,
    correction_record,
    fewest_rows,
    plan_row,
    sample_rows,
    separability_skip,
)
from .rows import zero_shot as is_zero_shot
from .stats import LEVEL, MIN_ROWS, paired, summarize, verdict

__all__ = ["VERDICT_METRICS", "aggregate", "record_split", "run_bench"]

#: the metric each task's verdict line is about (the first one present)
VERDICT_METRICS: dict[str, tuple[str, ...]] = {
    "retrieval": ("rsum",),
    "zeroshot": ("acc1",),
    "clustering": ("cluster_ami", "pair_coclustering"),
    "mixed": ("mixed_recall@10", "mixed_recall@5", "mixed_recall@1"),
    "gap": ("centroid_gap",),
}


def _numbers(d: dict) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in d.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and k != "n_clusters"
    }


def _separability_refit(
    name: str, params: dict, eval_set: EmbeddingSet, seed: int, compute: Compute
) -> float:
    """Separability of ``eval_set`` after reducer ``name`` fitted on the probe's training
    part only (its test part stays unseen by both)."""
    train, test = eval_set.split(test_fraction=0.3, seed=seed)
    reducer = get_reducer(name, **params).fit(train.prompts_as_texts(), compute=compute)
    a = reducer.transform_set(train).prompts_as_texts()
    b = reducer.transform_set(test).prompts_as_texts()
    return probe_accuracy(a.image_emb, a.text_emb, b.image_emb, b.text_emb)


def run_bench(
    emb: EmbeddingSet,
    reducers: Sequence[str] | str | None = None,
    transductive: bool = False,
    seed: int | None = None,
    *,
    repeats: int = 5,
    test_fraction: float = 0.5,
    reducer_params: dict[str, dict] | None = None,
    corrections: Sequence[str] | str | None = None,
    ks: Sequence[int] | str = (1, 5, 10),
    folds: int | None = None,
    measures: Sequence[str] | str | None = None,
    progress: bool = False,
    console: Any = None,
    compute: Compute | None = None,
    on_step: Callable[[str], None] | None = None,
) -> tuple[dict, dict]:
    """Benchmark gap reducers on one embedding set.

    Parameters
    ----------
    emb : EmbeddingSet
        The data.
    reducers : list of str or comma-separated str, optional
        Registry names (:data:`modgap.reducers.REDUCERS`) and/or ``"none"``; default all of
        them and ``"none"``.
    transductive : bool
        Fit reducers on the evaluated part instead of the fit part.
    seed : int, optional
        Seed of the first split (then ``seed + 1``, ...), of k-means and of the measures;
        default: the compute context's.
    repeats : int
        Number of random splits (at least 2 for intervals).
    test_fraction : float
        Share of images evaluated in each split.
    reducer_params : dict, optional
        ``{reducer name: {param: value}}`` overrides.
    corrections : list of str or comma-separated str, optional
        Retrieval-time score corrections to add as rows (:data:`modgap.tasks.scoring.CORRECTIONS`).
    ks : sequence of int or comma-separated str
        Recall@K cut-offs (``"1,5,10"`` as ``--k`` takes them).
    folds : int, optional
        Retrieval averaged over this many folds of the evaluated images.
    measures : list of str or comma-separated str, optional
        Subset of gap measures (:func:`modgap.measures.measure_all` ``only``).
    progress : bool
        Show a progress bar.
    console : rich.console.Console, optional
        Where progress goes.
    compute : Compute, optional
        Device, memory budget and seed of every fit, task and measure.
    on_step : callable, optional
        Called with one line (``"split 1/3, row 2/7: center"``) as each row of each split
        starts, for callers that log steps where a live bar would not show (a pipe, a log).

    Returns
    -------
    document : dict
        ``provenance``, ``setting``, ``data`` (counts), ``results`` (per row: ``kind``,
        ``protocol``, ``params``, ``scored_on_fitted_rows``, ``seconds``, ``dim``, ``metrics``
        — per metric ``mean``, ``ci95``, ``values`` —, ``vs_none`` — per metric the paired
        difference ``mean``, ``ci95``, ``significant`` —, ``details`` of the first split),
        ``verdicts`` (task -> lines) and ``skipped`` (row -> why).
    views : dict
        Row name -> the evaluated :class:`EmbeddingSet` of the first split after it (for the
        report's figures); reducer rows only, since a score correction leaves the embeddings
        as they are.
    """
    compute = resolve(compute, seed=seed)
    chosen = resolve_measures(measures)
    ks = positive_ints(ks)
    base_seed = compute.seed
    names, correction_names = check_options(
        reducers, corrections, reducer_params, repeats, test_fraction
    )
    reducer_params = reducer_params or {}
    rows = names + correction_names
    values: dict[str, dict[str, list]] = {r: {} for r in rows}
    info: dict[str, dict] = {}
    views: dict[str, EmbeddingSet] = {}
    skipped: dict[str, str] = {}
    split_sizes = []
    zero_shot = is_zero_shot(emb)

    steps = repeats * len(rows)
    with progress_bar("bench", total=steps, enabled=progress, console=console) as bar:
        for rep in range(repeats):
            rep_seed = base_seed + rep
            rep_compute = compute.replace(seed=rep_seed)
            fit_set, eval_set = emb.split(test_fraction=test_fraction, seed=rep_seed)
            split_sizes.append((fit_set.n_images, eval_set.n_images))
            for k, name in enumerate(rows, 1):
                step = f"split {rep + 1}/{repeats}, row {k}/{len(rows)}: {name}"
                bar.describe(step)
                if on_step is not None:
                    on_step(step)
                if name in skipped:
                    bar.advance()
                    continue
                t0 = time.perf_counter()
                try:
                    if name in correction_names:
                        out, row = _correction_row(
                            name, fit_set, eval_set, ks, folds, transductive, rep_compute
                        )
                        reduced = eval_set
                    else:
                        reduced, row = _reduce(
                            name,
                            reducer_params.get(name, {}),
                            fit_set,
                            eval_set,
                            transductive,
                            rep_compute,
                            zero_shot,
                        )
                        t1 = time.perf_counter()
                        tasks = run_tasks(reduced, ks=ks, folds=folds, compute=rep_compute)
                        row["sample"] = sample_rows(reduced)
                        row["skipped"] = {}
                        sep = "linear_separability" in chosen
                        why = separability_skip(row, zero_shot) if sep else None
                        if why is not None:
                            row["skipped"]["linear_separability"] = why
                        refit = sep and why is None and row["scored_on_fitted_rows"]
                        only = measures
                        if refit or why is not None:  # a probe on rows the reducer saw, or
                            # on a handful of rows, would only be replaced or dropped
                            only = [
                                m
                                for m in chosen
                                if m != "linear_separability"
                                and (reduced.has_pairs or not MEASURES[m].needs_pairs)
                            ]
                        gap = (
                            {}
                            if only == []
                            else measure_all(reduced, only=only, compute=rep_compute)
                        )
                        if refit:
                            gap["linear_separability"] = _separability_refit(
                                name,
                                reducer_params.get(name, {}),
                                eval_set,
                                rep_seed,
                                rep_compute,
                            )
                        row["seconds"] = {"fit": t1 - t0, "eval": time.perf_counter() - t1}
                        out = {"tasks": tasks, "measures": gap}
                except Exception as e:  # a reducer failing on these data is a result too
                    skipped[name] = f"failed on split {rep + 1}: {type(e).__name__}: {e}"
                    values.pop(name, None)
                    info.pop(name, None)
                    views.pop(name, None)
                    bar.advance()
                    continue
                record_split(values, info, name, out, row, rep, reduced.dim)
                if rep == 0 and name not in correction_names:
                    views[name] = reduced.prompts_as_texts()  # a correction leaves them alone
                bar.advance()

    results, verdicts, n_fit, n_eval = aggregate(rows, skipped, values, info, split_sizes)
    setting = {
        "protocol": "transductive" if transductive else "held-out",
        "protocol_note": (
            f"reducers fitted on the evaluated images themselves; {repeats} random splits, "
            f"{test_fraction:.0%} of the images evaluated in each"
            if transductive
            else f"reducers fitted on a fit part, scored on held-out images; {repeats} random "
            f"splits, {test_fraction:.0%} of the images evaluated in each"
        ),
        "repeats": repeats,
        "seeds": [base_seed + r for r in range(repeats)],
        "test_fraction": test_fraction,
        "n_fit_images": n_fit,
        "n_eval_images": n_eval,
        "interval": f"{LEVEL:.0%} corrected resampled t over the splits (Nadeau & Bengio 2003)",
        "ks": list(ks),
        "folds": folds,
        "min_rows": MIN_ROWS,
    }
    if zero_shot:
        setting["protocol_note"] += (
            "; the class prompts are the texts of every split: fitted and scored in each"
        )
    doc = {
        "provenance": provenance(
            data=emb.describe(),
            seed=base_seed,
            compute=compute.describe(),
            reducers=names,
            corrections=correction_names,
            metadata=dict(emb.metadata),
        ),
        "setting": setting,
        "data": emb.describe(),
        "results": results,
        "verdicts": verdicts,
        "skipped": skipped,
    }
    return Results(doc), views  # a dict; shows as one short line in a notebook


def record_split(
    values: dict[str, dict[str, list]],
    info: dict[str, dict],
    name: str,
    out: dict,
    row: dict,
    rep: int,
    dim: int,
) -> None:
    """Add split ``rep``'s numbers of row ``name`` (``out``: ``tasks``, ``measures``) to
    ``values`` (``nan`` where a metric is missing); the first split's ``row`` goes to ``info``
    with ``out`` as its ``details``, later splits add their seconds."""
    flat = {**_numbers(out["tasks"]), **_numbers(out["measures"])}
    for key, v in flat.items():
        values[name].setdefault(key, [math.nan] * rep).append(v)
    for seq in values[name].values():
        if len(seq) < rep + 1:
            seq.append(math.nan)
    if rep == 0:
        info[name] = {**row, "details": out, "dim": dim}
    else:
        for k, v in row.get("seconds", {}).items():
            info[name]["seconds"][k] += v


def aggregate(
    rows: list[str],
    skipped: dict[str, str],
    values: dict[str, dict[str, list]],
    info: dict[str, dict],
    split_sizes: list[tuple[int, int]],
) -> tuple[dict, dict, float, float]:
    """``(results, verdicts, mean fitted images, mean evaluated images)`` of the per-split
    ``values``: per row and metric the corrected resampled t interval over the splits and the
    paired difference against ``none`` (:mod:`modgap.bench.stats`); the route (in memory or
    streamed) only fills ``values``."""
    repeats = len(split_sizes)
    n_fit = sum(f for f, _ in split_sizes) / repeats
    n_eval = sum(e for _, e in split_sizes) / repeats
    ratio = n_eval / n_fit if n_fit else math.nan
    results: dict[str, Any] = {}
    baseline = values.get("none")
    for name in rows:
        if name in skipped:
            continue
        row = dict(info[name])
        row["seconds"] = {k: v / repeats for k, v in row.get("seconds", {}).items()}
        row["metrics"] = {k: summarize(v, ratio) for k, v in values[name].items()}
        if baseline is not None and name != "none":
            # the gap measures rest on the fewest rows of a modality in a split; the tasks
            # (zero-shot accuracy over the images, retrieval) on their queries
            fewest = fewest_rows(row)
            measured = row.get("details", {}).get("measures", {})
            row["vs_none"] = {
                k: paired(v, baseline[k], ratio, k, fewest if k in measured else None)
                for k, v in values[name].items()
                if k in baseline
            }
        results[name] = row
    return results, _verdicts(results), n_fit, n_eval


def _reduce(
    name: str,
    params: dict,
    fit_set: EmbeddingSet,
    eval_set: EmbeddingSet,
    transductive: bool,
    compute: Compute,
    zero_shot: bool = False,
) -> tuple[EmbeddingSet, dict]:
    reducer, row = plan_row(name, params, transductive, zero_shot)
    row["seconds"] = {"fit": 0.0, "eval": 0.0}
    if reducer is None:
        return eval_set, row
    # a zero-shot set (no captions) is fitted on its images and class prompts
    fit_on = eval_set if row["fitted_on"]["images"] == "evaluated" else fit_set
    reducer.fit(fit_on.prompts_as_texts(), compute=compute)
    return reducer.transform_set(eval_set), row


def _correction_row(name, fit_set, eval_set, ks, folds, transductive, compute):
    t0 = time.perf_counter()
    bank = eval_set if transductive else fit_set
    corr = get_correction(name).fit(
        bank.image_emb, bank.text_emb, bank.text_to_image, compute=compute
    )
    t1 = time.perf_counter()
    tasks = retrieval_metrics(
        eval_set.image_emb,
        eval_set.text_emb,
        eval_set.text_to_image,
        ks,
        folds=folds,
        correction=corr,
        compute=compute,
    )
    row = {
        **correction_record(corr, transductive),
        "seconds": {"fit": t1 - t0, "eval": time.perf_counter() - t1},
    }
    return {"tasks": tasks, "measures": {}}, row


def _verdicts(results: dict) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for task, metrics in VERDICT_METRICS.items():
        lines = []
        for name, row in results.items():
            diffs = row.get("vs_none", {})
            metric = next((m for m in metrics if m in diffs), None)
            if metric is not None:
                lines.append(verdict(name, metric, diffs[metric]))
        if lines:
            out[task] = lines
    return out
