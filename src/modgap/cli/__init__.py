"""The ``modgap`` command line: ``measure | reduce | eval | bench | compare | embed | train |
demo``.

Built on click (bounded in ``pyproject.toml``: its exceptions are the ones caught here). Each
sub-command lives in its own module and adds itself to the group; options several commands
share are declared once in :mod:`modgap.cli._options`. Every user error — a bad option, a
missing argument, an unknown command, bad input data — is one line on stderr and exit code 2,
never a traceback; ``modgap`` alone prints the help and exits 2.
"""

from __future__ import annotations

import sys
import warnings

import click

from .. import __version__
from ..errors import ModgapError, ModgapNotice

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group(context_settings=CONTEXT, no_args_is_help=True)
@click.version_option(__version__, "--version", prog_name="modgap", message="%(prog)s %(version)s")
def cli() -> None:
    """Measure, reduce and train away the modality gap of image-text embeddings."""


def _register() -> None:
    from . import (  # noqa: F401 - each module adds its command to the group
        bench_cmd,
        compare_cmd,
        demo_cmd,
        embed_cmd,
        eval_cmd,
        measure_cmd,
        reduce_cmd,
        train_cmd,
    )


_QUIET = False


def set_quiet(quiet: bool) -> None:
    """``--quiet``: notices are not printed (errors always are)."""
    global _QUIET
    _QUIET = quiet


def _show_notice(message, category, filename, lineno, file=None, line=None):
    if issubclass(category, ModgapNotice):
        if not _QUIET:
            print(f"notice: {message}", file=sys.stderr)
    elif not _QUIET:
        print(f"warning: {category.__name__}: {message}", file=sys.stderr)


def _usage_line(e: click.UsageError) -> str:
    msg = " ".join(e.format_message().split())
    ctx = e.ctx
    where = ctx.command_path if ctx is not None else "modgap"
    return f"error: {msg} (see '{where} --help')"


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``modgap`` script; returns the exit code."""
    _register()
    set_quiet(False)
    old_show = warnings.showwarning
    warnings.showwarning = _show_notice
    try:
        rv = cli.main(args=argv, prog_name="modgap", standalone_mode=False)
        return rv if isinstance(rv, int) else 0
    except click.exceptions.NoArgsIsHelpError as e:
        # `modgap` or a group without a command: the help, and the usage-error exit code
        print(e.ctx.get_help() if e.ctx is not None else e.format_message(), file=sys.stderr)
        return 2
    except click.UsageError as e:
        print(_usage_line(e), file=sys.stderr)
        return 2
    except click.exceptions.Exit as e:
        return e.exit_code
    except click.exceptions.Abort:
        print("aborted", file=sys.stderr)
        return 130
    except click.ClickException as e:
        print(f"error: {' '.join(e.format_message().split())}", file=sys.stderr)
        return 2
    except ModgapError as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except OSError as e:  # unreadable/unwritable paths, a full disk: the user's to fix
        where = f"{e.filename}: " if e.filename else ""
        print(f"error: {where}{e.strerror or e}", file=sys.stderr)
        return 2
    finally:
        warnings.showwarning = old_show


def run() -> None:
    """Console-script wrapper around :func:`main`."""
    sys.exit(main())


if __name__ == "__main__":
    run()
