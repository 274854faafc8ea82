"""Exceptions and notices shared by the whole package.

User errors (bad input, bad options) raise :class:`ModgapError` or a subclass. The CLI turns
them into a one-line message on stderr and exit code 2, without a traceback; library users get
an ordinary ``ValueError`` subclass they can catch.
"""

from __future__ import annotations

import warnings

__all__ = ["InputError", "ModgapError", "ModgapNotice", "NotFittedError", "notice"]


class ModgapError(ValueError):
    """A user error: bad input data, bad options, a file that cannot be read."""


class InputError(ModgapError):
    """Bad input data. ``source`` names the file (or argument) the data came from."""

    def __init__(self, message: str, source: str | None = None):
        self.source = source
        super().__init__(f"{source}: {message}" if source else message)


class NotFittedError(ModgapError, AttributeError):
    """A reducer or model was used before ``fit``."""


class ModgapNotice(UserWarning):
    """Something was changed on the user's behalf (e.g. rows were L2-normalised)."""


def notice(message: str) -> None:
    """Emit a :class:`ModgapNotice`; the CLI prints it as one line on stderr."""
    warnings.warn(message, ModgapNotice, stacklevel=3)
