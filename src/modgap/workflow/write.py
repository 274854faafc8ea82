"""The shard-by-shard writer of ``modgap reduce``: a faithful, resumable output folder that
lands whole.

The output mirrors the input: the same shard names and count (``img_emb_00`` ...
``img_emb_12`` stay exactly that), row order and counts, the input's dtypes (float16 stays
float16 unless ``dtype`` says otherwise), every metadata file copied byte for byte (so every
column — ``url``, ``caption``, ``similarity``, ... — is kept), the multi-caption
``text_metadata/`` shards, and ``extra.npz`` (class prompts transformed as texts). A pair of
``.npy`` files comes out as a pair of ``.npy`` files of the same names.

Staging and resuming: the folder is built in ``.{OUT}.partial`` beside ``OUT``. It holds the
job description (input files with sizes and times, reducer, parameters, seed, dtype), the
fitted reducer, and a marker per finished shard (each shard's files land by rename first).
After an interruption the same command finds the staging folder, checks that the job is the
same, reuses the fitted reducer and skips the finished shards; a different job starts afresh.
At the end the staging folder replaces ``OUT`` in one rename (an existing ``OUT`` written by
``modgap reduce`` is moved aside first and deleted after), as :func:`modgap.files.output_folder`
does: after a kill at any moment ``OUT`` holds the old complete folder or the new one.

Every shard is one task (:func:`.shard.transform_kernel`) that the engine schedules; the
engine does nothing else. With Dask, workers write their shards straight into the staging
folder, which must therefore be on a filesystem every worker sees (any local cluster; a shared
disk for a real cluster).
"""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from .._progress import progress as progress_bar
from ..compute import Compute, resolve
from ..errors import ModgapError, notice
from ..files import (
    atomic_path,
    check_output_folder,
    clean_stale,
    output_lock,
    sha256_file,
    swap_in,
    write_json,
)
from ..io import write_pairs
from ..io.source import local_fingerprint
from ..reducers import load_reducer
from ..stream import Engine, LocalEngine, Source
from . import shard as shard_kernels
from .summary import MODEL, SUMMARY, reduce_summary

__all__ = ["SHARD_FORMATS", "reduce_folder", "staging_path"]

#: input formats this writer mirrors (a folder of shards, or a pair of .npy files as one shard)
SHARD_FORMATS = ("clip-retrieval", "npy")
JOB = ".job.json"


def staging_path(out: Path) -> Path:
    """Where the output folder ``out`` is built (stable across runs, for resuming)."""
    return out.parent / f".{out.name}.partial"


def _out_dtypes(source: Source, dtype: Any) -> tuple[str, str]:
    if dtype is not None:
        dt = np.dtype(dtype)
        if dt not in (np.float16, np.float32):
            raise ModgapError(f"--dtype must be float16 or float32, got {dt}")
        return dt.name, dt.name

    def norm(name: str) -> str:
        # float16 and float32 are kept; anything else (float64, bfloat16) is written float32
        return name if name in ("float16", "float32") else "float32"

    return norm(source.layout.get("image_dtype", "float32")), norm(
        source.layout.get("text_dtype", "float32")
    )


