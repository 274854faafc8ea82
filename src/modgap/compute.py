"""The compute context: device, memory budget, threads and seed, built once and passed down.

A :class:`Compute` is a small frozen record. The command line builds one from ``--device``,
``--memory-budget``, ``--threads`` and ``--seed``; a library caller builds one (or uses the
default) and passes it as ``compute=`` to measures, tasks, reducers, training and the bench, or
makes it current for a block of code with :func:`use`. Every blocked kernel sizes its blocks from
:meth:`Compute.rows_per_block`, and every device name goes through :func:`resolve_device`, so
one run uses one device and one clear error names an unavailable one.

Results never depend on the block sizes this chooses (see :mod:`modgap._ties`), only speed and
memory do.
"""

from __future__ import annotations

import contextvars
import dataclasses
import math
import os
import re
import sys
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from .errors import ModgapError

__all__ = [
    "DEFAULT_MEMORY_BUDGET",
    "MAX_SEED",
    "MAX_THREADS",
    "Compute",
    "available_cpus",
    "current",
    "device_for",
    "limit_threads",
    "machine_memory",
    "parse_bytes",
    "resolve",
    "resolve_device",
    "use",
]

#: working memory a kernel may allocate beside the data it is given (score blocks, buffers)
DEFAULT_MEMORY_BUDGET = 512 << 20

#: the largest seed: numpy wants seeds >= 0 and scikit-learn below 2**32, and runs derive seeds
#: from it by adding small offsets (``seed + 1``, one per split or class), which must fit too
MAX_SEED = 2**31 - 1

#: the most CPU threads: beyond the cores of any machine, and a C int for torch and OpenMP
MAX_THREADS = 4096

_UNITS = {
    "": 1,
    "b": 1,
    "k": 10**3,
    "kb": 10**3,
    "m": 10**6,
    "mb": 10**6,
    "g": 10**9,
    "gb": 10**9,
    "t": 10**12,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the system has one, which a
    container or ``taskset`` narrows; else the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # macOS and Windows have no affinity mask
        return max(1, os.cpu_count() or 1)


def machine_memory() -> int:
    """Physical memory of this machine in bytes (0 when unknown)."""
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 0


def parse_bytes(value: Any) -> int:
    """``"2GB"``, ``"512MiB"``, ``"1e9"`` or an int -> bytes (decimal and binary units)."""
    if isinstance(value, bool):
        raise ModgapError(f"memory budget must be a size such as 2GB, got {value!r}")
    if isinstance(value, int | float):
        n = float(value)
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([a-zA-Z]*)\s*", str(value))
        if not m or m.group(2).lower() not in _UNITS:
            raise ModgapError(f"memory budget {value!r} is not a size (examples: 2GB, 512MiB, 1e9)")
        n = float(m.group(1)) * _UNITS[m.group(2).lower()]
    if math.isinf(n):  # 1e400 or 1e400GB overflows the float, and no int is infinite
        raise ModgapError(
            f"memory budget {value!r} is too large to be a size (examples: 2GB, 512MiB, 1e9)"
        )
    if not n >= 2**20:
        raise ModgapError(f"memory budget must be at least 1 MiB, got {value!r}")
    return int(n)


def resolve_device(device: Any = None) -> Any:
    """The one device resolver: ``None``/``"auto"`` -> CUDA when available, else CPU;
    ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"`` checked against this machine.

    Raises :class:`~modgap.errors.ModgapError` with one line for an unknown or unavailable
    device. Returns a :class:`torch.device`.
    """
    import torch

    name = str(device) if isinstance(device, torch.device) else device
    kind, index = _parse_device(name)
    if kind == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise ModgapError(
                f"device {device!r} asked for, but CUDA is not available on this machine "
                "(use --device cpu or auto)"
            )
        if index is not None and int(index) >= torch.cuda.device_count():
            raise ModgapError(
                f"device {device!r} asked for, but this machine has "
                f"{torch.cuda.device_count()} CUDA device(s)"
            )
    if kind == "mps" and not (
        getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()
    ):
        raise ModgapError(f"device {device!r} asked for, but MPS is not available here")
    return torch.device(kind if index is None else f"{kind}:{index}")


def _parse_device(device: Any) -> tuple[str, str | None]:
    """``(kind, index)`` of a device name, checked without torch: ``auto`` and ``cpu`` need no
    look at the machine, so a run whose passes are all numpy never imports torch (1-2 s)."""
    name = "auto" if device is None else str(device).strip().lower()
    if name == "auto":
        return "auto", None
    m = re.fullmatch(r"(cpu|cuda|mps)(?::(\d+))?", name)
    if not m:
        raise ModgapError(f"unknown device {device!r} (choose auto, cpu, cuda, cuda:N or mps)")
    if m.group(1) == "cpu" and m.group(2) is not None:
        raise ModgapError(f"unknown device {device!r} (the CPU has no index; use cpu)")
    return m.group(1), m.group(2)


@dataclasses.dataclass(frozen=True)
class Compute:
    """Where and how heavy kernels run.

    Parameters
    ----------
    device : str
        ``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
    memory_budget : int or str
        Working memory, in bytes (or a size such as ``"2GB"``), that one blocked kernel may
        allocate beside its inputs; block sizes follow from it.
    threads : int or None
        CPU threads for torch and BLAS inside :meth:`threads_limit` (None: the libraries'
        defaults); at most :func:`available_cpus` (more only oversubscribes the cores, and
        asking BLAS for 10⁵ threads exhausts the process limit of the whole machine).
    seed : int
        Seed of every sample, split and initialisation.
    """

    device: str = "auto"
    memory_budget: int = DEFAULT_MEMORY_BUDGET
    threads: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "memory_budget", parse_bytes(self.memory_budget))
        if self.threads is not None:
            if isinstance(self.threads, bool) or not isinstance(self.threads, int):
                raise ModgapError(f"threads must be a positive integer, got {self.threads!r}")
            if self.threads < 1:
                raise ModgapError(f"threads must be a positive integer, got {self.threads}")
            cpus = available_cpus()
            if self.threads > cpus:
                raise ModgapError(
                    f"--threads {self.threads} is more than the {cpus} CPU(s) this process may "
                    f"use: give --threads {cpus} or fewer (or leave it out)"
                )
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ModgapError(f"seed must be an integer, got {self.seed!r}")
        if not 0 <= self.seed <= MAX_SEED:
            raise ModgapError(f"seed must be between 0 and {MAX_SEED}, got {self.seed}")
        dev = str(self.device).strip().lower() if self.device is not None else "auto"
        object.__setattr__(self, "device", dev)

    @property
    def torch_device(self) -> Any:
        """The resolved :class:`torch.device` (a clear error when it is not available)."""
        return resolve_device(self.device)

    def check(self) -> Compute:
        """Check the device now (so a bad ``--device`` fails before any work); returns self.

        ``auto`` and ``cpu`` are always available, so they are checked by name only and torch
        is imported later, by the first pass that runs a torch kernel; ``cuda`` and ``mps`` are
        looked up on the machine here."""
        if _parse_device(self.device)[0] not in ("auto", "cpu"):
            resolve_device(self.device)
        return self

    @property
    def device_name(self) -> str:
        """Where the torch kernels run, for records: the resolved device once torch is loaded
        (``auto`` becomes ``cuda`` or ``cpu``); before that ``cpu`` for ``auto`` and ``cpu``,
        since every pass that ran was numpy on the CPU, without importing torch to ask."""
        if "torch" in sys.modules or _parse_device(self.device)[0] not in ("auto", "cpu"):
            return str(self.torch_device)
        return "cpu"

    def replace(self, **changes: Any) -> Compute:
        return dataclasses.replace(self, **changes)

    def rows_per_block(
        self, row_bytes: int, *, buffers: int = 1, share: float = 1.0, cap: int = 1 << 16
    ) -> int:
        """How many rows of ``row_bytes`` each fit ``buffers`` times in ``share`` of the budget
        (at least 1, at most ``cap``)."""
        room = int(self.memory_budget * share) // max(1, buffers * max(1, int(row_bytes)))
        return max(1, min(int(cap), room))

    def threads_limit(self) -> AbstractContextManager[None]:
        """Limit torch and BLAS/OpenMP threads to ``threads`` inside the block (no-op if None)."""
        return limit_threads(self.threads)

    def describe(self) -> dict:
        """For provenance records."""
        return {
            "device": self.device_name,
            "memory_budget": self.memory_budget,
            "threads": self.threads,
            "seed": self.seed,
        }


