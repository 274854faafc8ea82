"""Reduce a whole embedding file or folder into an output folder, as one unit.

:func:`reduce_to_folder` is what ``modgap reduce`` runs: read the input, fit a reducer (or load a
saved one), transform both modalities (class prompts as texts) and write the transformed set
in the input's format, the fitted reducer and ``reduce.json`` (what was done, with which
parameters, and which rows the reducer was fitted on) into one output folder that replaces the
previous one in a single rename (:func:`modgap.files.output_folder`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..compute import Compute, resolve
from ..errors import ModgapError
from ..files import sha256_file
from .summary import reduce_summary

__all__ = ["SUMMARY", "fitted_rows_warning", "reduce_to_folder"]

#: the summary file of a reduce output folder (also its marker)
SUMMARY = "reduce.json"
MODEL = "reducer.safetensors"


def _output_names(
    images: str, texts: str | None, folder_format: bool
) -> tuple[str | None, str | None]:
    """Names of the transformed files inside the output folder (None: the folder itself)."""
    if folder_format:
        return None, None
    img = Path(images).name
    if texts is None:
        return img, None
    txt = Path(texts).name
    if txt == img:
        txt = f"{Path(texts).stem}_texts{Path(texts).suffix}"
    return img, txt


def reduce_to_folder(
    method: str | None,
    images: str | os.PathLike,
    texts: str | os.PathLike | None = None,
    out: str | os.PathLike = "reduced",
    *,
    apply: str | os.PathLike | None = None,
    save_model: str | os.PathLike | None = None,
    pairs: str | os.PathLike | None = None,
    params: dict[str, Any] | None = None,
    progress: bool = False,
    compute: Compute | None = None,
    stream: bool | None = None,
    engine: Any = None,
    fit_sample: int | None = None,
    dtype: Any = None,
) -> dict:
    """Fit (or ``apply``) a reducer and write the reduced set, the model and the summary.

    Parameters
    ----------
    method : str or None
        Registry name of the reducer to fit; ``None`` with ``apply``.
    images, texts : path
        The input, as for :func:`modgap.io.read_embeddings`.
    out : path
        Output folder. It is created, or replaced as a whole when it holds an earlier
        ``reduce.json``; a folder with other files is refused.
    apply : path, optional
        A saved reducer (:meth:`~modgap.reducers.Reducer.save`) to transform with instead of
        fitting one.
    save_model : path, optional
        Also write the fitted reducer here (default: only ``OUT/reducer.safetensors``).
    pairs : path, optional
        ``text_to_image`` file.
    params : dict, optional
        Reducer parameters.
    progress : bool
        Show a spinner while fitting and transforming.
    compute : Compute, optional
    stream : bool, optional
        Fit out of core (moments in one pass; spectral and OT on ``fit_sample`` images) and
        transform shard by shard. ``None``: when fitting it in memory would not fit in the
        memory available (:func:`modgap.stream.stream_reason`) or it is not on a local disk,
        with a notice.
        A clip-retrieval folder (and a streamed ``.npy`` pair) is always *written* shard by
        shard, mirroring the input (:func:`modgap.stream.reduce_folder`): same shard names,
        dtypes and metadata files, resumable after an interruption.
    engine : str or Engine, optional
        ``"local"`` (default) or ``"dask"`` / a :class:`modgap.stream.DaskEngine`; Dask
        implies streaming.
    fit_sample : int, optional
        Images the sample-fitted reducers (spectral, OT) are fitted on when streaming
        (default :data:`modgap.stream.fit.DEFAULT_FIT_SAMPLE`).
    dtype : str, optional
        Output float type of a shard-by-shard output (default: the input's).

    Returns
    -------
    dict
        The summary written to ``OUT/reduce.json``.
    """
    from ..files import check_paths, output_lock

    compute = resolve(compute)
    params = dict(params or {})
    out_dir = Path(out)
    images, texts = os.fspath(images), None if texts is None else os.fspath(texts)
    inside = save_model is not None and _is_inside(Path(save_model), out_dir)
    check_paths(
        reads=[
            ("the input", images),
            ("the texts file", texts),
            ("--pairs", pairs),
            ("--apply", apply),
        ],
        writes=[("--out", out_dir), ("--save-model", None if inside else save_model)],
    )
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    # a second run onto the same --out fails now, not after its fit (and never mixes files)
    with output_lock(out_dir, "--out"):
        return _reduce_locked(
            method,
            images,
            texts,
            out_dir,
            apply=apply,
            save_model=save_model,
            pairs=pairs,
            params=params,
            progress=progress,
            compute=compute,
            stream=stream,
            engine=engine,
            fit_sample=fit_sample,
            dtype=dtype,
            inside=inside,
        )


def _reduce_locked(
    method: str | None,
    images: str,
    texts: str | None,
    out_dir: Path,
    *,
    apply: str | os.PathLike | None,
    save_model: str | os.PathLike | None,
    pairs: str | os.PathLike | None,
    params: dict[str, Any],
    progress: bool,
    compute: Compute,
    stream: bool | None,
    engine: Any,
    fit_sample: int | None,
    dtype: Any,
    inside: bool,
) -> dict:
    """:func:`reduce_to_folder`'s work, under the lock of ``out_dir``."""
    from .._progress import progress as progress_bar
    from ..files import check_output_folder, clean_stale, output_folder, write_json
    from ..io import FORMATS, detect_format, read_embeddings, write_embeddings
    from ..io.pairs import write_pairs
    from ._registry import get_reducer, load_reducer

    clean_stale(out_dir)  # an output a killed run moved aside is put back before it is judged
    check_output_folder(out_dir, SUMMARY, "--out")
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
        reducer.check_params()  # bad values fail before any data is read
    shard_route = _shard_route(images, stream, engine)
    if shard_route:
        return _reduce_shards(
            reducer,
            images,
            texts,
            out_dir,
            apply=apply,
            pairs=pairs,
            stream=stream,
            engine=engine,
            fit_sample=fit_sample,
            dtype=dtype,
            progress=progress,
            compute=compute,
            save_model=save_model,
            params=params,
            method=method,
        )
    fmt = FORMATS[detect_format(images)]
    emb = read_embeddings(images, texts, pairs=pairs)
    with progress_bar(f"{reducer.name}", enabled=progress) as bar:
        if apply is None:
            bar.describe(f"fitting {reducer.name} on {emb.n_images} images, {emb.n_texts} texts")
            reducer.fit(emb.prompts_as_texts(), compute=compute)
        bar.describe(f"transforming with {reducer.name}")
        reduced = reducer.transform_set(emb)

    img_name, txt_name = _output_names(images, texts, fmt.folder)
    pairs_name = Path(pairs).name if pairs is not None and fmt.name == "npy" else None
    model_rel = None
    with output_folder(out_dir, marker=SUMMARY, what="--out") as tmp:
        if fmt.folder:
            write_embeddings(reduced, tmp, fmt.name)
            outputs = [str(out_dir)]
        else:
            write_embeddings(
                reduced,
                tmp / img_name,
                fmt.name,
                texts=None if txt_name is None else tmp / txt_name,
            )
            outputs = [str(out_dir / n) for n in (img_name, txt_name) if n is not None]
        if pairs_name is not None:
            write_pairs(reduced.text_to_image, tmp / pairs_name)
            outputs.append(str(out_dir / pairs_name))
        if apply is None:
            model_rel = MODEL if not inside else os.path.relpath(save_model, out_dir)
            (tmp / model_rel).parent.mkdir(parents=True, exist_ok=True)
            reducer.save(tmp / model_rel)
            model_sha = sha256_file(tmp / model_rel)
        else:
            model_sha = sha256_file(Path(apply))
        summary = reduce_summary(
            reducer,
            apply=apply,
            model=str(apply) if apply else str(out_dir / model_rel),
            model_sha256=model_sha,
            outputs=outputs,
            # which rows the reducer saw: every row of these outputs when it was fitted here
            fitted_on={
                "source": emb.source,
                "rows": "all",
                "n_images": emb.n_images,
                "n_texts": emb.n_texts,
            },
            inputs={"images": images, "texts": texts, "pairs": pairs, "apply": apply},
            counts={
                "n_images": reduced.n_images,
                "n_texts": reduced.n_texts,
                "dim_in": emb.dim,
                "dim_out": reduced.dim,
            },
            compute=compute,
        )
        write_json(tmp / SUMMARY, summary)
    if save_model is not None and not inside:
        reducer.save(save_model)
        summary["saved_model"] = str(save_model)
    return summary


def _shard_route(images: str, stream: bool | None, engine: Any) -> bool:
    """Whether the input goes through the shard-by-shard writer: every clip-retrieval folder
    (faithful output), and any streamed input."""
    from ..io import is_remote, source_format

    if stream or (engine is not None and engine != "local") or is_remote(images):
        return True
    fmt = source_format(images)
    return fmt == "clip-retrieval" or (stream is None and fmt == "npy")


def _reduce_shards(
    reducer,
    images,
    texts,
    out_dir,
    *,
    apply,
    pairs,
    stream,
    engine,
    fit_sample,
    dtype,
    progress,
    compute,
    save_model,
    params,
    method,
) -> dict:
    from ..errors import notice
    from ..stream import get_engine, open_source, stream_reason
    from ..stream.fit import DEFAULT_FIT_SAMPLE, fit_streaming
    from ..stream.write import reduce_folder

    source = open_source(images, texts, pairs=pairs)
    why = stream_reason(source, "reduce", compute)
    if source.format == "npy" and stream is None and why is None:
        # small .npy pairs keep the in-memory route (and its pairs-file handling)
        return reduce_to_folder(
            method,
            images,
            texts,
            out_dir,
            apply=apply,
            save_model=save_model,
            pairs=pairs,
            params=params,
            progress=progress,
            compute=compute,
            stream=False,
        )
    eng = get_engine(engine) if not hasattr(engine, "reduce") else engine
    streaming = bool(stream) or eng.name != "local" or (stream is None and why is not None)
    if streaming and stream is None and eng.name == "local":
        notice(
            f"{images}: {source.n_images:,} images + {source.n_texts:,} texts: {why}: "
            "fitting out of core (--stream forces this)"
        )
    size = DEFAULT_FIT_SAMPLE if fit_sample is None else int(fit_sample)

    def fit(r):
        if streaming:
            return fit_streaming(
                r, source, fit_sample=size, engine=eng, compute=compute, progress=progress
            )
        from ..io import read_embeddings

        emb = read_embeddings(images, texts, pairs=pairs)
        r.fit(emb, compute=compute)
        return {
            "source": emb.source,
            "rows": "all",
            "n_images": emb.n_images,
            "n_texts": emb.n_texts,
        }

    job = {
        "method": method,
        "params": {k: v for k, v in sorted(reducer.get_params().items())},
        "seed": compute.seed,
        "fit": ("stream", size) if streaming else "memory",
    }
    try:
        summary = reduce_folder(
            source,
            out_dir,
            reducer=None if apply else reducer,
            fit=fit,
            apply=apply,
            job=job,
            dtype=dtype,
            engine=eng,
            compute=compute,
            progress=progress,
            provenance_inputs={"images": images, "texts": texts, "pairs": pairs, "apply": apply},
        )
    finally:
        if eng is not engine:
            eng.close()
    if save_model is not None and apply is None:
        from shutil import copyfile

        from ..files import atomic_path

        with atomic_path(save_model) as tmp:  # inside --out too: the output is in place now
            copyfile(out_dir / MODEL, tmp)
        summary["saved_model"] = str(save_model)
    return summary


def _is_inside(path: Path, folder: Path) -> bool:
    p, f = path.resolve(), folder.resolve()
    return f in p.parents


def fitted_rows_warning(input_path: str | os.PathLike) -> str | None:
    """When ``input_path`` is an output of ``modgap reduce`` that fitted its reducer on these
    very rows, the sentence to warn with (else None): scores on them are not held-out."""
    import json

    p = Path(input_path)
    folder = p if p.is_dir() else p.parent
    summary = folder / SUMMARY
    if not summary.is_file():
        return None
    try:
        doc = json.loads(summary.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or doc.get("mode") != "fit" or not doc.get("fitted_on"):
        return None
    outputs = {str(Path(o).resolve()) for o in doc.get("outputs", []) if isinstance(o, str)}
    if str(p.resolve()) not in outputs:
        return None
    return (
        f"{input_path} was written by 'modgap reduce {doc.get('reducer')}', which was fitted on "
        "these same rows: scores on them are transductive, not held-out (judge a reducer with "
        "'modgap bench', which fits and scores on separate splits)"
    )
