"""Results in CLIP_benchmark's record layout, so they merge with its tooling.

CLIP_benchmark (LAION-AI/CLIP_benchmark, ``clip_benchmark eval``) writes one JSON object per
(dataset, model, task)::

    {"dataset", "model", "pretrained", "task", "metrics", "language"}

and ``clip_benchmark build *.json --output benchmark.csv`` flattens a folder of them into a
CSV. modgap's tasks map onto its task names where one exists — ``retrieval`` →
``zeroshot_retrieval`` (``image_retrieval_recall@K``, ``text_retrieval_recall@K``: the same
metric names), ``zeroshot`` → ``zeroshot_classification`` (``acc1``, ``acc5``,
``mean_per_class_recall``) — and keep a ``modgap_`` prefix where none does (``modgap_clustering``,
``modgap_mixed_search``, ``modgap_gap`` for the gap measures). A benchmark row other than
``none`` names its reducer in ``model`` (``MODEL+center``), so CLIP_benchmark's
``model_fullname`` (model + pretrained) keeps the rows apart.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import ModgapError
from ..files import write_json

__all__ = [
    "TASK_NAMES",
    "TEMPLATE_FIELDS",
    "bench_records",
    "check_template",
    "eval_records",
    "label_defaults",
    "record_paths",
    "write_records",
]

#: modgap task -> CLIP_benchmark task name
TASK_NAMES = {
    "retrieval": "zeroshot_retrieval",
    "zeroshot": "zeroshot_classification",
    "clustering": "modgap_clustering",
    "mixed": "modgap_mixed_search",
    "gap": "modgap_gap",
}

_PREFIXES = {
    "retrieval": ("image_retrieval_recall@", "text_retrieval_recall@", "rsum", "i2t_", "t2i_"),
    "zeroshot": ("acc1", "acc5", "mean_per_class_recall", "prediction_", "label_"),
    "clustering": ("cluster_", "pair_coclustering", "modality_purity", "n_clusters"),
    "mixed": ("mixed_",),
}


def _task_of(key: str) -> str:
    for task, prefixes in _PREFIXES.items():
        if key.startswith(prefixes):
            return task
    return "gap"


def _split(metrics: dict) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for key, value in metrics.items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            out.setdefault(_task_of(key), {})[key] = value
    return out


def _record(dataset: str, model: str, pretrained: str, task: str, metrics: dict, language: str):
    return {
        "dataset": dataset,
        "model": model,
        "pretrained": pretrained,
        "task": TASK_NAMES[task],
        "metrics": metrics,
        "language": language,
    }


def eval_records(
    tasks: dict,
    dataset: str,
    model: str,
    pretrained: str = "",
    language: str = "en",
    measures: dict | None = None,
) -> list[dict]:
    """One record per task of a ``modgap eval`` result (and the gap measures, when given)."""
    merged = {**(measures or {}), **{k: v for k, v in tasks.items() if k != "skipped"}}
    return [
        _record(dataset, model, pretrained, task, metrics, language)
        for task, metrics in _split(merged).items()
    ]


def bench_records(
    document: dict,
    model: str | None = None,
    pretrained: str | None = None,
    language: str = "en",
    metadata: dict[str, dict] | None = None,
) -> list[dict]:
    """One record per data set × row × task of a benchmark document, with the mean over the
    splits as the metric (the intervals stay in ``results.json``). Each data set is labelled
    from its own ``metadata`` (``{data set: metadata}``); ``model`` / ``pretrained`` override."""
    out = []
    for dataset, run in document["datasets"].items():
        meta = (metadata or {}).get(dataset, {})
        base = model or str(meta.get("model") or "unknown")
        pre = pretrained if pretrained is not None else str(meta.get("pretrained") or "")
        for row, res in run["results"].items():
            means = {k: m["mean"] for k, m in res["metrics"].items()}
            name = base if row == "none" else f"{base}+{row}"
            out += [
                _record(dataset, name, pre, task, metrics, language)
                for task, metrics in _split(means).items()
            ]
    return out


#: the fields a record file name template may hold (CLIP_benchmark's ``--output`` names)
TEMPLATE_FIELDS = ("dataset", "model", "pretrained", "task", "language")


def check_template(target: str | os.PathLike) -> str:
    """``target`` if it is a record file name template :func:`record_paths` can fill: only the
    named fields of :data:`TEMPLATE_FIELDS`, each plain (``{task}``: no position, attribute,
    index, conversion or format spec — what ``str.format`` would fail on, or would let grow a
    name without bound). Raises :class:`ModgapError` naming ``--json`` otherwise."""
    import string

    template = os.fspath(target)
    fields = ", ".join(f"{{{f}}}" for f in TEMPLATE_FIELDS)
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as e:  # a lone brace: "{task.json", "x}.json"
        raise ModgapError(
            f"--json {template}: not a name template ({e}); write a literal brace as {{{{ or }}}}"
        ) from None
    for _, name, spec, conversion in parts:
        if name is None:
            continue
        if name not in TEMPLATE_FIELDS:
            raise ModgapError(
                f"--json {template}: unknown field {{{name}}} in the name template "
                f"(fields: {fields})"
            )
        if spec or conversion:
            raise ModgapError(
                f"--json {template}: write the field as plain {{{name}}}, without "
                f"'{'!' + conversion if conversion else ':' + spec}'"
            )
    return template


def record_paths(records: list[dict], target: str | os.PathLike) -> list[str]:
    """The file each record goes to: ``target`` is a name template with ``{dataset}``,
    ``{model}``, ``{pretrained}``, ``{task}`` and ``{language}`` (as CLIP_benchmark's
    ``--output``; ``/`` in a label becomes ``_``), checked by :func:`check_template`. Several
    records on one file are refused."""
    template = check_template(target)
    paths = [
        template.format(
            dataset=str(rec["dataset"]).replace("/", "_"),
            model=str(rec["model"]).replace("/", "_"),
            pretrained=str(rec["pretrained"]).replace("/", "_"),
            task=rec["task"],
            language=rec["language"],
        )
        for rec in records
    ]
    if len(set(paths)) < len(paths):
        raise ModgapError(
            f"--json {template}: {len(records)} records would share one file; put {{task}} "
            "(and {dataset}, {model} for several) in the name, e.g. results_{task}.json"
        )
    return paths


def write_records(records: list[dict], target: str | os.PathLike) -> list[Path]:
    """Write records the way CLIP_benchmark does, one JSON object per file named by
    :func:`record_paths`. Returns the paths written (each atomically)."""
    return [
        write_json(path, rec)
        for path, rec in zip(record_paths(records, target), records, strict=True)
    ]


def label_defaults(path: str, metadata: dict[str, Any]) -> tuple[str, str, str]:
    """``(dataset, model, pretrained)`` labels from a file name and its provenance."""
    p = Path(path)
    dataset = p.stem if p.suffix else p.name
    model = str(metadata.get("model") or "unknown")
    pretrained = str(metadata.get("pretrained") or "")
    return dataset, model, pretrained
