"""``modgap train CONFIG.yaml [--resume] [--out DIR]``: train a matching model (DIAS, triplet,
InfoNCE) from a YAML config; see docs/dias.md."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("train")
    def train_command(
        config: Path = typer.Argument(..., help="YAML training config (see configs/)."),
        resume: bool = typer.Option(
            False, "--resume", help="Continue the run in the output folder from its checkpoint."
        ),
        out: Path | None = typer.Option(
            None, "--out", help="Output folder (default: the config's 'out')."
        ),
        device: str | None = typer.Option(
            None, "--device", help="Override the config's device (cpu, cuda, auto)."
        ),
        no_progress: bool = typer.Option(False, "--no-progress", help="No progress bars."),
    ) -> None:
        """Train an image-text matching model (triplet / InfoNCE / DIAS) from a config."""
        from rich.console import Console
        from rich.table import Table

        from ..train import load_config
        from ..train.trainer import Trainer

        overrides = {"device": device} if device else None
        cfg = load_config(config, overrides)
        trainer = Trainer(cfg, out, resume=resume, progress=not no_progress)
        results = trainer.fit()
        console = Console()
        splits = [split for split in ("val", "test") if results.get(split)]
        table = Table(title=f"{cfg.name}: {results['selected_model']}")
        table.add_column("metric")
        for split in splits:
            table.add_column(split, justify="right")
        for key in results[splits[-1]] if splits else ():
            table.add_row(key, *(f"{results[s].get(key, float('nan')):.4g}" for s in splits))
        console.print(table)
        console.print(f"results: {trainer.out / 'results.json'}")
