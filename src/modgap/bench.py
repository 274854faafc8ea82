"""The gap benchmark: every reducer (and "none") × every applicable task × every gap measure.

Protocol. By default each reducer is fitted on a *fit split* and everything is evaluated on a
held-out *test split* (:meth:`EmbeddingSet.split`, by image, captions follow their image), so
the numbers say what the reducer does to unseen data. ``transductive=True`` fits on the
evaluated set itself, as Fill the Gap (Role et al. 2025) does. A reducer without an
out-of-sample extension (``supports_out_of_sample = False``) is always fitted transductively,
and that is recorded in its result. A reducer that fails on the data is skipped with the
reason recorded; the benchmark goes on.

Zero-shot after a reducer: the class prompt embeddings are texts, so they are mapped with
``transform_texts``.

Output: a dict (written as ``results.json``, with ``report.html``, by
:func:`modgap.report.write_bench`):

``{"provenance": ..., "setting": {...}, "results": {name: {"protocol", "params",
"fit_seconds", "eval_seconds", "tasks": {...}, "measures": {...}}}, "skipped": {name: why}}``
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from ._progress import progress as progress_bar
from .compute import Compute, resolve
from .embeddings import EmbeddingSet
from .errors import ModgapError
from .provenance import provenance

__all__ = ["reducer_names", "run_bench"]


def reducer_names(reducers: Sequence[str] | str | None) -> list[str]:
    from .reducers import REDUCERS

    if reducers is None:
        return ["none", *REDUCERS]
    if isinstance(reducers, str):
        reducers = [r.strip() for r in reducers.split(",") if r.strip()]
    names = list(dict.fromkeys(reducers))
    unknown = [r for r in names if r != "none" and r not in REDUCERS]
    if unknown:
        raise ModgapError(
            f"unknown reducer(s) {', '.join(unknown)}; choose from none, {', '.join(REDUCERS)}"
        )
    if not names:
        raise ModgapError("no reducer selected")
    return names


def _fit_reducer(
    name: str,
    params: dict,
    fit_set: EmbeddingSet,
    eval_set: EmbeddingSet,
    transductive: bool,
    compute: Compute,
) -> tuple[EmbeddingSet, str, dict]:
    from .reducers import get_reducer

    reducer = get_reducer(name, **params)
    protocol = "transductive" if transductive else "held-out"
    if not transductive and not reducer.supports_out_of_sample:
        protocol = "transductive (no out-of-sample extension)"
        transductive = True
    reducer.fit(eval_set if transductive else fit_set, compute=compute)
    return reducer.transform_set(eval_set), protocol, reducer.get_params()


def run_bench(
    emb: EmbeddingSet,
    reducers: Sequence[str] | str | None = None,
    transductive: bool = False,
    seed: int | None = None,
    *,
    test_fraction: float = 0.5,
    reducer_params: dict[str, dict] | None = None,
    ks: Sequence[int] = (1, 5, 10),
    measures: Sequence[str] | None = None,
    progress: bool = False,
    console: Any = None,
    compute: Compute | None = None,
) -> tuple[dict, dict]:
    """Benchmark gap reducers on one embedding set.

    Parameters
    ----------
    emb : EmbeddingSet
        The data.
    reducers : list of str or comma-separated str, optional
        Registry names (see :data:`modgap.reducers.REDUCERS`) and/or ``"none"``; default all
        of them and ``"none"``.
    transductive : bool
        Fit reducers on the evaluated set instead of a separate fit split.
    seed : int, optional
        Split, k-means and measure seed (default: the compute context's).
    test_fraction : float
        Share of images in the evaluated split (held-out protocol).
    reducer_params : dict, optional
        ``{reducer name: {param: value}}`` overrides.
    ks : sequence of int
        Recall@K cut-offs.
    measures : sequence of str, optional
        Subset of gap measures (:func:`modgap.measures.measure_all` ``only``).
    progress : bool
        Show rich progress bars.
    console : rich.console.Console, optional
        Where progress goes.
    compute : Compute, optional
        Device, memory budget and seed of every fit, task and measure.

    Returns
    -------
    results : dict
        See the module docstring.
    views : dict
        Reducer name -> the evaluated :class:`EmbeddingSet` after it (for the report's
        figures: :func:`modgap.report.write_bench`).
    """
    from .measures import measure_all
    from .tasks.suite import run_tasks

    compute = resolve(compute, seed=seed)
    seed = compute.seed
    names = reducer_names(reducers)
    reducer_params = reducer_params or {}
    if transductive:
        fit_set = eval_set = emb
    else:
        fit_set, eval_set = emb.split(test_fraction=test_fraction, seed=seed)
    setting = {
        "protocol": "transductive" if transductive else "held-out",
        "protocol_note": (
            "reducers fitted on the evaluated set"
            if transductive
            else f"reducers fitted on a fit split, evaluated on a held-out split "
            f"({test_fraction:.0%} of images, seed {seed})"
        ),
        "seed": seed,
        "test_fraction": None if transductive else test_fraction,
        "fit_split": fit_set.describe(),
        "eval_split": eval_set.describe(),
        "ks": list(ks),
    }
    results: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    views: dict[str, EmbeddingSet] = {}

    with progress_bar("bench", total=len(names) * 3, enabled=progress, console=console) as bar:
        for name in names:
            start = bar.completed
            t0 = time.perf_counter()
            bar.describe(f"{name}: fitting")
            try:
                if name == "none":
                    reduced, protocol, params = eval_set, "identity", {}
                else:
                    reduced, protocol, params = _fit_reducer(
                        name,
                        reducer_params.get(name, {}),
                        fit_set,
                        eval_set,
                        transductive,
                        compute,
                    )
                bar.advance()
                t1 = time.perf_counter()
                bar.describe(f"{name}: tasks")
                tasks = run_tasks(
                    reduced,
                    ks=ks,
                    progress=lambda t, n=name: bar.describe(f"{n}: {t}"),
                    compute=compute,
                )
                bar.advance()
                gap = measure_all(
                    reduced,
                    only=measures,
                    progress=lambda m, n=name: bar.describe(f"{n}: measure {m}"),
                    compute=compute,
                )
                bar.advance()
            except Exception as e:
                stage = "fit" if bar.completed == start else "evaluation"
                skipped[name] = f"{stage} failed: {type(e).__name__}: {e}"
                bar.update(completed=start + 3)
                continue
            results[name] = {
                "protocol": protocol,
                "params": params,
                "fit_seconds": round(t1 - t0, 4),
                "eval_seconds": round(time.perf_counter() - t1, 4),
                "dim": reduced.dim,
                "tasks": tasks,
                "measures": gap,
            }
            views[name] = reduced

    prov = provenance(
        data=emb.describe(),
        seed=seed,
        compute=compute.describe(),
        reducers=names,
        metadata=dict(emb.metadata),
    )
    out = {"provenance": prov, "setting": setting, "results": results, "skipped": skipped}
    return out, views
