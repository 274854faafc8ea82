"""The list arguments of the CLI and the library, read by one resolver.

``modgap measure --only centroid,rmg`` and ``modgap.measure(emb, only="centroid,rmg")`` (or
``only=["centroid", "rmg"]``) mean the same, and fail with the same message: every public
function that takes names (measures, tasks, reducers, corrections) or Recall@K cut-offs reads
them through :func:`name_list` and :func:`positive_ints`, and so does every command.
"""

from __future__ import annotations

from collections.abc import Iterable
from numbers import Integral  # numpy's integers are registered: no numpy import at start-up

from .errors import ModgapError

__all__ = ["name_list", "positive_ints"]


def name_list(value: str | Iterable[str] | None) -> list[str] | None:
    """Names given as ``"a,b"``, ``"a b"`` or a list of names (each may itself be
    comma-separated); ``None`` or no names at all is ``None`` (the caller's default).
    Repeats are kept once, in their first place."""
    if value is None:
        return None
    items = [value] if isinstance(value, str) else list(value)
    names: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise ModgapError(f"names must be strings, got {item!r}")
        names += [n for part in item.split(",") for n in part.split() if n]
    return list(dict.fromkeys(names)) or None


def positive_ints(value: str | int | Iterable[int], what: str = "ks") -> tuple[int, ...]:
    """Cut-offs (Recall@K) given as ``"1,5,10"``, ``5`` or ``[1, 5, 10]``; ``what`` names the
    argument or option in the messages (``--k`` on the command line)."""
    if isinstance(value, str):
        try:
            parts = [int(k) for k in value.split(",") if k.strip()]
        except ValueError:
            raise ModgapError(f"{what} must be comma-separated integers, got {value!r}") from None
    else:
        items = [value] if isinstance(value, Integral) else list(value)
        if any(isinstance(k, bool) or not isinstance(k, Integral) for k in items):
            raise ModgapError(f"{what} must be comma-separated integers, got {value!r}")
        parts = [int(k) for k in items]
    if not parts:
        raise ModgapError(f"{what} is empty")
    if any(k < 1 for k in parts):
        raise ModgapError(f"{what} values must be positive, got {value!r}")
    return tuple(parts)
