"""Optional dependencies: one way to import them, and one message when they are missing.

``pip install modgap`` gives a working ``measure / reduce / eval / bench``; encoders, the demo
and the scale-out engine need extras. :func:`require` imports a module or raises a one-line
:class:`~modgap.errors.ModgapError` naming the extra that brings it; :func:`available` tells
whether it can be imported without importing it.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from .errors import ModgapError

__all__ = ["available", "require"]


def available(*modules: str) -> bool:
    """Whether every module can be imported (checked without importing it)."""
    for name in modules:
        try:
            if importlib.util.find_spec(name) is None:
                return False
        except (ImportError, ValueError):
            return False
    return True


def require(module: str, extra: str, purpose: str, package: str | None = None) -> ModuleType:
    """Import ``module`` or raise ``ModgapError("<purpose> needs <package>: pip install
    'modgap[<extra>]'")``."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        pkg = package or module.split(".")[0].replace("_", "-")
        raise ModgapError(
            f"{purpose} needs {pkg} ({e.msg if hasattr(e, 'msg') else e}): "
            f"pip install 'modgap[{extra}]'"
        ) from None
