"""Engines: who runs the per-shard kernels. The kernels are the same everywhere; an engine only
schedules them.

* :class:`LocalEngine` — in this process, shard after shard.
* :class:`DaskEngine` — on a ``dask.distributed`` cluster (a scheduler address, or a local
  cluster started for the run). Per-shard tasks are mapped over the workers, accumulators are
  merged on the workers in a tree, and only the final state comes back.

Both engines merge in the **same tree**, fixed by the number of shards alone (pairs of
neighbours, level by level: :func:`tree_order`), so a Dask run returns the same floating-point
values as a local run, bit for bit, whatever order the tasks finish in.

Why Dask is the default distributed engine: it is pure Python on PyPI (no JVM, no separate
cluster manager), runs the same code on a laptop (``LocalCluster``) and on a cluster (a
scheduler address; Kubernetes, SLURM, YARN through ``dask-jobqueue``/``dask-kubernetes``), its
futures API maps one-to-one onto what modgap needs (map over shards, merge in a tree,
broadcast a small array), and it ships numpy arrays between workers without copies through
its own serialisers. A **Ray adapter** would be one more class here with the same four
methods (``put`` = ``ray.put``, ``map`` = remote tasks + ``ray.wait``, ``reduce`` = the same
tree of remote merges, ``close``), registered in :data:`ENGINES`; nothing else changes.

A Dask run never waits silently: the scheduler address is checked before any work and reached
within :data:`CONNECT_TIMEOUT` seconds, and a cluster left with no workers for
``worker_timeout`` seconds (default :data:`WORKER_TIMEOUT`), a worker that keeps dying or a
scheduler that goes away ends the run with one line.

Kernels and their arguments are module-level functions, :class:`~modgap.io.source.Source`
records and plain arrays/dicts; no user file is ever unpickled. Dask's own task transport
between your processes uses cloudpickle: connect only to a scheduler you run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import ModgapError
from .dask_engine import CONNECT_TIMEOUT, WORKER_TIMEOUT, DaskEngine, check_scheduler_address
from .engine import Engine, LocalEngine, tree_order

__all__ = [
    "CONNECT_TIMEOUT",
    "ENGINES",
    "WORKER_TIMEOUT",
    "DaskEngine",
    "Engine",
    "LocalEngine",
    "check_scheduler_address",
    "get_engine",
    "runs_in_process",
    "tree_order",
]

#: engines by name (``--engine``); a Ray adapter would register here
ENGINES: dict[str, Callable[..., Engine]] = {"local": LocalEngine, "dask": DaskEngine}


def get_engine(
    name: str | Engine | None = "local", scheduler: str | None = None, **kwargs: Any
) -> Engine:
    """An engine by name (``local`` or ``dask``); an :class:`Engine` is returned as it is."""
    if isinstance(name, Engine):
        return name
    name = name or ("dask" if scheduler else "local")
    if runs_in_process(name):
        if scheduler:
            raise ModgapError("--scheduler needs --engine dask")
        return ENGINES[name]()
    return ENGINES[name](scheduler, **kwargs)


def runs_in_process(engine: str | Engine | None) -> bool:
    """Whether ``engine`` — an :class:`Engine`, a name in :data:`ENGINES`, or None for the
    default — runs its tasks in this process (:attr:`Engine.in_process`). Callers decide
    "is this the local engine" here, never by comparing names or classes."""
    if engine is None:
        return True
    if isinstance(engine, Engine):
        return engine.in_process
    if engine not in ENGINES:
        raise ModgapError(f"unknown engine '{engine}' (choose one of: {', '.join(ENGINES)})")
    return bool(getattr(ENGINES[engine], "in_process", False))
