"""``modgap reduce METHOD INPUT [TEXTS] --out FOLDER``: fit a gap reducer and write the
transformed embeddings (same format family as the input) plus the fitted reducer;
``modgap reduce --apply MODEL INPUT [TEXTS] --out FOLDER`` transforms new embeddings with a
saved reducer."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer

from ..errors import ModgapError


def parse_params(items: list[str] | None) -> dict[str, Any]:
    """``["key=value", ...]`` -> dict; values are read as YAML scalars (``15`` -> int,
    ``0.5`` -> float, ``true`` -> bool, ``none``/``null`` -> None, anything else a string)."""
    import yaml

    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise ModgapError(f"--param wants key=value, got '{item}'")
        raw = raw.strip()
        if raw.lower() in ("none", "null", "~"):
            value: Any = None
        else:
            try:
                value = yaml.safe_load(raw)
            except yaml.YAMLError:
                value = raw
            if not isinstance(value, str | int | float | bool):
                value = raw
        out[key] = value
    return out


@contextmanager
def _spinner(text: str, enabled: bool):
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
        disable=not enabled,
    ) as bar:
        bar.add_task(text, total=None)
        yield


def _output_paths(images: str, texts: str | None, out: Path) -> tuple[Path, Path | None]:
    """Where the transformed set goes: the input's own name(s) inside ``out``."""
    img = out / Path(images).name
    if texts is None:
        return img, None
    txt = out / Path(texts).name
    if txt == img:
        txt = out / f"{Path(texts).stem}_texts{Path(texts).suffix}"
    return img, txt


def run_reduce(
    method: str | None,
    images: str,
    texts: str | None = None,
    out: str = "reduced",
    *,
    apply: str | None = None,
    save_model: str | None = None,
    pairs: str | None = None,
    params: dict[str, Any] | None = None,
    progress: bool = True,
) -> dict:
    """What ``modgap reduce`` does; returns the summary written to ``FOLDER/reduce.json``."""
    from rich.console import Console

    from ..files import write_json
    from ..io import detect_format, read_embeddings, write_embeddings
    from ..provenance import provenance
    from ..reducers import get_reducer, load_reducer

    params = dict(params or {})
    if apply is not None:
        if params:
            raise ModgapError(
                f"--apply uses the saved reducer's parameters; drop {', '.join(sorted(params))}"
            )
        reducer = load_reducer(apply)  # a bad model fails before any data is read
    else:
        if not method:
            raise ModgapError("give a METHOD to fit (or --apply MODEL to use a saved reducer)")
        reducer = get_reducer(method, **params)
    emb = read_embeddings(images, texts, pairs=pairs)
    fmt = detect_format(images)
    out_dir = Path(out)
    if out_dir.exists() and not out_dir.is_dir():
        raise ModgapError(f"--out {out} exists and is not a folder")
    img_path, txt_path = _output_paths(images, texts, out_dir)
    for src, dst in ((images, img_path), (texts, txt_path)):
        if src is not None and dst is not None and dst.resolve() == Path(src).resolve():
            raise ModgapError(f"--out {out} would overwrite the input {src}; choose another folder")

    if apply is None:
        with _spinner(
            f"fitting {reducer.name} on {emb.n_images} images, {emb.n_texts} texts", progress
        ):
            reducer.fit(emb)
    with _spinner(f"transforming with {reducer.name}", progress):
        reduced = reducer.transform_set(emb)

    out_dir.mkdir(parents=True, exist_ok=True)
    pairs_out = out_dir / Path(pairs).name if pairs and fmt == "npy" else None
    write_embeddings(reduced, img_path, fmt, texts=txt_path, pairs=pairs_out)
    model_path = None
    if apply is None:
        model_path = Path(save_model) if save_model else out_dir / "reducer.safetensors"
        reducer.save(model_path)
    summary = {
        "mode": "apply" if apply else "fit",
        "reducer": reducer.name,
        "params": reducer.get_params(),
        "model": str(apply or model_path),
        "outputs": [str(p) for p in (img_path, txt_path, pairs_out) if p is not None],
        "provenance": provenance(
            inputs={"images": images, "texts": texts, "pairs": pairs},
            counts={
                "n_images": reduced.n_images,
                "n_texts": reduced.n_texts,
                "dim_in": emb.dim,
                "dim_out": reduced.dim,
            },
        ),
    }
    write_json(out_dir / "reduce.json", summary)
    con = Console()
    con.print(
        f"{reducer.name}: {reduced.n_images} images, {reduced.n_texts} texts, "
        f"d={emb.dim} -> {reduced.dim}",
        highlight=False,
    )
    for p in summary["outputs"]:
        con.print(f"wrote {p}", soft_wrap=True, highlight=False)
    if model_path is not None:
        con.print(f"saved reducer to {model_path}", soft_wrap=True, highlight=False)
    return summary


def register(app: typer.Typer) -> None:
    @app.command("reduce")
    def reduce_command(
        args: list[str] = typer.Argument(
            ...,
            metavar="METHOD INPUT [TEXTS]",
            help="Reducer (center, shift, gaussian, procrustes, spectral, ot-laplace, "
            "ot-sinkhorn) and the embeddings: one file/folder holding both, or image and text "
            ".npy/.parquet files. With --apply, only INPUT [TEXTS].",
        ),
        out: str = typer.Option(..., "--out", "-o", help="Folder for the outputs."),
        apply: str | None = typer.Option(
            None, "--apply", help="Transform with this saved reducer instead of fitting one."
        ),
        save_model: str | None = typer.Option(
            None,
            "--save-model",
            help="Where to save the fitted reducer (default FOLDER/reducer.safetensors).",
        ),
        pairs: str | None = typer.Option(
            None, "--pairs", help="text_to_image: one image index per text (.npy or text/CSV)."
        ),
        param: list[str] | None = typer.Option(
            None, "--param", "-p", help="Reducer parameter key=value (repeatable)."
        ),
        direction: str | None = typer.Option(
            None,
            "--direction",
            help="gaussian/procrustes/ot-*: images->texts, texts->images or barycenter "
            "(quote it in the shell).",
        ),
        n_components: int | None = typer.Option(
            None, "--n-components", help="spectral: output dimensions."
        ),
        n_neighbors: int | None = typer.Option(
            None, "--n-neighbors", help="spectral: cross-modal neighbours per point."
        ),
        lam: float | None = typer.Option(None, "--lam", help="shift: fraction of the gap."),
        reg: float | None = typer.Option(None, "--reg", help="ot-sinkhorn: entropic reg."),
        device: str | None = typer.Option(None, "--device", help="torch device (cpu, cuda)."),
        no_progress: bool = typer.Option(False, "--no-progress", help="No progress display."),
    ) -> None:
        """Fit a modality-gap reducer and write the reduced embeddings and the fitted reducer,
        or apply a saved one (--apply)."""
        positional = list(args)
        method = None if apply else positional.pop(0)
        if not positional or len(positional) > 2:
            raise ModgapError(
                "usage: modgap reduce METHOD INPUT [TEXTS] --out FOLDER, or "
                "modgap reduce --apply MODEL INPUT [TEXTS] --out FOLDER"
            )
        params = parse_params(param)
        typed = {
            "direction": direction,
            "n_components": n_components,
            "n_neighbors": n_neighbors,
            "lam": lam,
            "reg": reg,
            "device": device,
        }
        params.update({k: v for k, v in typed.items() if v is not None})
        run_reduce(
            method,
            positional[0],
            positional[1] if len(positional) > 1 else None,
            out,
            apply=apply,
            save_model=save_model,
            pairs=pairs,
            params=params,
            progress=not no_progress,
        )
