"""The Dask engine: :class:`DaskEngine` runs the per-shard tasks on a ``dask.distributed``
cluster and merges them there in the tree of :func:`~modgap.stream.engine.tree_order`, and
:func:`check_scheduler_address` checks a ``--scheduler`` address before any work (see
:mod:`modgap.stream.engines` for why Dask, and how a run that cannot go on ends)."""

from __future__ import annotations

import os
import re
import time
from concurrent.futures import CancelledError

from .._optional import require
from ..errors import ModgapError
from .engine import Engine, tree_order

__all__ = ["CONNECT_TIMEOUT", "WORKER_TIMEOUT", "DaskEngine", "check_scheduler_address"]

#: seconds to reach a scheduler given by address before the run gives up
CONNECT_TIMEOUT = 10.0
#: seconds a cluster may have no workers (none yet, or all lost) before the run gives up
WORKER_TIMEOUT = 30.0
# how often a waiting run asks the scheduler how many workers it has left, and how long it
# waits for the answer (a connection to a dead scheduler is retried up to the connect timeout)
_POLL_S = 1.0
_ASK_S = 2.0

_SCHEMES = ("tcp", "tls", "ws", "wss", "ucx")
_ADDRESS = re.compile(
    r"(?:([A-Za-z][A-Za-z0-9+.-]*)://)?(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(\d+)/?"
)


