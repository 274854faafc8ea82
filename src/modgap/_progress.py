"""The one progress display: a rich bar (or spinner) on stderr or in a notebook, or nothing.

``with progress("measuring", total=9, enabled=...) as bar: bar.advance(); bar.describe("...")``.
A disabled bar, or one whose console is neither a terminal nor a Jupyter notebook, costs
nothing and prints nothing, so library code can always report progress and callers decide
whether it shows. In a notebook rich draws the same bar in an output widget (ipywidgets, the
``notebook`` extra); without ipywidgets it says so once and shows nothing.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .errors import notice

__all__ = ["Bar", "display_kind", "progress"]


class Bar:
    """What the body of :func:`progress` drives (a no-op when disabled)."""

    def __init__(self, rich_progress: Any = None, task: Any = None):
        self._p = rich_progress
        self._task = task
        self.completed = 0.0

    def advance(self, n: float = 1) -> None:
        self.completed += n
        if self._p is not None:
            self._p.advance(self._task, n)

    def update(self, completed: float | None = None, description: str | None = None) -> None:
        if completed is not None:
            self.completed = completed
        if self._p is not None:
            kwargs: dict[str, Any] = {}
            if completed is not None:
                kwargs["completed"] = completed
            if description is not None:
                kwargs["description"] = description
            self._p.update(self._task, **kwargs)

    def describe(self, text: str) -> None:
        self.update(description=text)

    def print(self, text: str) -> None:
        """A line above the bar (or plainly on stderr when there is no bar)."""
        if self._p is not None:
            self._p.console.print(text, highlight=False, soft_wrap=True)


_warned_widgets = False


def display_kind(console: Any) -> str | None:
    """Where a live bar can be drawn for ``console``: ``"terminal"``, ``"notebook"`` (a
    Jupyter kernel, rich's ``is_jupyter``, with ipywidgets to draw in) or ``None``."""
    global _warned_widgets
    if console.is_jupyter:
        if importlib.util.find_spec("ipywidgets") is not None:
            return "notebook"
        if not _warned_widgets:  # rich would warn at every refresh; say it once, plainly
            _warned_widgets = True
            notice("progress in a notebook needs ipywidgets: pip install 'modgap[notebook]'")
        return None
    return "terminal" if console.is_terminal else None


@contextmanager
def progress(
    description: str,
    total: float | None = None,
    *,
    enabled: bool = True,
    transient: bool = True,
    console: Any = None,
) -> Iterator[Bar]:
    """A progress bar over ``total`` steps (a spinner when ``total`` is None) on stderr."""
    from rich.console import Console

    console = console or Console(stderr=True)
    if not enabled or display_kind(console) is None:
        # a live display is for a terminal or a notebook; in a log file or pipe it would only
        # add lines
        yield Bar()
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns: list[Any] = [TextColumn("{task.description}")]
    if total is None:
        columns = [SpinnerColumn(), *columns, TimeElapsedColumn()]
    else:
        columns += [BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn()]
    with Progress(*columns, console=console, transient=transient) as p:
        task = p.add_task(description, total=total)
        yield Bar(p, task)
