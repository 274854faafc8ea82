"""The gap benchmark on a source that does not fit in memory: the protocol of
:func:`modgap.bench.protocol.run_bench`, every step streamed.

Each split divides the images as the in-memory bench does (:func:`modgap.io.subset.split_rows`,
the rule of :meth:`EmbeddingSet.split`; captions follow their image) into two
:class:`~modgap.io.subset.SubsetSource` views of the source on disk. A reducer is fitted on
the fit view by :func:`modgap.stream.fit.fit_streaming` (full-pass moments for ``center``,
``shift``, ``gaussian``, ``procrustes``; a stated uniform sample of ``fit_sample`` images
with their captions for the others) and the evaluated view is read through it block by block
(:class:`TransformedSource`: nothing is written). Every task and gap measure is then scored
on it by :func:`modgap.stream.tasks.stream_eval` and :func:`modgap.stream.stream_measures`:
exact keys exactly, neighbour and retrieval keys on ``sample_queries`` queries per modality
against the whole evaluated pool (exact when the split has at most that many rows), the
clustering on its stated sample. With ``folds``, retrieval is averaged over folds of the
evaluated view's images as in memory (:func:`modgap.stream.tasks.stream_retrieval_folds`,
the fold rule :func:`modgap.tasks.retrieval.fold_parts`). The per-split numbers are
aggregated by :func:`modgap.bench.protocol.aggregate`: the same intervals, paired
differences and verdicts. Any engine runs it (Dask ships the views to its workers) with the
local engine's numbers.

With ``sample_queries=None`` and ``fit_sample=None`` every per-split number equals the
in-memory bench's on the same splits (to float64 round-off; gaussian and procrustes to 1e-10,
their merged moments going through matrix roots and SVDs).

Retrieval-time score corrections are rows as in memory: each is fitted on a **bank**, a
stated uniform sample of ``bank_sample`` images of the fit view (the evaluated one when
transductive) with all their captions (:func:`modgap.stream.fit.sample_pairs`, texts ordered
by their image as :meth:`EmbeddingSet.subset` orders them), and retrieval on the evaluated
view is scored with it by :func:`modgap.stream.tasks.stream_retrieval_folds` (offsets of every
candidate, sampled queries). When the sample is the whole fit view, the bank is the one the
in-memory bench fits on. The bank's size is in each row (``bank``) and in ``setting``.

What does not stream is listed under ``skipped`` with the reason: linear
separability of a row scored on the rows its reducer was fitted on (the in-memory bench
refits on the probe's own training part, which needs the rows in memory).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .._progress import progress as progress_bar
from ..compute import Compute, resolve
from ..errors import ModgapError
from ..io.subset import SubsetSource, split_rows
from ..measures import resolve_measures
from ..provenance import provenance
from ..stream.engines import Engine, LocalEngine
from ..stream.fit import DEFAULT_FIT_SAMPLE, fit_streaming, sample_pairs
from ..stream.measures import DEFAULT_SAMPLE_QUERIES, stream_measures
from ..stream.tasks import source_classes, stream_eval, stream_retrieval_folds
from ..tasks.scoring import get_correction
from .protocol import aggregate, record_split
from .rows import check_options, correction_record, plan_row
from .stats import LEVEL

__all__ = ["TransformedSource", "run_bench_stream"]


class TransformedSource:
    """A source read through a fitted reducer: every block, gathered row and class prompt
    is mapped by ``transform_images`` / ``transform_texts`` as it is read (the rows an
    in-memory :meth:`Reducer.transform_set` would hold, one block at a time)."""

    def __init__(self, base: Any, reducer: Any) -> None:
        self.base = base
        self.reducer = reducer
        probe = base.gather("image", [0]) if base.n_images else base.gather("text", [0])
        self.dim = int(reducer.transform_images(probe).shape[1])

    def __getattr__(self, name: str) -> Any:  # sizes, shards, pairs: those of the base
        # not through self.base: an engine that ships the view to its workers unpickles it
        # before ``base`` is set, and a lookup of it here would recurse without end
        base = self.__dict__.get("base")
        if base is None or name.startswith("__"):
            raise AttributeError(name)
        return getattr(base, name)

    def _map(self, modality: str, rows: np.ndarray) -> np.ndarray:
        if modality == "image":
            return self.reducer.transform_images(rows)
        return self.reducer.transform_texts(rows)

    def blocks(self, shard: Any, modality: str, rows: int):
        for start, block in self.base.blocks(shard, modality, rows):
            yield start, self._map(modality, block)

    def raw_blocks(self, shard: Any, modality: str, rows: int):
        # the reducer maps checked, normalised rows (as in memory), so read those
        part = self.base.part(shard, modality)
        for start, block in self.blocks(shard, modality, rows):
            yield start, block, part.path

    def gather(self, modality: str, index: Any) -> np.ndarray:
        return self._map(modality, self.base.gather(modality, index))

    def classes(self) -> dict:
        out = dict(self.base.classes())
        c = out.get("class_text_emb")
        if c is not None:
            flat = self.reducer.transform_texts(c.reshape(-1, c.shape[-1]))
            out["class_text_emb"] = flat.reshape(*c.shape[:-1], flat.shape[-1])
        return out

    def describe(self) -> dict:
        return {**self.base.describe(), "dim": self.dim, "reduced_by": self.reducer.name}


def _reduce_stream(
    name: str,
    params: dict,
    fit_view: SubsetSource,
    eval_view: SubsetSource,
    transductive: bool,
    fit_sample: int | None,
    engine: Engine,
    compute: Compute,
) -> tuple[Any, dict]:
    """``(evaluated source after the reducer, row record)``: ``_reduce`` of the in-memory
    protocol, with the fit streamed."""
    reducer, row = plan_row(name, params, transductive)
    # the rows of each modality the gap measures compare (the minimum-rows rule of the bench)
    row["sample"] = {"images": int(eval_view.n_images), "texts": int(eval_view.n_texts)}
    if reducer is None:
        return eval_view, row
    on_eval = row["fitted_on"]["images"] == "evaluated"
    fitted_on = fit_streaming(
        reducer,
        eval_view if on_eval else fit_view,
        fit_sample=fit_sample,
        engine=engine,
        compute=compute,
    )
    fitted_on["split"] = "evaluated" if on_eval else "fit"
    return TransformedSource(eval_view, reducer), {
        **row,
        "fitted_on": {**row["fitted_on"], **fitted_on},
    }


def _correction_stream(
    name: str,
    fit_view: SubsetSource,
    eval_view: SubsetSource,
    transductive: bool,
    bank_sample: int | None,
    ks: Sequence[int],
    folds: int | None,
    sample_queries: int | None,
    engine: Engine,
    compute: Compute,
) -> tuple[dict, dict]:
    """``(numbers, row record)`` of a score-correction row: ``_correction_row`` of the
    in-memory protocol, with the bank a stated sample and retrieval streamed."""
    t0 = time.perf_counter()
    view = eval_view if transductive else fit_view
    images, texts, t2i = sample_pairs(view, bank_sample, compute.seed)
    texts = texts[np.argsort(t2i, kind="stable")]  # by image: the in-memory subset's order
    corr = get_correction(name).fit(
        view.gather("image", images), view.gather("text", texts), compute=compute
    )
    t1 = time.perf_counter()
    tasks, notes = _split_measures(
        stream_retrieval_folds(
            eval_view,
            ks,
            folds,
            sample_queries=sample_queries,
            engine=engine,
            compute=compute,
            correction=corr,
        )
    )
    row = {
        **correction_record(corr, transductive),
        "bank": {
            "split": "evaluated" if transductive else "fit",
            "images": int(images.size),
            "texts": int(texts.size),
            "rows": "all" if images.size == view.n_images else "uniform sample",
        },
        "seconds": {"fit": t1 - t0, "eval": time.perf_counter() - t1},
        "skipped": {},
        "streaming": {"tasks": notes, "measures": {}},
    }
    return {"tasks": tasks, "measures": {}}, row


def _split_measures(out: dict) -> tuple[dict, dict]:
    """``(numbers and records, the streaming notes)`` of a streamed result."""
    notes = {k: out.pop(k) for k in ("estimates", "sampling", "streaming", "skipped") if k in out}
    return out, notes


def run_bench_stream(
    source: Any,
    reducers: Sequence[str] | str | None = None,
    transductive: bool = False,
    seed: int | None = None,
    *,
    repeats: int = 5,
    test_fraction: float = 0.5,
    reducer_params: dict[str, dict] | None = None,
    corrections: Sequence[str] | None = None,
    ks: Sequence[int] = (1, 5, 10),
    folds: int | None = None,
    measures: Sequence[str] | None = None,
    sample_queries: int | None = DEFAULT_SAMPLE_QUERIES,
    fit_sample: int | None = DEFAULT_FIT_SAMPLE,
    bank_sample: int | None = None,
    engine: Engine | None = None,
    compute: Compute | None = None,
    progress: bool = False,
    on_step: Callable[[str], None] | None = None,
) -> tuple[dict, dict]:
    """Benchmark gap reducers on a streamed source (see the module docstring).

    Parameters
    ----------
    source : Source
        From :func:`modgap.io.open_source` (paired, with captions).
    reducers, transductive, seed, repeats, test_fraction, reducer_params, ks, folds, measures
        As for :func:`~modgap.bench.protocol.run_bench` (``folds``: retrieval averaged over
        folds of each evaluated view, the in-memory fold rule).
    corrections : sequence of str, optional
        Retrieval-time score corrections to add as rows (as in memory), each fitted on a bank
        of ``bank_sample`` images of the fit view with their captions.
    sample_queries : int or None
        Queries per modality of the sampled measures and of retrieval (None: every row).
    fit_sample : int or None
        Images the sample-fitted reducers (spectral, OT) are fitted on.
    bank_sample : int or None
        Images (with their captions) of the corrections' query bank; default ``fit_sample``.
    engine : Engine, optional
        Where the kernels run (default in-process).
    compute : Compute, optional
        Memory budget (row blocks), threads and seed.
    progress : bool
        A bar over the rows of every split.
    on_step : callable, optional
        Called with one line as each row of each split starts.

    Returns
    -------
    document : dict
        The document of :func:`~modgap.bench.protocol.run_bench` with ``setting["route"] =
        "stream"``, the sample sizes in ``setting``, each reducer row's ``fitted_on`` and per
        row ``skipped`` (key -> why) for what did not stream.
    views : dict
        Empty: the evaluated rows are not held in memory for the report's figures.
    """
    compute = resolve(compute, seed=seed)
    base_seed = compute.seed
    engine = engine or LocalEngine()
    names, correction_names = check_options(
        reducers, corrections, reducer_params, repeats, test_fraction
    )
    if not source.has_pairs:
        raise ModgapError(
            "the streamed bench needs image-text pairs (captions); bench a zero-shot or "
            "unpaired set in memory"
        )
    reducer_params = reducer_params or {}
    bank_sample = fit_sample if bank_sample is None else bank_sample
    classes = source_classes(source)
    rows = names + correction_names
    values: dict[str, dict[str, list]] = {r: {} for r in rows}
    info: dict[str, dict] = {}
    skipped: dict[str, str] = {}
    split_sizes = []

    def failed(name: str, rep: int, e: Exception) -> None:  # a failure is a result too
        skipped[name] = f"failed on split {rep + 1}: {type(e).__name__}: {e}"
        values.pop(name, None)
        info.pop(name, None)

    with progress_bar("bench (streamed)", total=repeats * len(rows), enabled=progress) as bar:
        for rep in range(repeats):
            rep_compute = compute.replace(seed=base_seed + rep)
            fit_rows, eval_rows = split_rows(source.n_images, test_fraction, base_seed + rep)
            fit_view = SubsetSource(source, fit_rows, classes)
            eval_view = SubsetSource(source, eval_rows, classes)
            split_sizes.append((fit_view.n_images, eval_view.n_images))
            for k, name in enumerate(rows, 1):
                step = f"split {rep + 1}/{repeats}, row {k}/{len(rows)}: {name}"
                bar.describe(step)
                if on_step is not None:
                    on_step(step)
                if name in skipped:
                    bar.advance()
                    continue
                if name in correction_names:
                    try:
                        out, row = _correction_stream(
                            name,
                            fit_view,
                            eval_view,
                            transductive,
                            bank_sample,
                            ks,
                            folds,
                            sample_queries,
                            engine,
                            rep_compute,
                        )
                        record_split(values, info, name, out, row, rep, eval_view.dim)
                    except Exception as e:
                        failed(name, rep, e)
                    bar.advance()
                    continue
                t0 = time.perf_counter()
                try:
                    reduced, row = _reduce_stream(
                        name,
                        reducer_params.get(name, {}),
                        fit_view,
                        eval_view,
                        transductive,
                        fit_sample,
                        engine,
                        rep_compute,
                    )
                    t1 = time.perf_counter()
                    tasks, task_notes = _split_measures(
                        stream_eval(
                            reduced,
                            ks=ks,
                            folds=folds,
                            sample_queries=sample_queries,
                            engine=engine,
                            compute=rep_compute,
                        )
                    )
                    not_here = {}
                    only = measures
                    if row["scored_on_fitted_rows"]:
                        only = [m for m in resolve_measures(measures) if m != "linear_separability"]
                        not_here["linear_separability"] = (
                            "scored on the rows the reducer was fitted on: the in-memory bench "
                            "refits the reducer on the probe's training part, which needs the "
                            "rows in memory"
                        )
                    gap, gap_notes = _split_measures(
                        stream_measures(
                            reduced,
                            only=only,
                            sample_queries=sample_queries,
                            engine=engine,
                            compute=rep_compute,
                        )
                        if only != []
                        else {}
                    )
                except Exception as e:  # a reducer failing on these data is a result too
                    failed(name, rep, e)
                    bar.advance()
                    continue
                row["seconds"] = {"fit": t1 - t0, "eval": time.perf_counter() - t1}
                row["skipped"] = {
                    **task_notes.pop("skipped", {}),
                    **gap_notes.pop("skipped", {}),
                    **not_here,
                }
                row["streaming"] = {"tasks": task_notes, "measures": gap_notes}
                out = {"tasks": tasks, "measures": gap}
                record_split(values, info, name, out, row, rep, reduced.dim)
                bar.advance()

    results, verdicts, n_fit, n_eval = aggregate(rows, skipped, values, info, split_sizes)
    bank_rows = (
        "all the" if bank_sample is None else f"a uniform sample of {bank_sample} (all when fewer)"
    )
    setting = {
        "protocol": "transductive" if transductive else "held-out",
        "protocol_note": (
            f"streamed: reducers fitted on "
            f"{'the evaluated images themselves' if transductive else 'a fit part'}, scored "
            f"on held-out images; {repeats} random splits, {test_fraction:.0%} of the images "
            "evaluated in each"
        ),
        "route": "stream",
        "repeats": repeats,
        "seeds": [base_seed + r for r in range(repeats)],
        "test_fraction": test_fraction,
        "n_fit_images": n_fit,
        "n_eval_images": n_eval,
        "sample_queries": sample_queries,
        "fit_sample": fit_sample,
        "fit_note": "center, shift, gaussian, procrustes: exact full-pass moments of the fit "
        f"part; spectral and OT: a uniform sample of {fit_sample} images with their captions",
        "bank_sample": bank_sample if correction_names else None,
        "bank_note": (
            f"score corrections: query bank of {bank_rows} images of the "
            f"{'evaluated' if transductive else 'fit'} part with their captions"
            if correction_names
            else None
        ),
        "interval": f"{LEVEL:.0%} corrected resampled t over the splits (Nadeau & Bengio 2003)",
        "ks": list(ks),
        "folds": folds,
        "engine": engine.describe(),
    }
    data = {**source.describe(), "labelled": "labels" in classes}
    doc = {
        "provenance": provenance(
            data=data,
            seed=base_seed,
            compute=compute.describe(),
            reducers=names,
            corrections=correction_names,
            metadata={"streamed": True},
        ),
        "setting": setting,
        "data": data,
        "results": results,
        "verdicts": verdicts,
        "skipped": skipped,
    }
    return doc, {}
