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

Kernels and their arguments are module-level functions, :class:`~modgap.stream.source.Source`
records and plain arrays/dicts; no user file is ever unpickled. Dask's own task transport
between your processes uses cloudpickle: connect only to a scheduler you run.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

from ..errors import ModgapError

__all__ = ["ENGINES", "DaskEngine", "Engine", "LocalEngine", "get_engine", "tree_order"]


def tree_order(n: int) -> list[tuple[int, int, int]]:
    """The merge tree of ``n`` leaves as ``(out, left, right)`` steps over slots.

    Level by level, neighbours ``(0, 1), (2, 3), ...`` are merged and an odd last one moves up
    unchanged. Slots ``0..n-1`` are the leaves; each step writes a new slot; the last slot is
    the root. The shape depends only on ``n``.
    """
    steps: list[tuple[int, int, int]] = []
    level = list(range(n))
    nxt = n
    while len(level) > 1:
        new = []
        for j in range(0, len(level) - 1, 2):
            steps.append((nxt, level[j], level[j + 1]))
            new.append(nxt)
            nxt += 1
        if len(level) % 2:
            new.append(level[-1])
        level = new
    return steps


class Engine:
    """The interface of an engine (see the module docstring)."""

    name = "engine"

    def put(self, value: Any) -> Any:
        """Make ``value`` (an array shared by many tasks) available to every task."""
        return value

    def map(
        self,
        fn: Callable,
        items: Sequence[Any],
        *args: Any,
        on_done: Callable[[int, Any], None] | None = None,
    ) -> list:
        """``[fn(item, *args) for item in items]``; ``on_done(i, result)`` as each finishes."""
        raise NotImplementedError

    def reduce(
        self,
        fn: Callable,
        items: Sequence[Any],
        merge: Callable[[Any, Any], Any],
        *args: Any,
        on_done: Callable[[int, Any], None] | None = None,
    ) -> Any:
        """``merge`` over ``fn(item, *args)`` in the tree of :func:`tree_order`."""
        raise NotImplementedError

    def describe(self) -> dict:
        return {"engine": self.name}

    def close(self) -> None:
        """Release workers started for this engine."""

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class LocalEngine(Engine):
    """Run every task in this process, in item order."""

    name = "local"

    def map(self, fn, items, *args, on_done=None):
        out = []
        for i, item in enumerate(items):
            r = fn(item, *args)
            if on_done is not None:
                on_done(i, r)
            out.append(r)
        return out

    def reduce(self, fn, items, merge, *args, on_done=None):
        if not items:
            raise ModgapError("nothing to reduce: the source has no shards")
        # the tree of tree_order, folded as leaves arrive: a stack of (size, state), at most
        # log2(n) states held at once; equal-size neighbours merge (the level pairs), and what
        # is left merges from the top down at the end (the odd ones carried up)
        stack: list[tuple[int, Any]] = []
        for i, item in enumerate(items):
            r = fn(item, *args)
            if on_done is not None:
                on_done(i, r)
            size, state = 1, r
            while stack and stack[-1][0] == size:
                _, left = stack.pop()
                state, size = merge(left, state), 2 * size
            stack.append((size, state))
        _, state = stack.pop()
        while stack:
            _, left = stack.pop()
            state = merge(left, state)
        return state


class DaskEngine(Engine):
    """Run the tasks on a ``dask.distributed`` cluster.

    Parameters
    ----------
    scheduler : str, optional
        Address of a running scheduler (``tcp://host:8786``). Without it a local cluster is
        started for the run and closed with the engine.
    n_workers : int, optional
        Workers of the local cluster (default: the CPU count, at most 8).
    processes : bool
        Local cluster: one process per worker (default) or threads in this process (faster
        to start; what the tests use).
    threads_per_worker : int
        Threads of each worker of the local cluster; torch and BLAS are limited to as many.
    """

    name = "dask"

    def __init__(
        self,
        scheduler: str | None = None,
        n_workers: int | None = None,
        processes: bool = True,
        threads_per_worker: int = 1,
    ):
        from .._optional import require

        distributed = require("distributed", "scale", "--engine dask", "dask[distributed]")
        Client, LocalCluster = distributed.Client, distributed.LocalCluster
        self.scheduler = scheduler
        self._cluster = None
        if scheduler:
            try:
                self.client = Client(scheduler, timeout="20s")
            except (OSError, TimeoutError) as e:
                raise ModgapError(
                    f"--scheduler {scheduler}: cannot reach the Dask scheduler "
                    f"({str(e).splitlines()[0][:120]})"
                ) from None
        else:
            n = n_workers or min(8, os.cpu_count() or 1)
            self._cluster = LocalCluster(
                n_workers=n,
                threads_per_worker=threads_per_worker,
                processes=processes,
                dashboard_address=None,
                silence_logs=40,
            )
            self.client = Client(self._cluster)
        self.threads_per_worker = threads_per_worker

    def n_workers(self) -> int:
        return len(self.client.scheduler_info().get("workers", {}))

    def put(self, value):
        # wrapped in a list: scatter would otherwise split a list or dict into its items
        return self.client.scatter([value], broadcast=True)[0]

    def _submit_all(self, fn, items, args):
        return [
            self.client.submit(
                fn, item, *args, key=f"modgap-{fn.__name__}-{i}-{os.urandom(4).hex()}"
            )
            for i, item in enumerate(items)
        ]

    def _watch(self, futures, on_done):
        from distributed import as_completed

        index = {f.key: i for i, f in enumerate(futures)}
        for f in as_completed(futures):
            if f.status == "error":
                f.result()  # raises the task's exception here
            if on_done is not None:
                on_done(index[f.key], None)

    def map(self, fn, items, *args, on_done=None):
        futures = self._submit_all(fn, items, args)
        try:
            self._watch(futures, on_done)
            return self.client.gather(futures)
        finally:
            for f in futures:
                f.release()

    def reduce(self, fn, items, merge, *args, on_done=None):
        if not items:
            raise ModgapError("nothing to reduce: the source has no shards")
        slots = self._submit_all(fn, items, args)
        leaves = list(slots)
        for out, a, b in tree_order(len(items)):
            assert out == len(slots)
            slots.append(self.client.submit(merge, slots[a], slots[b], pure=False))
        try:
            self._watch(leaves, on_done)
            return slots[-1].result()
        finally:
            for f in slots:
                f.release()

    def describe(self):
        return {
            "engine": "dask",
            "scheduler": self.scheduler or "local cluster",
            "workers": self.n_workers(),
        }

    def close(self):
        self.client.close()
        if self._cluster is not None:
            self._cluster.close()


#: engines by name (``--engine``); a Ray adapter would register here
ENGINES: dict[str, Callable[..., Engine]] = {"local": LocalEngine, "dask": DaskEngine}


def get_engine(
    name: str | Engine | None = "local", scheduler: str | None = None, **kwargs: Any
) -> Engine:
    """An engine by name (``local`` or ``dask``); an :class:`Engine` is returned as it is."""
    if isinstance(name, Engine):
        return name
    name = name or ("dask" if scheduler else "local")
    if name not in ENGINES:
        raise ModgapError(f"unknown engine '{name}' (choose one of: {', '.join(ENGINES)})")
    if scheduler and name != "dask":
        raise ModgapError("--scheduler needs --engine dask")
    if name == "dask":
        return DaskEngine(scheduler, **kwargs)
    return LocalEngine()
