"""Exceptions and notices shared by the whole package.

User errors (bad input, bad options) raise :class:`ModgapError` or a subclass. The CLI turns
them into a one-line message on stderr and exit code 2, without a traceback; library users get
an ordinary ``ValueError`` subclass they can catch.
"""

from __future__ import annotations

import warnings

# NotFittedError is built on first use by the module's __getattr__ (below)
__all__ = ["InputError", "ModgapError", "ModgapNotice", "NotFittedError", "notice"]  # noqa: F822


class ModgapError(ValueError):
    """A user error: bad input data, bad options, a file that cannot be read."""


class InputError(ModgapError):
    """Bad input data. ``source`` names the file (or argument) the data came from."""

    def __init__(self, message: str, source: str | None = None):
        self.source = source
        super().__init__(f"{source}: {message}" if source else message)


def _not_fitted_error() -> type:
    """``NotFittedError``: modgap's one-line user error and scikit-learn's
    ``sklearn.exceptions.NotFittedError`` at once, so ``check_is_fitted`` callers and
    scikit-learn's own tools catch it. Built on first use: importing scikit-learn takes longer
    than the rest of ``import modgap.cli``, and most commands never raise it."""
    from sklearn.exceptions import NotFittedError as SklearnNotFittedError

    class NotFittedError(ModgapError, SklearnNotFittedError):
        """A reducer, score correction or model was used before ``fit``."""

    NotFittedError.__module__, NotFittedError.__qualname__ = __name__, "NotFittedError"
    return NotFittedError


def __getattr__(name: str) -> type:
    if name == "NotFittedError":
        cls = _not_fitted_error()
        globals()[name] = cls  # one class: later lookups (and ``except``) see the same object
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class ModgapNotice(UserWarning):
    """Something was changed on the user's behalf (e.g. rows were L2-normalised)."""


def notice(message: str) -> None:
    """Emit a :class:`ModgapNotice`; the CLI prints it as one line on stderr."""
    warnings.warn(message, ModgapNotice, stacklevel=3)