def check_scheduler_address(address: str) -> str:
    """``address`` when it has the form of a Dask scheduler address (``tcp://HOST:PORT``,
    ``tls://``, ``ws://``, ``wss://``, ``ucx://``, or ``HOST:PORT``); nothing is contacted.

    Raises
    ------
    ModgapError
        One line naming ``--scheduler`` and the expected form.
    """
    text = str(address).strip()
    if text.startswith("inproc://"):  # a scheduler in this very process (tests, notebooks)
        return text
    m = _ADDRESS.fullmatch(text)
    if m and m.group(1) and m.group(1).lower() not in _SCHEMES:
        raise ModgapError(
            f"--scheduler {address}: unknown scheme '{m.group(1)}://' (a Dask scheduler speaks "
            f"{', '.join(_SCHEMES)}; e.g. tcp://127.0.0.1:8786)"
        )
    if m is None or not 0 < int(m.group(3)) < 65536:
        raise ModgapError(
            f"--scheduler {address}: not a Dask scheduler address (expected tcp://HOST:PORT, "
            "e.g. tcp://127.0.0.1:8786)"
        )
    return text


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
    worker_timeout : float
        Seconds the cluster may have no workers (none yet, or all lost mid-run) before the run
        fails with one line (default :data:`WORKER_TIMEOUT`).
    connect_timeout : float
        Seconds to reach ``scheduler`` (default :data:`CONNECT_TIMEOUT`).
    """

    name = "dask"

    def __init__(
        self,
        scheduler: str | None = None,
        n_workers: int | None = None,
        processes: bool = True,
        threads_per_worker: int = 1,
        worker_timeout: float = WORKER_TIMEOUT,
        connect_timeout: float = CONNECT_TIMEOUT,
    ):
        if scheduler:
            scheduler = check_scheduler_address(scheduler)
        if not worker_timeout > 0:
            raise ModgapError(f"--worker-timeout must be positive, got {worker_timeout}")
        self.worker_timeout = float(worker_timeout)
        self.connect_timeout = float(connect_timeout)

        distributed = require("distributed", "scale", "--engine dask", "dask[distributed]")
        Client, LocalCluster = distributed.Client, distributed.LocalCluster
        self.scheduler = scheduler
        self._cluster = None
        if scheduler:
            try:
                self.client = Client(scheduler, timeout=f"{connect_timeout:g}s")
            except (OSError, TimeoutError, ValueError):
                raise ModgapError(
                    f"--scheduler {scheduler}: cannot reach the Dask scheduler at {scheduler} "
                    f"within {connect_timeout:g} s; is it running? (or use --engine local)"
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
        self._gone = False  # the scheduler went away mid-run

    def n_workers(self) -> int:
        return len(self.client.scheduler_info().get("workers", {}))

    def put(self, value):
        # a broadcast to a cluster without workers waits for one: bounded like the tasks
        self._wait_for_workers()
        try:
            # wrapped in a list: scatter would otherwise split a list or dict into its items
            return self.client.scatter([value], broadcast=True, timeout=self.worker_timeout)[0]
        except TimeoutError:
            raise self._no_workers(f"waited {self.worker_timeout:g} s") from None
        except (OSError, CancelledError):
            raise self._lost() from None

    def _where(self) -> str:
        return (
            f"the Dask cluster at {self.scheduler}" if self.scheduler else "the local Dask cluster"
        )

    def _live_workers(self) -> int | None:
        """Workers the scheduler has now (asked afresh, not a cached view); None when it did
        not answer within a few seconds (busy, or gone and not yet noticed by the client)."""
        try:
            return len(self.client.nthreads(callback_timeout=_ASK_S))
        except TimeoutError:
            return None
        except OSError:  # CommClosedError is an OSError
            raise self._lost() from None

    def _lost(self) -> ModgapError:
        self._gone = True
        return ModgapError(
            f"lost the connection to {self._where()} (the scheduler stopped or is "
            "unreachable); restart it and run again, or use --engine local"
        )

    def _no_workers(self, how: str) -> ModgapError:
        return ModgapError(
            f"{self._where()} has no workers ({how}); start workers or use --engine local"
        )

    def _wait_for_workers(self) -> None:
        # a task submitted to a cluster without workers would wait for one forever
        if self._live_workers():
            return
        try:
            self.client.wait_for_workers(1, timeout=self.worker_timeout)
        except TimeoutError:
            raise self._no_workers(f"waited {self.worker_timeout:g} s") from None
        except OSError:
            raise self._lost() from None

    def _submit_all(self, fn, items, args):
        self._wait_for_workers()
        return [
            self.client.submit(
                fn, item, *args, key=f"modgap-{fn.__name__}-{i}-{os.urandom(4).hex()}"
            )
            for i, item in enumerate(items)
        ]

    def _watch(self, futures, on_done, report=None):
        """Wait for every future, calling ``on_done(i, None)`` as the first ``report`` of them
        (all by default) finish; a task's error is raised as it is, a cluster without workers
        for ``worker_timeout`` seconds or a lost scheduler as one line."""
        from distributed import wait
        from distributed.scheduler import KilledWorker

        report = len(futures) if report is None else report
        index = {f.key: i for i, f in enumerate(futures)}
        pending = set(futures)
        empty_since: float | None = None
        silent_since: float | None = None  # the scheduler has not answered since
        while pending:
            try:
                done, pending = wait(pending, timeout=_POLL_S, return_when="FIRST_COMPLETED")
            except TimeoutError:
                done = set()
            except OSError:
                raise self._lost() from None
            for f in done:
                if f.status == "cancelled":  # the client lost its scheduler: futures are gone
                    raise self._lost()
                if f.status == "error":
                    try:
                        f.result()  # raises the task's exception here
                    except KilledWorker as e:
                        raise ModgapError(
                            f"{self._where()}: the workers running a task kept dying ({e}); "
                            "look at the workers' logs (memory?) or use --engine local"
                        ) from None
                i = index[f.key]
                if on_done is not None and i < report:
                    on_done(i, None)
            if done or not pending:
                empty_since = None
                continue
            if self.client.status not in ("running", "newly-created"):
                raise self._lost()
            n = self._live_workers()
            if n is None:
                silent_since = silent_since or time.monotonic()
                if time.monotonic() - silent_since >= self.connect_timeout:
                    raise self._lost()
                continue
            silent_since = None
            if n:
                empty_since = None
            elif empty_since is None:
                empty_since = time.monotonic()
            elif time.monotonic() - empty_since >= self.worker_timeout:
                raise self._no_workers(f"lost {time.monotonic() - empty_since:.0f} s ago")

    def map(self, fn, items, *args, on_done=None):
        futures = self._submit_all(fn, items, args)
        try:
            self._watch(futures, on_done)
            return self.client.gather(futures)
        except CancelledError:  # what a client says of its futures when its scheduler is gone
            raise self._lost() from None
        finally:
            for f in futures:
                f.release()

    def reduce(self, fn, items, merge, *args, on_done=None):
        if not items:
            raise ModgapError("nothing to reduce: the source has no shards")
        slots = self._submit_all(fn, items, args)
        for out, a, b in tree_order(len(items)):
            assert out == len(slots)
            slots.append(self.client.submit(merge, slots[a], slots[b], pure=False))
        try:
            # every slot is watched, not only the leaves: a merge waiting on a lost cluster
            # would otherwise hang in result()
            self._watch(slots, on_done, report=len(items))
            return slots[-1].result()
        except CancelledError:
            raise self._lost() from None
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
        import logging

        # bounded: closing a client whose scheduler is gone must not become the next hang, and
        # its cancelled reconnection logs a traceback the one-line error has already said
        log = logging.getLogger("distributed.client")
        level = log.level
        if self._gone:
            log.setLevel(logging.CRITICAL + 1)
        try:
            self.client.close(timeout=5)
        except (OSError, TimeoutError):
            pass
        finally:
            log.setLevel(level)
        if self._cluster is not None:
            self._cluster.close()


#: engines by name (``--engine``); a Ray adapter would register here
