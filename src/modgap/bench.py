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

Output: a dict (and, with ``out_dir``, ``results.json`` and ``report.html``):

``{"provenance": ..., "setting": {...}, "results": {name: {"protocol", "params",
"fit_seconds", "eval_seconds", "tasks": {...}, "measures": {...}}}, "skipped": {name: why}}``
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .embeddings import EmbeddingSet
from .errors import ModgapError
from .files import write_json

__all__ = ["SUMMARY_COLUMNS", "run_bench", "summary_table"]

#: (result key, short header, better = "high" | "low" | None) for the terminal table and report
SUMMARY_COLUMNS: tuple[tuple[str, str, str | None], ...] = (
    ("rsum", "rSum", "high"),
    ("text_retrieval_recall@1", "i→t R@1", "high"),
    ("image_retrieval_recall@1", "t→i R@1", "high"),
    ("acc1", "ZS acc1", "high"),
    ("cluster_nmi", "NMI", "high"),
    ("modality_purity", "mod. purity", "low"),
    ("mixed_recall@10", "mixed R@10", "high"),
    ("mixed_same_modality@10", "same-mod@10", "low"),
    ("centroid_gap", "‖Δ‖", "low"),
    ("rmg", "RMG", None),
    ("linear_separability", "lin. sep.", "low"),
)


def _reducer_names(reducers: Sequence[str] | str | None) -> list[str]:
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
    name: str, params: dict, fit_set: EmbeddingSet, eval_set: EmbeddingSet, transductive: bool
) -> tuple[EmbeddingSet, str, dict]:
    from .reducers import get_reducer

    reducer = get_reducer(name, **params)
    protocol = "transductive" if transductive else "held-out"
    if not transductive and not reducer.supports_out_of_sample:
        protocol = "transductive (no out-of-sample extension)"
        transductive = True
    reducer.fit(eval_set if transductive else fit_set)
    return reducer.transform_set(eval_set), protocol, reducer.get_params()


def run_bench(
    emb: EmbeddingSet,
    reducers: Sequence[str] | str | None = None,
    out_dir: str | Path | None = None,
    transductive: bool = False,
    seed: int = 0,
    *,
    test_fraction: float = 0.5,
    reducer_params: dict[str, dict] | None = None,
    ks: Sequence[int] = (1, 5, 10),
    measures: Sequence[str] | None = None,
    progress: bool = False,
    console: Any = None,
    report: bool = True,
) -> dict:
    """Benchmark gap reducers on one embedding set.

    Parameters
    ----------
    emb : EmbeddingSet
        The data.
    reducers : list of str or comma-separated str, optional
        Registry names (see :data:`modgap.reducers.REDUCERS`) and/or ``"none"``; default all
        of them and ``"none"``.
    out_dir : path, optional
        Write ``results.json`` and ``report.html`` there (atomically).
    transductive : bool
        Fit reducers on the evaluated set instead of a separate fit split.
    seed : int
        Split, k-means and measure seed.
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
    report : bool
        Also write ``report.html`` when ``out_dir`` is given.

    Returns
    -------
    dict
        See the module docstring.
    """
    from .measures import measure_all
    from .tasks.suite import run_tasks

    names = _reducer_names(reducers)
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

    bar = _Bar(progress, console, total=len(names) * 3)
    with bar:
        for name in names:
            start = bar.completed
            t0 = time.perf_counter()
            bar.describe(f"{name}: fitting")
            try:
                if name == "none":
                    reduced, protocol, params = eval_set, "identity", {}
                else:
                    reduced, protocol, params = _fit_reducer(
                        name, reducer_params.get(name, {}), fit_set, eval_set, transductive
                    )
                bar.advance()
                t1 = time.perf_counter()
                bar.describe(f"{name}: tasks")
                tasks = run_tasks(
                    reduced, ks=ks, seed=seed, progress=lambda t, n=name: bar.describe(f"{n}: {t}")
                )
                bar.advance()
                gap = measure_all(
                    reduced,
                    only=measures,
                    seed=seed,
                    progress=lambda m, n=name: bar.describe(f"{n}: measure {m}"),
                )
                bar.advance()
            except Exception as e:
                stage = "fit" if bar.completed == start else "evaluation"
                skipped[name] = f"{stage} failed: {type(e).__name__}: {e}"
                bar.advance(start + 3 - bar.completed)
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

    try:
        from .provenance import provenance

        prov = provenance(
            data=emb.describe(), seed=seed, reducers=names, metadata=dict(emb.metadata)
        )
    except ImportError:  # pragma: no cover - provenance is part of the package
        prov = {"data": emb.describe(), "seed": seed}
    out = {"provenance": prov, "setting": setting, "results": results, "skipped": skipped}
    if out_dir is not None:
        write_results(out, out_dir, views if report else None)
    return out


def write_results(out: dict, out_dir: str | Path, views: dict | None = None) -> dict[str, Path]:
    """Write ``results.json`` (strict JSON) and, given the reduced sets, ``report.html``."""

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "results.json"}
    write_json(paths["json"], out)
    if views is not None:
        from .report.html import write_report

        paths["html"] = write_report(out, views, out_dir / "report.html")
    return paths


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        if not np.isfinite(v):
            return str(v)
        return f"{v:.1f}" if abs(v) >= 100 else f"{v:.3f}"
    return str(v)


def summary_rows(out: dict) -> tuple[list[str], list[list[str]]]:
    """Header and rows (one per reducer) of the summary table: the columns present in any
    result, from :data:`SUMMARY_COLUMNS`."""
    flat = {n: {**r["tasks"], **r["measures"]} for n, r in out["results"].items()}
    cols = [(k, h) for k, h, _ in SUMMARY_COLUMNS if any(k in f for f in flat.values())]
    header = ["reducer", *(h for _, h in cols)]
    rows = [[n, *(_fmt(f.get(k)) for k, _ in cols)] for n, f in flat.items()]
    return header, rows


def summary_table(out: dict) -> Any:
    """A :class:`rich.table.Table` of the main metrics per reducer."""
    from rich.table import Table

    setting = out["setting"]
    table = Table(title=f"modgap bench — {setting['protocol']}: {setting['protocol_note']}")
    header, rows = summary_rows(out)
    for i, h in enumerate(header):
        table.add_column(h, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*row)
    return table


def summary_markdown(out: dict) -> str:
    """The summary table as Markdown (for docs)."""
    header, rows = summary_rows(out)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


class _Bar:
    """A rich progress bar over the benchmark steps (counts only when ``enabled`` is false)."""

    def __init__(self, enabled: bool, console: Any, total: int):
        self.enabled = enabled
        self.total = total
        self.completed = 0
        self._progress = None
        self._task = None
        self._console = console

    def __enter__(self):
        if self.enabled:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TextColumn("{task.completed}/{task.total}"),
                TimeElapsedColumn(),
                console=self._console,
                transient=True,
            )
            self._progress.__enter__()
            self._task = self._progress.add_task("bench", total=self.total)
        return self

    def __exit__(self, *exc):
        if self._progress is not None:
            self._progress.__exit__(*exc)

    def describe(self, text: str) -> None:
        if self._progress is not None:
            self._progress.update(self._task, description=text)

    def advance(self, n: int = 1) -> None:
        self.completed += n
        if self._progress is not None:
            self._progress.advance(self._task, n)