@contextmanager
def limit_threads(n: int | None) -> Iterator[None]:
    """Limit torch and BLAS/OpenMP threads to ``n`` inside the block (no-op for None)."""
    if n is None:
        yield
        return
    import torch
    from threadpoolctl import threadpool_limits

    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        with threadpool_limits(n):
            yield
    finally:
        torch.set_num_threads(old)


_DEFAULT = Compute()
_CURRENT: contextvars.ContextVar[Compute | None] = contextvars.ContextVar(
    "modgap_compute", default=None
)


def current() -> Compute:
    """The compute context in effect (the default one unless inside :func:`use`)."""
    return _CURRENT.get() or _DEFAULT


@contextmanager
def use(compute: Compute) -> Iterator[Compute]:
    """Make ``compute`` the current context inside the block (and limit threads)."""
    if not isinstance(compute, Compute):
        raise ModgapError(f"use() needs a Compute, got {type(compute).__name__}")
    token = _CURRENT.set(compute)
    try:
        with compute.threads_limit():
            yield compute
    finally:
        _CURRENT.reset(token)


def device_for(compute: Compute | None = None, device: Any = None, *arrays: Any) -> Any:
    """The torch device a kernel runs on: ``device`` when given, else that of a torch input
    among ``arrays``, else the compute context's."""
    if device is not None:
        return resolve_device(device)
    for a in arrays:
        if hasattr(a, "device") and hasattr(a, "detach"):
            return a.device
    return resolve(compute).torch_device


def resolve(compute: Compute | None = None, **overrides: Any) -> Compute:
    """``compute`` (or the current context) with the non-None ``overrides`` applied: the one way
    a function turns its ``compute=`` / ``device=`` arguments into a context."""
    base = current() if compute is None else compute
    if not isinstance(base, Compute):
        raise ModgapError(f"compute must be a modgap.Compute, got {type(base).__name__}")
    changes = {k: v for k, v in overrides.items() if v is not None}
    return base.replace(**changes) if changes else base
