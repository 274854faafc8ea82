"""Options several commands share, declared once, and the helpers that turn them into objects.

``@compute_options`` (``--device``, ``--memory-budget``, ``--threads``, ``--seed``),
``@output_options`` (``--no-progress``, ``--quiet``), ``@k_option``, ``@folds_option`` and
``@json_option`` keep the flags, their help texts and their checks the same in every command;
``@run_options`` hands the first two to a command as one :class:`Run`.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import click

from .._lists import positive_ints
from ..compute import MAX_SEED
from ..errors import ModgapError
from ._streaming import (  # noqa: F401 - re-exported: the commands take them from here
    EngineChoice,
    Streaming,
    check_engine,
    fit_sample_option,
    make_engine,
    open_streaming,
    sample_queries_option,
    stream_options,
)


def _chain(*decorators: Callable) -> Callable:
    def apply(f: Callable) -> Callable:
        for d in reversed(decorators):
            f = d(f)
        return f

    return apply


compute_options = _chain(
    click.option(
        "--device",
        default="auto",
        show_default=True,
        help="Where heavy kernels run: auto (CUDA when available), cpu, cuda, cuda:N, mps.",
    ),
    click.option(
        "--memory-budget",
        default="512MiB",
        show_default=True,
        metavar="SIZE",
        help="Working memory one kernel may take beside the data (e.g. 2GB, 512MiB); "
        "block sizes follow from it, results do not.",
    ),
    click.option(
        "--threads",
        type=click.IntRange(1),  # the upper bound is the machine's: Compute says it
        default=None,
        help="CPU threads for torch and BLAS, at most the CPUs this process may use "
        "(default: the libraries' choice).",
    ),
    click.option(
        "--seed",
        type=click.IntRange(0, MAX_SEED),  # checked here, so the option is blamed
        default=0,
        show_default=True,
        help=f"Seed of every sample and split (0 to {MAX_SEED}).",
    ),
)

output_options = _chain(
    click.option("--no-progress", is_flag=True, help="No progress bars."),
    click.option(
        "--quiet", "-q", is_flag=True, help="Print only errors (no table, notices or progress)."
    ),
)


def k_option(f: Callable) -> Callable:
    return click.option(
        "--k",
        "ks",
        default="1,5,10",
        show_default=True,
        metavar="K,K,...",
        help="Recall@K cut-offs, comma-separated.",
    )(f)


def folds_option(f: Callable) -> Callable:
    return click.option(
        "--folds",
        type=click.IntRange(min=1),
        default=None,
        help="Retrieval over this many consecutive folds of images, averaged (COCO 5-fold 1K: "
        "--folds 5 on the 5K test images).",
    )(f)


class PathParam(click.ParamType):
    """A path option or argument, read by :func:`modgap.files.local_path`: a ``file://`` URL is
    its local path; an output refuses any other URL (one line naming the option), an input keeps
    it for the streaming readers (``s3://``, ``memory://`` through fsspec)."""

    name = "path"

    def __init__(self, output: bool):
        self.output = output

    def convert(self, value: Any, param: click.Parameter | None, ctx: Any) -> Any:
        from ..files import local_path

        if not isinstance(value, str):
            return value
        label = "path"
        if param is not None:
            opts = [o for o in param.opts if o.startswith("--")]
            label = opts[0] if opts else param.human_readable_name
        return local_path(label, value, output=self.output)


#: the type of every option or argument naming something modgap writes / reads
OUTPUT_PATH = PathParam(output=True)
INPUT_PATH = PathParam(output=False)


def json_option(f: Callable) -> Callable:
    return click.option(
        "--json",
        "json_out",
        type=OUTPUT_PATH,
        default=None,
        metavar="PATH",
        help="Write the results and their provenance as JSON to PATH ('-': stdout, the table "
        "then goes to stderr).",
    )(f)


results_format_options = _chain(
    click.option(
        "--format",
        "result_format",
        type=click.Choice(["modgap", "clip_benchmark"]),
        default="modgap",
        show_default=True,
        help="clip_benchmark: one {dataset, model, pretrained, task, metrics, language} record "
        "per task, as CLIP_benchmark writes them (--json is then a name template with {task}; "
        "also {dataset}, {model}, {pretrained}, {language}, plain, no format specs).",
    ),
    click.option(
        "--dataset",
        "dataset_label",
        default=None,
        help="Dataset label of the records (default: the input's file name).",
    ),
    click.option(
        "--model",
        "model_label",
        default=None,
        help="Model label of the records (default: the input's provenance, else 'unknown').",
    ),
    click.option(
        "--pretrained", "pretrained_label", default=None, help="Pretrained label of the records."
    ),
)


def pairs_option(f: Callable) -> Callable:
    return click.option(
        "--pairs",
        type=INPUT_PATH,
        default=None,
        metavar="FILE",
        help="text_to_image: one image index per text (.npy, or text/CSV).",
    )(f)


@dataclasses.dataclass(frozen=True)
class Run:
    """What the shared options of a command say: its compute context and how much it prints.
    ``run(fn)(...)`` calls ``fn`` with the context current and ``--quiet`` in force."""

    compute: Any
    quiet: bool = False
    no_progress: bool = False

    @property
    def progress(self) -> bool:
        """Progress bars: neither ``--no-progress`` nor ``--quiet``."""
        return not (self.no_progress or self.quiet)

    def __call__(self, fn: Callable) -> Callable:
        return run_with(self.compute, self.quiet)(fn)

    def options(self) -> dict[str, Any]:
        """The ``progress``, ``quiet`` and ``compute`` keywords every ``run_*`` function takes."""
        return {"progress": self.progress, "quiet": self.quiet, "compute": self.compute}


def run_options(f: Callable) -> Callable:
    """``@compute_options`` and ``@output_options`` delivered to the command as one ``run``
    (:class:`Run`); a bad ``--device`` or ``--memory-budget`` fails before any work."""

    @functools.wraps(f)
    def callback(*args, device, memory_budget, threads, seed, no_progress, quiet, **kwargs):
        run = Run(make_compute(device, memory_budget, threads, seed), quiet, no_progress)
        return f(*args, run=run, **kwargs)

    return compute_options(output_options(callback))


def make_compute(device: str, memory_budget: str, threads: int | None, seed: int) -> Any:
    """The run's :class:`~modgap.compute.Compute`; a bad device fails here, before any work."""
    from ..compute import Compute, parse_bytes

    try:
        budget = parse_bytes(memory_budget)
    except ModgapError as e:  # the library's message, blamed on the option that gave the value
        raise ModgapError(f"--memory-budget: {e}") from None
    return Compute(device=device, memory_budget=budget, threads=threads, seed=seed).check()


def parse_ks(text: str) -> tuple[int, ...]:
    return positive_ints(str(text), "--k")  # the library's reader, blamed on the option


def parse_params(items: list[str] | tuple[str, ...] | None) -> dict[str, Any]:
    """``["key=value", ...]`` -> dict; values are read as YAML scalars (``15`` -> int,
    ``0.5`` -> float, ``true`` -> bool, ``none``/``null`` -> None, anything else a string)."""
    import math

    import yaml

    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise ModgapError(f"--param wants key=value, got '{item}'")
        raw = raw.strip()
        if raw.lower().lstrip("+-.") in ("nan", "inf", "infinity"):
            raise ModgapError(f"--param {key}={raw}: the value must be a finite number")
        if raw.lower() in ("none", "null", "~"):
            value: Any = None
        else:
            # numbers as Python reads them first: YAML 1.1 reads "1e-300" or "1e5" (no dot) as
            # strings, which a reducer would then refuse with a confusing type error
            value = _number(raw)
            if value is None:
                try:
                    value = yaml.safe_load(raw)
                except yaml.YAMLError:
                    value = raw
            if not isinstance(value, str | int | float | bool):
                value = raw
            if isinstance(value, float) and not math.isfinite(value):
                raise ModgapError(f"--param {key}={raw}: the value must be a finite number")
        out[key] = value
    return out


def _number(raw: str) -> int | float | None:
    """``raw`` as an int or a float when Python reads it as one (``15``, ``-3``, ``1e-300``,
    ``.5``), else None."""
    for kind in (int, float):
        try:
            return kind(raw)
        except ValueError:
            pass
    return None


def finite(option: str) -> Callable:
    """A click callback refusing NaN/inf for a float option (blamed on the option)."""
    import math

    def check(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        if value is not None and not math.isfinite(value):
            raise click.BadParameter(f"must be a finite number, got {value}", ctx, param)
        return value

    return check


def run_with(compute: Any, quiet: bool) -> Callable:
    """Decorator body helper: run a command's work with ``compute`` current and quiet set."""

    def wrap(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def inner(*args: Any, **kwargs: Any) -> Any:
            from ..compute import use
            from . import set_quiet

            set_quiet(quiet)
            with use(compute):
                return fn(*args, **kwargs)

        return inner

    return wrap


#: more splits than this only narrows a t interval that is already as narrow as the data's
#: own variance allows, at the cost of hours; a larger value is almost surely a typo
MAX_REPEATS = 1000


def repeats_option(default: int, what: str = "") -> Callable:
    """``--repeats``: random held-out splits of a benchmark (``what`` says which inputs)."""
    return click.option(
        "--repeats",
        type=click.IntRange(min=1, max=MAX_REPEATS),
        default=default,
        show_default=True,
        help=f"Random splits{what}; every number gets a mean and a 95% interval over them "
        f"(at most {MAX_REPEATS}).",
    )
