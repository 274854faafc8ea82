"""The ``modgap`` command line: ``measure | reduce | eval | bench | embed | train | demo``.

Each sub-command lives in its own module and registers itself on the shared Typer app. User
errors (:class:`~modgap.errors.ModgapError`) become one line on stderr and exit code 2.
"""

from __future__ import annotations

import importlib
import sys
import warnings

import click
import typer

from ..errors import ModgapError, ModgapNotice

app = typer.Typer(
    name="modgap",
    help="Measure, reduce and train away the modality gap of image-text embeddings.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    """Measure, reduce and train away the modality gap of image-text embeddings."""


# one module per sub-command; each defines ``register(app)``
_COMMANDS = ("measure", "reduce", "eval", "bench", "embed", "train", "demo")


def _register() -> None:
    for name in _COMMANDS:
        try:
            module = importlib.import_module(f".{name}_cmd", __name__)
        except ModuleNotFoundError as e:
            if e.name == f"{__name__}.{name}_cmd":
                continue
            raise
        module.register(app)


def _show_notice(message, category, filename, lineno, file=None, line=None):
    if issubclass(category, ModgapNotice):
        print(f"notice: {message}", file=sys.stderr)
    else:
        print(f"warning: {category.__name__}: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``modgap`` script; returns the exit code."""
    _register()
    warnings.showwarning = _show_notice
    try:
        app(args=argv, standalone_mode=False)
    except ModgapError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except click.exceptions.Exit as e:
        return e.exit_code
    except click.exceptions.Abort:
        print("aborted", file=sys.stderr)
        return 130
    except click.ClickException as e:
        e.show()
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except OSError as e:  # unreadable/unwritable paths are user errors too
        print(f"error: {e.filename or ''}: {e.strerror or e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())


def run() -> None:
    """Console-script wrapper around :func:`main`."""
    sys.exit(main())
