"""``modgap train CONFIG.yaml [--resume] [--out DIR]``: train a matching model (DIAS, triplet,
InfoNCE) from a YAML config; see docs/dias.md."""

from __future__ import annotations

import click

from . import cli
from ._options import INPUT_PATH, OUTPUT_PATH, output_options


@cli.command("train")
@click.argument("config", type=INPUT_PATH, metavar="CONFIG.yaml")
@click.option("--resume", is_flag=True, help="Continue the run in the output folder.")
@click.option(
    "--out",
    "-o",
    type=OUTPUT_PATH,
    default=None,
    metavar="DIR",
    help="Output folder (default: the config's 'out').",
)
@click.option(
    "--device", default=None, help="Override the config's device (auto, cpu, cuda, cuda:N)."
)
@output_options
def train_command(config, resume, out, device, no_progress, quiet) -> None:
    """Train an image-text matching model (triplet / InfoNCE / DIAS) from a config."""
    from rich.console import Console
    from rich.table import Table

    from ..compute import resolve_device
    from ..files import check_paths
    from ..train import load_config
    from ..train.trainer import Trainer
    from . import set_quiet

    set_quiet(quiet)
    if device is not None:
        resolve_device(device)
    cfg = load_config(config, {"device": device} if device else None)
    d = cfg.data
    check_paths(
        reads=[
            ("the config", config),
            ("data.path", d.path),
            ("data.val_path", d.val_path),
            ("data.test_path", d.test_path),
        ],
        writes=[("--out", out if out is not None else cfg.out)],
    )
    trainer = Trainer(cfg, out, resume=resume, progress=not (no_progress or quiet))
    results = trainer.fit()
    if quiet:
        return
    console = Console()
    splits = [split for split in ("val", "test") if results.get(split)]
    table = Table(title=f"{cfg.name}: {results['selected_model']}")
    table.add_column("metric")
    for split in splits:
        table.add_column(split, justify="right")
    for key in results[splits[-1]] if splits else ():
        table.add_row(key, *(f"{results[s].get(key, float('nan')):.4g}" for s in splits))
    console.print(table)
    console.print(f"results: {trainer.out / 'results.json'}", soft_wrap=True, highlight=False)
