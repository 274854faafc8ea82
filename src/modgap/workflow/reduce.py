"""Reduce a whole embedding file or folder into an output folder, as one unit.

:func:`reduce_to_folder` is what ``modgap reduce`` runs, on every route: build the reducer (or
load a saved one), decide the route **once** (:func:`choose_route`), fit through the reducer's
own routes (``fit`` on the set in memory, :func:`modgap.stream.fit.fit_streaming` from moments
or a stated sample otherwise), and write:

* a clip-retrieval folder or a pair of ``.npy`` files (a set that is one shard) through the
  shard-by-shard writer (:func:`.write.reduce_folder`: staging, markers, resume, swap-in),
  whether it was fitted in memory or streamed;
* any other format (``.npz``, parquet, safetensors, torch) in memory, as one output folder
  swapped in whole (:func:`modgap.files.output_folder`, every file through
  :func:`modgap.files.atomic_path`).

Either way the output folder holds the transformed set in the input's format, the fitted
reducer and ``reduce.json`` (:mod:`.summary`).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from .._progress import progress as progress_bar
from ..compute import Compute, resolve
from ..errors import InputError, ModgapError, notice
from ..files import (
    atomic_path,
    check_output_folder,
    check_paths,
    clean_stale,
    output_folder,
    output_lock,
    sha256_file,
    write_json,
)
from ..io import FORMATS, detect_format, read_embeddings, write_embeddings
from ..reducers import get_reducer, load_reducer
from ..stream import get_engine, open_source, runs_in_process, stream_reason
from ..stream.fit import DEFAULT_FIT_SAMPLE, fit_streaming
from .summary import MODEL, SUMMARY, reduce_summary
from .write import SHARD_FORMATS, reduce_folder

__all__ = ["Route", "choose_route", "reduce_to_folder"]


@dataclasses.dataclass(frozen=True)
class Route:
    """How one reduce run goes.

    Attributes
    ----------
    writer : {"shards", "file"}
        ``shards``: the shard-by-shard writer (a clip-retrieval folder, a ``.npy`` pair, or any
        streamed input); ``file``: the set in memory, written whole.
    fit : {"memory", "stream"}
        The reducer's in-memory ``fit`` on the whole set, or :func:`fit_streaming`.
    source : Source or None
        The input as a source (``shards`` only).
    why : str or None
        Why the fit streams by itself (the in-memory fit would not fit in memory, or the input
        is not on a local disk), for the notice; None when forced or in memory.
    """

    writer: str
    fit: str
    source: Any = None
    why: str | None = None


def choose_route(
    images: str,
    texts: str | None,
    pairs: Any,
    *,
    stream: bool | None,
    engine: Any,
    compute: Compute,
) -> Route:
    """The route of one reduce run, decided here and nowhere else.

    The fit streams when ``stream`` is True, when the engine does not run in this process
    (:func:`modgap.stream.runs_in_process`), or — ``stream`` None — when the in-memory fit would
    not fit in the memory available or the input is not on a local disk
    (:func:`modgap.stream.stream_reason`). The shard writer takes every input of
    :data:`.write.SHARD_FORMATS` and every streamed one; the rest is written from memory.
    """
    forced = bool(stream) or not runs_in_process(engine)
    try:
        fmt = detect_format(images)
    except InputError:
        fmt = None  # a URL, or a path the source reader names the problem of
    if not forced and fmt is not None and fmt not in SHARD_FORMATS:
        return Route("file", "memory")
    source = open_source(images, texts, pairs=pairs)
    why = stream_reason(source, "reduce", compute)
    streaming = forced or (stream is None and why is not None)
    if source.format not in SHARD_FORMATS and not streaming:
        return Route("file", "memory")
    return Route("shards", "stream" if streaming else "memory", source, None if forced else why)


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
        with a notice (:func:`choose_route`).
        A clip-retrieval folder and a ``.npy`` pair are always *written* shard by shard,
        mirroring the input (:func:`.write.reduce_folder`): same shard names, dtypes and
        metadata files, resumable after an interruption.
    engine : str or Engine, optional
        A name of :data:`modgap.stream.ENGINES` (default ``"local"``) or an engine; one that
        does not run in this process (Dask) implies streaming.
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
    route = choose_route(images, texts, pairs, stream=stream, engine=engine, compute=compute)
    inputs = {"images": images, "texts": texts, "pairs": pairs, "apply": apply}
    if route.writer == "file":
        return _write_file(
            reducer, images, texts, out_dir, apply=apply, save_model=save_model, pairs=pairs,
            progress=progress, compute=compute, inside=inside, inputs=inputs,
        )  # fmt: skip
    eng = get_engine(engine)
    try:
        summary = _write_shards(
            reducer, route, out_dir, method=method, apply=apply, pairs=pairs, engine=eng,
            fit_sample=fit_sample, dtype=dtype, progress=progress, compute=compute,
            model_copy=os.path.relpath(save_model, out_dir) if inside else None, inputs=inputs,
        )  # fmt: skip
    finally:
        if eng is not engine:  # started here: closed here
            eng.close()
    if save_model is not None and apply is None:
        if not inside:
            with atomic_path(save_model) as tmp:
                tmp.write_bytes((out_dir / MODEL).read_bytes())
        summary["saved_model"] = str(save_model)
    return summary


def _write_file(
    reducer: Any,
    images: str,
    texts: str | None,
    out_dir: Path,
    *,
    apply: Any,
    save_model: Any,
    pairs: Any,
    progress: bool,
    compute: Compute,
    inside: bool,
    inputs: dict,
) -> dict:
    """The set in memory: fit on every row (class prompts as texts), transform, and write the
    output folder whole (:func:`modgap.files.output_folder`)."""
    fmt = FORMATS[detect_format(images)]
    emb = read_embeddings(images, texts, pairs=pairs)
    with progress_bar(f"{reducer.name}", enabled=progress) as bar:
        if apply is None:
            bar.describe(f"fitting {reducer.name} on {emb.n_images} images, {emb.n_texts} texts")
            reducer.fit(emb.prompts_as_texts(), compute=compute)
        bar.describe(f"transforming with {reducer.name}")
        reduced = reducer.transform_set(emb)

    img_name, txt_name = _output_names(images, texts, fmt.folder)
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
        if apply is None:
            model_rel = MODEL if not inside else os.path.relpath(save_model, out_dir)
            (tmp / model_rel).parent.mkdir(parents=True, exist_ok=True)
            reducer.save(tmp / model_rel)
            model_sha = sha256_file(tmp / model_rel)
        else:
            model_sha = sha256_file(apply)
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
            inputs=inputs,
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


def _write_shards(
    reducer: Any,
    route: Route,
    out_dir: Path,
    *,
    method: str | None,
    apply: Any,
    pairs: Any,
    engine: Any,
    fit_sample: int | None,
    dtype: Any,
    progress: bool,
    compute: Compute,
    model_copy: str | None,
    inputs: dict,
) -> dict:
    """The shard-by-shard writer, the reducer fitted on ``route.fit``'s route."""
    source = route.source
    streaming = route.fit == "stream"
    if streaming and route.why is not None and engine.in_process:
        notice(
            f"{inputs['images']}: {source.n_images:,} images + {source.n_texts:,} texts: "
            f"{route.why}: fitting out of core (--stream forces this)"
        )
    size = DEFAULT_FIT_SAMPLE if fit_sample is None else int(fit_sample)

    def fit(r: Any) -> dict:
        if streaming:
            return fit_streaming(
                r, source, fit_sample=size, engine=engine, compute=compute, progress=progress
            )
        emb = read_embeddings(inputs["images"], inputs["texts"], pairs=pairs)
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
    return reduce_folder(
        source,
        out_dir,
        reducer=None if apply else reducer,
        fit=fit,
        apply=apply,
        job=job,
        dtype=dtype,
        engine=engine,
        compute=compute,
        progress=progress,
        provenance_inputs=inputs,
        pairs_name=None if pairs is None else Path(pairs).name,
        model_copy=model_copy,
    )


def _is_inside(path: Path, folder: Path) -> bool:
    p, f = path.resolve(), folder.resolve()
    return f in p.parents
