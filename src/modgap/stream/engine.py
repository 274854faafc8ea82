"""The engine contract and the in-process engine: :class:`Engine` (``put``, ``map``, tree
``reduce``, ``close``), the merge tree :func:`tree_order` every engine follows, and
:class:`LocalEngine`, which runs every task in this process. The registry of engines by name
is :mod:`modgap.stream.engines`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ..errors import ModgapError

__all__ = ["Engine", "LocalEngine", "tree_order"]


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
    #: whether the tasks run in this very process (then a run needs no workers, sees the
    #: caller's memory budget and never ships data); the one place a caller learns it
    in_process = False

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
    in_process = True

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
