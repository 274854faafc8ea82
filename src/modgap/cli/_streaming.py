"""The options of out-of-core and distributed runs (:mod:`modgap.stream`), shared by the
commands that stream: ``@stream_options`` (``--stream``, ``--engine``, ``--scheduler``,
``--worker-timeout``, handed to a command as one :class:`Streaming`), ``--sample-queries``,
``--fit-sample``, and the helpers that check the engine, make it and open the streaming source.

The streaming code is imported inside the helpers, when a command runs, so ``modgap --help``
stays fast (the CLI's lazy loading).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import click

from ..errors import ModgapError

__all__ = [
    "EngineChoice",
    "Streaming",
    "check_engine",
    "fit_sample_option",
    "make_engine",
    "open_streaming",
    "sample_queries_option",
    "stream_options",
]


@dataclasses.dataclass(frozen=True)
class Streaming:
    """``--stream``, ``--engine``, ``--scheduler``, ``--worker-timeout`` of a command, checked
    together."""

    stream: bool | None = None
    engine: str = "local"
    scheduler: str | None = None
    worker_timeout: float | None = None

    def check(self) -> Streaming:
        """Refuse ``--scheduler`` without ``--engine dask``, or not in the form of an address,
        before any work."""
        check_engine(self.engine, self.scheduler)
        return self

    def open(self, images: str, texts: str | None, pairs: str | None) -> Any:
        """The streaming source of the input when this run streams, else None
        (:func:`open_streaming`)."""
        return open_streaming(images, texts, pairs, self.stream, self.engine)

    def make_engine(self) -> Any:
        """The run's engine (a Dask client connects here, before any work)."""
        return make_engine(self.engine, self.scheduler, self.worker_timeout)

    @property
    def in_process(self) -> bool:
        """Whether ``--engine`` runs the work in this process
        (:func:`modgap.stream.runs_in_process`, the one place that knows)."""
        from ..stream import runs_in_process

        return runs_in_process(self.engine)


class EngineChoice(click.Choice):
    """``--engine``: a name of :data:`modgap.stream.ENGINES`, the engine registry, read when
    the option is parsed or shown (so ``modgap --help`` does not import the streaming code,
    and a registered engine is a choice without touching the CLI)."""

    def __init__(self) -> None:
        super().__init__((), case_sensitive=True)

    @property
    def choices(self) -> tuple[str, ...]:
        from ..stream import ENGINES

        return tuple(ENGINES)

    @choices.setter
    def choices(self, value: Any) -> None:
        pass  # always the registry's names


_STREAM_FLAGS = (
    click.option(
        "--stream",
        is_flag=True,
        default=None,
        help="Stream shards in row blocks (bounded memory) instead of reading the set into "
        "memory; automatic above a size, for fsspec URLs and with --engine dask.",
    ),
    click.option(
        "--engine",
        type=EngineChoice(),
        default="local",
        show_default=True,
        help="Who runs the per-shard work: this process, or dask.distributed.",
    ),
    click.option(
        "--scheduler",
        default=None,
        metavar="ADDRESS",
        help="Dask scheduler address (tcp://host:8786); without it --engine dask starts a "
        "local cluster.",
    ),
    click.option(
        "--worker-timeout",
        type=click.FloatRange(min=0, min_open=True),
        default=None,
        metavar="SECONDS",
        help="--engine dask: fail when the cluster has had no workers for this long (none "
        "started, or all lost mid-run) [default: 30].",
    ),
)


def stream_options(f: Callable) -> Callable:
    """``--stream --engine --scheduler``, delivered to the command as one ``streaming``
    (:class:`Streaming`)."""

    @functools.wraps(f)
    def callback(*args, stream, engine, scheduler, worker_timeout, **kwargs):
        streaming = Streaming(stream, engine, scheduler, worker_timeout).check()
        return f(*args, streaming=streaming, **kwargs)

    for option in reversed(_STREAM_FLAGS):
        callback = option(callback)
    return callback


def sample_queries_option(f: Callable) -> Callable:
    return click.option(
        "--sample-queries",
        type=click.IntRange(min=2),
        default=10_000,
        show_default=True,
        metavar="N",
        help="Streaming: queries sampled per modality for the neighbour, separability, "
        "uniformity and retrieval estimates (exact when a modality has at most N rows).",
    )(f)


def fit_sample_option(f: Callable) -> Callable:
    return click.option(
        "--fit-sample",
        type=click.IntRange(min=2),
        default=None,
        metavar="N",
        help="Streaming: images (with their captions) spectral and OT are fitted on "
        "(default 10000); center, shift, gaussian, procrustes use exact full-pass moments.",
    )(f)


def check_engine(engine: str, scheduler: str | None) -> None:
    """Refuse ``--scheduler`` without ``--engine dask``, or not in the form of a scheduler
    address, before any work (nothing is contacted here)."""
    if scheduler:
        from ..stream.engines import check_scheduler_address, runs_in_process

        if runs_in_process(engine):
            raise ModgapError("--scheduler needs --engine dask")
        check_scheduler_address(scheduler)


def make_engine(engine: str, scheduler: str | None, worker_timeout: float | None = None) -> Any:
    """The run's engine (a Dask client connects here, before any work)."""
    from ..stream import get_engine, runs_in_process

    check_engine(engine, scheduler)
    if worker_timeout is not None and not runs_in_process(engine):
        return get_engine(engine, scheduler, worker_timeout=worker_timeout)
    return get_engine(engine, scheduler)


def open_streaming(
    images: str,
    texts: str | None,
    pairs: str | None,
    stream: bool | None,
    engine: str,
    command: str = "measure",
) -> Any:
    """The streaming source of the input when this run streams (``--stream``, ``--engine
    dask``, an fsspec URL, or a set whose in-memory run would not fit in the memory available:
    :func:`modgap.stream.stream_reason`, said in one notice line), else None."""
    from ..errors import notice
    from ..io import is_remote
    from ..stream import open_source, runs_in_process, stream_reason

    forced = bool(stream) or not runs_in_process(engine) or is_remote(images)
    try:
        source = open_source(images, texts, pairs=pairs)
    except ModgapError:
        if forced:
            raise
        return None  # not a streamable format (or unreadable): the in-memory reader says why
    if forced:
        return source
    why = stream_reason(source, command)  # the run's Compute is current: its memory budget
    if why is not None:
        notice(
            f"{images}: {source.n_images:,} images + {source.n_texts:,} texts: {why}: "
            f"streaming {len(source.shards)} shard(s) (exact moments; sampled estimates with "
            "intervals; --stream forces this)"
        )
        return source
    return None
