"""When a command streams on its own: the predicted peak of the in-memory route against the
memory this machine has available now.

The in-memory route reads the whole set as float32, normalises it (copies) and runs the
command, whose blocked kernels take up to ``--memory-budget`` beside the data. Its peak is
predicted as

    peak = IN_MEMORY_BASE + IN_MEMORY_FACTOR[command] × (the set's float32 bytes) + memory_budget

The interpreter and libraries are resident already when the available memory is read, and the
kernels' working memory is taken by the streamed route as well, so the decision weighs the
part only the in-memory route takes, the data term ``IN_MEMORY_FACTOR[command] × float32
bytes``: the command streams when that is above :data:`SAFE_FRACTION` of the memory available
now (``MemAvailable`` of ``/proc/meminfo``; the physical memory where the system does not say).
The storage dtype does not enter: a float16 folder is widened to float32 when it is read.
"""

from __future__ import annotations

from typing import Any

from ..compute import machine_memory, resolve
from ._fs import is_remote

__all__ = [
    "IN_MEMORY_BASE",
    "IN_MEMORY_FACTOR",
    "SAFE_FRACTION",
    "available_memory",
    "in_memory_peak",
    "memory_limit",
    "should_stream",
    "stream_reason",
]

#: Resident bytes of the in-memory route per byte of the set as float32, by command.
#: Calibrated with ``/usr/bin/time -f %M`` (peak RSS) on clip-retrieval folders of N pairs ×
#: 256 float16 (2 CPUs, Linux, numpy/torch CPU):
#: ``modgap measure --only centroid,per_dimension,rmg,frechet_distance,alignment`` peaked at
#: 0.42 GB (N = 5·10³), 1.24 GB (10⁵) and 2.03 GB (2·10⁵): 8.0 kB per pair, 3.9 × the pair's
#: 2,048 float32 bytes (float32 copies, the normalised copies, float64 moments), on ~0.4 GB of
#: interpreter and libraries; at N = 10⁶ this predicts 8.6 GB, and 8.58 GB was measured.
#: ``modgap reduce center`` (fitted in memory, written shard by shard) peaked at 0.46, 0.68
#: and 0.92 GB: 2.4 kB per pair, 1.2 ×. ``eval`` was not calibrated apart and takes the
#: ``measure`` factor (its tasks hold the same normalised copies; scores are blocked).
IN_MEMORY_FACTOR: dict[str, float] = {"measure": 4.0, "eval": 4.0, "reduce": 1.2}

#: Resident bytes before any data: the interpreter, numpy, torch and the readers (~0.4 GB).
IN_MEMORY_BASE = 400 * 10**6

#: Share of the available memory an in-memory run may plan to take: the prediction is a
#: model, other processes on the machine take memory while the run goes on, and past a few GB
#: the streamed route is also the faster one (10⁶ × 256 float16, ``measure``: 59 s streamed
#: in 675 MB against 103 s in memory at 8.58 GB; its 8.2 GB data term streams where fewer
#: than 33 GB are available).
SAFE_FRACTION = 0.25

# the limit when the system tells neither available nor physical memory: the old fixed rule
# (2 GB of float32 in memory, ≈ 8 GB at the measure factor)
_UNKNOWN_LIMIT = 8 * 10**9


def available_memory() -> int:
    """Bytes of memory available to a new process now: ``MemAvailable`` of
    ``/proc/meminfo`` (what Linux can give without swapping), else the physical memory, else
    0 (unknown)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024  # the kernel writes kB (KiB)
    except (OSError, ValueError, IndexError):
        pass
    return machine_memory()


def memory_limit(available: int | None = None) -> int:
    """The predicted peak above which a command streams: :data:`SAFE_FRACTION` of
    ``available`` (default: :func:`available_memory` now)."""
    avail = available_memory() if available is None else int(available)
    return int(SAFE_FRACTION * avail) if avail > 0 else _UNKNOWN_LIMIT


def in_memory_peak(source: Any, command: str = "measure", compute: Any = None) -> int:
    """Predicted peak resident bytes of ``command`` (``measure``, ``eval``, ``reduce``) run on
    ``source`` read into memory (the model of the module docstring)."""
    budget = resolve(compute).memory_budget
    return int(IN_MEMORY_BASE + _data_bytes(source, command) + budget)


def _data_bytes(source: Any, command: str) -> int:
    """The part of the in-memory peak that grows with the set (the decision's term)."""
    factor = IN_MEMORY_FACTOR.get(command, max(IN_MEMORY_FACTOR.values()))
    return int(factor * source.float32_bytes)


def stream_reason(
    source: Any, command: str = "measure", compute: Any = None, available: int | None = None
) -> str | None:
    """Why ``command`` should stream ``source`` rather than read it into memory, as the end of
    a notice line; None when it fits in memory.

    ``source`` streams when it is not on a local disk, or when the data term of
    :func:`in_memory_peak` is above :func:`memory_limit` (``available``: bytes of memory to
    plan with; default: measured now).
    """
    first = source.shards[0]
    if is_remote((first.image or first.text).path):
        return "not on a local disk"
    data = _data_bytes(source, command)
    avail = available_memory() if available is None else int(available)
    limit = memory_limit(avail)
    if data <= limit:
        return None
    peak = in_memory_peak(source, command, compute)
    where = (
        f"{SAFE_FRACTION:.0%} of the {avail / 1e9:.1f} GB available now"
        if avail > 0
        else "the memory of this machine is unknown"
    )
    return (
        f"in memory they would take ≈{data / 1e9:.1f} GB ({source.float32_bytes / 1e9:.1f} GB "
        f"as float32 and its copies; ≈{peak / 1e9:.1f} GB at peak), above the in-memory limit "
        f"({limit / 1e9:.1f} GB: {where})"
    )


def should_stream(
    source: Any,
    limit: int | None = None,
    *,
    command: str = "measure",
    compute: Any = None,
    available: int | None = None,
) -> bool:
    """Whether ``command`` should stream ``source`` (:func:`stream_reason`). ``limit``, when
    given, is a fixed float32 size instead of the memory model (the set streams above it)."""
    if limit is not None:
        first = source.shards[0]
        return is_remote((first.image or first.text).path) or source.float32_bytes > limit
    return stream_reason(source, command, compute, available) is not None