def _extra(source: Source, reducer: Any, staging: Path) -> None:
    """``extra.npz`` of the input with its class prompts transformed as texts."""
    if not source.layout.get("extra"):
        return
    fs = source.fs()
    with fs.open(source.path.rstrip("/") + "/extra.npz") as f:
        data = io.BytesIO(f.read())
    with np.load(data, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    if "class_text_emb" in arrays:
        c = arrays["class_text_emb"].astype(np.float32)
        flat = reducer.transform_texts(c.reshape(-1, c.shape[-1]))
        arrays["class_text_emb"] = flat.reshape(*c.shape[:-1], flat.shape[-1]).astype(
            arrays["class_text_emb"].dtype
            if arrays["class_text_emb"].dtype.kind == "f"
            else np.float32
        )
    with atomic_path(staging / "extra.npz", ".npz") as tmp:
        np.savez(tmp, **arrays)


def _finished(staging: Path, source: Source) -> set[str]:
    """The shards whose ``.done`` marker holds and whose files are all there at the sizes the
    marker records; other markers are removed, so those shards are written again."""
    done: set[str] = set()
    if not (staging / ".done").is_dir():
        return done
    wanted = {s.name: s for s in source.shards}
    for marker in sorted((staging / ".done").iterdir()):
        if marker.name.startswith("."):
            continue
        try:
            record = json.loads(marker.read_text("utf-8"))
            files = record["files"]
            shard = wanted[marker.name]
            ok = (record["n_images"], record["n_texts"]) == (shard.n_images, shard.n_texts)
            for rel, size in files.items():
                f = staging / rel
                inside = not Path(rel).is_absolute() and ".." not in Path(rel).parts
                ok = ok and inside and f.is_file() and f.stat().st_size == size
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            ok = False
        if ok:
            done.add(marker.name)
        else:
            notice(
                f"{staging}: the files of shard {marker.name} changed since it was written; "
                "writing it again"
            )
            marker.unlink()
    return done


def reduce_folder(
    source: Source,
    out: str | os.PathLike,
    *,
    reducer: Any = None,
    fit: Any = None,
    apply: str | os.PathLike | None = None,
    job: dict | None = None,
    dtype: Any = None,
    engine: Engine | None = None,
    compute: Compute | None = None,
    progress: bool = False,
    resume: bool = True,
    provenance_inputs: dict | None = None,
    pairs_name: str | None = None,
    model_copy: str | None = None,
) -> dict:
    """Transform every shard of ``source`` into the folder ``out`` (see the module docstring).

    Parameters
    ----------
    source : Source
    out : path
        The output folder itself (a clip-retrieval folder, or a folder holding the two
        ``.npy`` files).
    reducer : Reducer, optional
        An unfitted reducer: ``fit(reducer)`` is called (unless a resumed job already has the
        fitted one) and must return the ``fitted_on`` record.
    fit : callable
        ``fit(reducer) -> dict``.
    apply : path, optional
        A saved reducer to transform with instead (no fit).
    job : dict, optional
        What identifies this job beyond the input files (method, parameters, seed, fit
        sample): a staging folder of another job is not resumed.
    dtype : str, optional
        Output float type (default: the input's: float16 stays float16).
    engine, compute, progress
        As for :func:`~modgap.stream.stream_measures`.
    resume : bool
        Reuse a matching staging folder (default); False starts afresh.
    provenance_inputs : dict, optional
        The inputs as the user gave them, for the provenance record.
    pairs_name : str, optional
        A ``.npy`` pair read with a pairs file: write ``source.text_to_image`` under this name
        beside the two outputs (a ``.npy`` pair cannot hold a pairing that is not row by row).
    model_copy : str, optional
        A path inside ``out`` (relative to it) that also receives the fitted reducer, written
        in the staging folder so it is part of the output (``--save-model`` inside ``--out``).

    Returns
    -------
    dict
        The summary written to ``OUT/reduce.json``.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # one writer per output and its staging folder, from the first look at them to the swap-in
    with output_lock(out, "--out"):
        clean_stale(out)
        replacing = check_output_folder(out, SUMMARY, "--out")
        return _reduce_locked(
            source,
            out,
            replacing,
            reducer=reducer,
            fit=fit,
            apply=apply,
            job=job,
            dtype=dtype,
            engine=engine or LocalEngine(),
            compute=resolve(compute),
            progress=progress,
            resume=resume,
            provenance_inputs=provenance_inputs,
            pairs_name=pairs_name,
            model_copy=model_copy,
        )


def _reduce_locked(
    source: Source,
    out: Path,
    replacing: bool,
    *,
    reducer: Any,
    fit: Any,
    apply: Any,
    job: dict | None,
    dtype: Any,
    engine: Engine,
    compute: Compute,
    progress: bool,
    resume: bool,
    provenance_inputs: dict | None,
    pairs_name: str | None,
    model_copy: str | None,
) -> dict:
    """:func:`reduce_folder`'s work, under the output's lock."""
    if source.format not in SHARD_FORMATS:
        raise ModgapError(
            f"{source.path}: shard-by-shard reduce writes clip-retrieval folders and .npy "
            f"pairs; a {source.format} input is reduced in memory (drop --stream/--engine)"
        )
    image_dtype, text_dtype = _out_dtypes(source, dtype)
    staging = staging_path(out)
    desc = {
        "format": 1,
        "input": local_fingerprint(source),
        "apply": None if apply is None else sha256_file(apply),
        "image_dtype": image_dtype,
        "text_dtype": text_dtype,
        **(job or {}),
    }
    desc = json.loads(json.dumps(desc, default=str))
    resumed = False
    fitted_on = None
    if resume and (staging / JOB).is_file():
        try:
            old = json.loads((staging / JOB).read_text("utf-8"))
        except (OSError, ValueError):
            old = None
        model_ok = apply is not None or (staging / MODEL).is_file()
        if old is not None and old.get("job") == desc and model_ok:
            resumed = True
            fitted_on = old.get("fitted_on")
    if not resumed:
        if staging.exists():
            shutil.rmtree(staging)
        staging.mkdir(parents=True)
    if apply is not None:
        model_path = Path(apply)
        reducer = load_reducer(apply)
    elif resumed:
        model_path = staging / MODEL
        reducer = load_reducer(model_path)
    else:
        fitted_on = fit(reducer)
        model_path = staging / MODEL
        reducer.save(model_path)
    if not resumed:
        write_json(staging / JOB, {"job": desc, "fitted_on": fitted_on})
    dim_out = int(reducer.transform_images(np.eye(1, source.dim, dtype=np.float32)).shape[1])
    for sub in ("img_emb", "text_emb", ".done"):
        (staging / sub).mkdir(exist_ok=True)
    if any(s.metadata for s in source.shards):
        (staging / "metadata").mkdir(exist_ok=True)
    if any(s.text_metadata for s in source.shards):
        (staging / "text_metadata").mkdir(exist_ok=True)
    # absolute: the job travels to Dask workers, which resolve relative paths from their folder
    work = {
        "model": os.path.abspath(model_path),
        "model_sha256": sha256_file(model_path),
        "staging": os.path.abspath(staging),
        "image_dtype": image_dtype,
        "text_dtype": text_dtype,
        "dim_out": dim_out,
    }
    # markers are checked before the .npy pair below is (re)allocated, so a removed output
    # file cannot pass for a finished one
    done = _finished(staging, source) if resumed else set()
    outputs = [str(out)]
    if source.format == "npy":
        from numpy.lib.format import open_memmap

        shard = source.shards[0]  # a .npy pair is one shard: the two files themselves
        img_name = os.path.basename(shard.image.path)
        txt_name = os.path.basename(shard.text.path)
        if txt_name == img_name:
            stem, ext = os.path.splitext(txt_name)
            txt_name = f"{stem}_texts{ext}"
        files = {"image": staging / img_name, "text": staging / txt_name}
        for modality, n, dt in (
            ("image", source.n_images, image_dtype),
            ("text", source.n_texts, text_dtype),
        ):
            if not files[modality].exists():
                open_memmap(files[modality], mode="w+", dtype=dt, shape=(n, dim_out)).flush()
        work["single_files"] = {k: os.path.abspath(v) for k, v in files.items()}
        outputs = [str(out / img_name), str(out / txt_name)]
    todo = [s for s in source.shards if s.name not in done]
    if resumed and done:
        notice(
            f"resuming {staging}: {len(source.shards) - len(todo)} of {len(source.shards)} "
            "shards already written are kept"
        )
    total = sum(s.n_images + s.n_texts for s in todo)
    with progress_bar(
        f"transforming with {reducer.name}: {len(todo)} shard(s)", total=total, enabled=progress
    ) as bar:

        def tick(i: int, _: Any) -> None:
            bar.advance(todo[i].n_images + todo[i].n_texts)

        # looked up at call time (shard.transform_kernel), so a test can interrupt it
        engine.map(shard_kernels.transform_kernel, todo, source, work, compute, on_done=tick)
    _extra(source, reducer, staging)
    if pairs_name is not None and source.format == "npy" and source.text_to_image is not None:
        write_pairs(source.text_to_image, staging / pairs_name)
        outputs.append(str(out / pairs_name))
    if model_copy is not None and apply is None:
        (staging / model_copy).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(model_path, staging / model_copy)
    summary = reduce_summary(
        reducer,
        apply=apply,
        model=str(apply) if apply else str(out / MODEL),
        model_sha256=work["model_sha256"],  # the applied model's when it is one
        outputs=outputs,
        fitted_on=fitted_on,
        inputs=provenance_inputs or {"images": source.path},
        counts={
            "n_images": source.n_images,
            "n_texts": source.n_texts,
            "dim_in": source.dim,
            "dim_out": dim_out,
        },
        compute=compute,
        streaming={
            "shards": len(source.shards),
            "resumed_shards": len(source.shards) - len(todo),
            "image_dtype": image_dtype,
            "text_dtype": text_dtype,
            **engine.describe(),
        },
    )
    write_json(staging / SUMMARY, summary)
    shutil.rmtree(staging / ".done")
    (staging / JOB).unlink()
    swap_in(staging, out, "--out", replacing)
    return summary
