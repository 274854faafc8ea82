"""``reduce.json``: the record of one ``modgap reduce`` run, and what later commands read in it.

One summary for both writers (:mod:`.reduce` writes single files in memory, :mod:`.write`
writes shard by shard): what was fitted or applied, the model file and its SHA-256, the
outputs, which rows the reducer saw (``fitted_on``) and the provenance.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..compute import Compute
from ..provenance import provenance

__all__ = ["MODEL", "SUMMARY", "fitted_rows_warning", "reduce_summary"]

#: the summary file of a reduce output folder (also its marker)
SUMMARY = "reduce.json"
#: the fitted reducer inside a reduce output folder
MODEL = "reducer.safetensors"


def reduce_summary(
    reducer: Any,
    *,
    apply: Any,
    model: str,
    model_sha256: str,
    outputs: list[str],
    fitted_on: dict | None,
    inputs: dict,
    counts: dict,
    compute: Compute,
    **extra: Any,
) -> dict:
    """The ``reduce.json`` record of one run, in-memory or streamed: what was fitted or
    applied, which model file (and its SHA-256), the outputs, which rows the reducer saw
    (``fitted_on``; ``None`` when a saved model was applied) and the provenance."""
    return {
        "mode": "apply" if apply else "fit",
        "reducer": reducer.name,
        "params": reducer.get_params(),
        "model": model,
        "model_sha256": model_sha256,
        "outputs": outputs,
        "fitted_on": fitted_on if apply is None else None,
        **extra,
        "provenance": provenance(inputs=inputs, counts=counts, compute=compute.describe()),
    }


def fitted_rows_warning(input_path: str | os.PathLike) -> str | None:
    """When ``input_path`` is an output of ``modgap reduce`` that fitted its reducer on these
    very rows, the sentence to warn with (else None): scores on them are not held-out."""
    p = Path(input_path)
    folder = p if p.is_dir() else p.parent
    summary = folder / SUMMARY
    if not summary.is_file():
        return None
    try:
        doc = json.loads(summary.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or doc.get("mode") != "fit" or not doc.get("fitted_on"):
        return None
    outputs = {str(Path(o).resolve()) for o in doc.get("outputs", []) if isinstance(o, str)}
    if str(p.resolve()) not in outputs:
        return None
    return (
        f"{input_path} was written by 'modgap reduce {doc.get('reducer')}', which was fitted on "
        "these same rows: scores on them are transductive, not held-out (judge a reducer with "
        "'modgap bench', which fits and scores on separate splits)"
    )
