"""The ``reduce.json`` record of a reduce run, shared by the in-memory and the shard-by-shard
writers."""

from __future__ import annotations

from typing import Any

from ..compute import Compute
from ..provenance import provenance

__all__ = ["reduce_summary"]


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
