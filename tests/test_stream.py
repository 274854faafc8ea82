"""Out-of-core and distributed passes (modgap.stream) against the in-memory results.

Generated clip-retrieval folders (float16, zero-padded shard names, metadata with extra
columns): the streaming and the Dask results must equal the in-memory ones — moment measures
to float64 round-off, sampled estimates exactly when the sample is the whole set and equal to
a dense reference on the sampled queries otherwise, transforms row for row, output folders in
the input's layout — on local paths and ``memory://``; an interrupted reduce resumes.
"""

from __future__ import annotations

import contextlib
import json
import os
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import _references as ref
from conftest import gapped_pairs
from modgap.compute import Compute
from modgap.embeddings import EmbeddingSet
from modgap.errors import InputError, ModgapError, ModgapNotice
from modgap.files import MANIFEST
from modgap.io import read_embeddings, write_embeddings
from modgap.measures import measure_all
from modgap.stream import LocalEngine, open_source, stream_measures, stream_retrieval
from modgap.stream.engines import tree_order

MOMENT_KEYS = (
    "centroid_gap",
    "centroid_cosine",
    "gap_dims_50",
    "gap_dims_90",
    "rmg",
    "frechet_distance",
    "alignment",
    "matched_cosine_mean",
    "matched_cosine_std",
    "unmatched_cosine_mean",
    "unmatched_cosine_std",
)
SMALL = Compute(memory_budget="4MiB")  # many row blocks per shard


def make_folder(root: Path, n: int, d: int, shards: int, seed: int = 0) -> tuple:
    """A clip-retrieval folder as clip-inference writes it: float16 shards named
    ``img_emb_00`` ..., metadata with image_path, caption, url and a float column."""
    x, y = gapped_pairs(n, d, seed=seed)
    for sub in ("img_emb", "text_emb", "metadata"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    b = np.linspace(0, n, shards + 1).astype(int)
    width = len(str(shards))
    for i in range(shards):
        sid = str(i).zfill(width)
        rows = range(b[i], b[i + 1])
        np.save(root / "img_emb" / f"img_emb_{sid}.npy", x[b[i] : b[i + 1]].astype(np.float16))
        np.save(root / "text_emb" / f"text_emb_{sid}.npy", y[b[i] : b[i + 1]].astype(np.float16))
        meta = {
            "image_path": [f"im{r}.jpg" for r in rows],
            "caption": [f"caption {r}" for r in rows],
            "url": [f"http://x/{r}" for r in rows],
            "similarity": [0.3] * len(rows),
        }
        pq.write_table(pa.table(meta), root / "metadata" / f"metadata_{sid}.parquet")
    return x, y


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    root = tmp_path_factory.mktemp("big") / "cr"
    make_folder(root, 100_000, 64, 13)
    return root


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    root = tmp_path_factory.mktemp("small") / "cr"
    make_folder(root, 1_500, 16, 4, seed=2)
    return root


def _have_dask() -> bool:
    try:
        import distributed  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture(scope="module")
def dask_engine():
    """A local cluster of 2 workers (threads: quick to start), or None without the extra (the
    local halves of the tests still run; test_dask_engine_is_installed reports the skip)."""
    if not _have_dask():
        yield None
        return
    from modgap.stream import DaskEngine

    with DaskEngine(n_workers=2, processes=False) as e:
        yield e


def test_dask_engine_is_installed(dask_engine):
    if dask_engine is None:
        pytest.skip("dask.distributed is not installed (the 'scale' extra): Dask halves skipped")
    assert dask_engine.n_workers() == 2


def _read(path) -> EmbeddingSet:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ModgapNotice)
        return read_embeddings(path)


def _close(a, b, rtol=1e-9):
    for k in MOMENT_KEYS:
        assert np.isclose(a[k], b[k], rtol=rtol, atol=1e-12), (k, a[k], b[k])


# -- the merge tree --------------------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 13, 31])
def test_local_fold_is_the_dask_tree(n):
    got = LocalEngine().reduce(str, list(range(n)), lambda a, b: f"({a},{b})")
    slots = [str(i) for i in range(n)]
    for _, a, b in tree_order(n):
        slots.append(f"({slots[a]},{slots[b]})")
    assert got == slots[-1]


# -- the source ------------------------------------------------------------------------------
def test_source_keeps_clip_retrieval_order_and_layout(big):
    src = open_source(big)
    assert [s.name for s in src.shards] == [f"{i:02d}" for i in range(13)]
    assert src.n_images == src.n_texts == 100_000 and src.dim == 64
    assert src.layout["image_dtype"] == "float16"
    assert src.layout["metadata_columns"] == ["image_path", "caption", "url", "similarity"]
    assert src.nbytes == 2 * 100_000 * 64 * 2  # float16 stays float16 on disk
    emb = _read(big)
    idx = np.array([0, 7691, 7692, 50_000, 99_999])
    np.testing.assert_array_equal(src.gather("image", idx), emb.image_emb[idx])


def test_bad_row_names_the_shard(tmp_path):
    make_folder(tmp_path / "cr", 300, 8, 3)
    f = tmp_path / "cr/text_emb/text_emb_2.npy"
    a = np.load(f)
    a[5] = np.nan
    np.save(f, a)
    with pytest.raises(InputError, match=r"text_emb_2\.npy.*NaN/inf in row 5"):
        stream_measures(open_source(tmp_path / "cr"), "centroid")


# -- measures ----------------------------------------------------------------------------
def test_moment_measures_equal_in_memory_local_and_dask(big, dask_engine):
    only = ["centroid", "per_dimension", "rmg", "frechet_distance", "alignment"]
    ref = measure_all(_read(big), only=[*only, "cosine"])
    src = open_source(big)
    local = stream_measures(src, only, compute=SMALL)
    # the unmatched-cosine moments need no sample; its quantiles are left to other tests
    local.update(stream_measures(src, ["cosine"], compute=SMALL, sample_queries=200))
    _close(ref, local)
    assert local["per_dimension"]["top_dims"] == ref["per_dimension"]["top_dims"]
    if dask_engine is None:
        return
    dask = stream_measures(src, only, compute=SMALL, engine=dask_engine)
    for k in ("centroid_gap", "frechet_distance", "rmg", "alignment"):
        assert dask[k] == local[k]  # the same merge tree: the same bits


def test_whole_set_sample_is_exact(small, dask_engine):
    emb = _read(small)
    ref = measure_all(emb)
    got = stream_measures(open_source(small), compute=SMALL)
    _close(ref, got)
    for k in ("itr", "tir", "tmr", "imr", "linear_separability"):
        assert got[k] == ref[k], k
        if k in got["estimates"]:
            est = got["estimates"][k]
            assert est["exact"] and est["interval"] == [got[k], got[k]]
    for k in ("uniformity_image", "uniformity_text", "uniformity_cross"):
        # one kernel (uniformity_block_sum) on the same float64 unit rows: round-off only
        assert got[k] == pytest.approx(ref[k], rel=1e-12)
    for side in ("matched_cosine", "unmatched_cosine"):
        for q in ("q05", "q50", "q95"):
            assert got[side][q] == pytest.approx(ref[side][q], abs=1e-12)
    if dask_engine is None:
        return
    dask = stream_measures(open_source(small), compute=SMALL, engine=dask_engine)
    for k in ("itr", "tmr", "imr", "uniformity_cross"):
        assert dask[k] == got[k]


def _dense_reference(X, Y, I):
    """ITR numerator and mean rank for image queries I, from the full float64 matrices."""
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    Yn = Y / np.linalg.norm(Y, axis=1, keepdims=True)
    Sxy = Xn[I] @ Yn.T
    Sxx = Xn[I] @ Xn.T
    Sxx[np.arange(I.size), I] = -np.inf
    best = Sxy.max(1)
    ahead = (Sxx > best[:, None] + 1e-12).sum(1)
    return (
        int((ahead > 0).sum()),
        float((ahead + 1).mean()),
        float(np.log(np.exp(4 * Sxy - 4).mean())),
    )


def test_sampled_estimates_equal_a_dense_reference_and_cover_the_truth(small):
    emb = _read(small)
    full = measure_all(emb, only=["neighbours", "uniformity"])
    got = stream_measures(
        open_source(small), ["neighbours", "uniformity"], sample_queries=400, compute=SMALL
    )
    from modgap.stream.measures import sample_index

    I = sample_index(emb.n_images, 400, 0)
    same, tmr, ucross = _dense_reference(emb.image_emb.astype(np.float64), emb.text_emb, I)
    assert got["itr"] == pytest.approx(same / (400 - same))
    assert got["tmr"] == pytest.approx(tmr)
    assert got["uniformity_cross"] == pytest.approx(ucross, abs=1e-6)
    for k in ("itr", "tir", "tmr", "imr", "uniformity_image", "uniformity_cross"):
        est = got["estimates"][k]
        assert est["sample"] == 400 and est["population"] == 1_500 and not est["exact"]
        lo, hi = est["interval"]
        assert lo <= full[k] <= hi, (k, full[k], est)


def test_memory_filesystem_equals_local(small):
    fsspec = pytest.importorskip("fsspec", reason="fsspec paths need the 'scale' extra")
    fs = fsspec.filesystem("memory")
    for p in Path(small).rglob("*"):
        if p.is_file():
            with fs.open(f"memory://cr/{p.relative_to(small)}", "wb") as f:
                f.write(p.read_bytes())
    local = stream_measures(open_source(small), sample_queries=300, compute=SMALL)
    remote = stream_measures(open_source("memory://cr"), sample_queries=300, compute=SMALL)
    for k in (*MOMENT_KEYS, "itr", "tmr", "linear_separability"):
        assert remote[k] == local[k], k


def test_retrieval_whole_set_equals_in_memory(small, dask_engine):
    from modgap.tasks.mixed import mixed_search_metrics
    from modgap.tasks.retrieval import retrieval_metrics

    emb = _read(small)
    ref = retrieval_metrics(emb.image_emb, emb.text_emb, emb.text_to_image)
    ref.update(mixed_search_metrics(emb.image_emb, emb.text_emb, emb.text_to_image))
    got = stream_retrieval(open_source(small), compute=SMALL)
    for k, v in ref.items():
        assert got[k] == pytest.approx(v, abs=1e-12), k
    if dask_engine is None:
        return
    dask = stream_retrieval(open_source(small), compute=SMALL, engine=dask_engine)
    assert {k: dask[k] for k in ref} == {k: got[k] for k in ref}


# -- reduce: faithful folders, resume ------------------------------------------------------
def _layout(folder: Path) -> dict:
    out = {}
    for sub in ("img_emb", "text_emb", "metadata"):
        for f in sorted((folder / sub).iterdir()):
            if f.suffix == ".npy":
                a = np.load(f, mmap_mode="r")
                out[f"{sub}/{f.name}"] = (a.shape, a.dtype.name)
            else:
                out[f"{sub}/{f.name}"] = f.read_bytes()
    return out


def test_reduce_center_is_faithful_and_engines_agree(big, tmp_path, dask_engine):
    from modgap.reducers import load_reducer
    from modgap.workflow import reduce_to_folder

    mem = reduce_to_folder("center", big, out=tmp_path / "mem", stream=False)
    st = reduce_to_folder("center", big, out=tmp_path / "st", stream=True, compute=SMALL)
    outs = ["mem", "st"]
    if dask_engine is not None:
        reduce_to_folder("center", big, out=tmp_path / "dk", engine=dask_engine, compute=SMALL)
        outs.append("dk")
    ref = _layout(big)
    for out in outs:
        assert _layout(tmp_path / out) == ref  # names, shapes, float16, metadata bytes
    assert mem["fitted_on"]["rows"] == st["fitted_on"]["rows"] == "all"
    for sub in ("img_emb", "text_emb"):
        for f in sorted((tmp_path / "st" / sub).iterdir()):
            a = np.load(f)
            if "dk" in outs:  # local and Dask: identical rows
                np.testing.assert_array_equal(a, np.load(tmp_path / "dk" / sub / f.name))
            # exact means on the rows the set holds: the same bytes as the in-memory reduce
            np.testing.assert_array_equal(a, np.load(tmp_path / "mem" / sub / f.name))
    # the transform applied row for row: the in-memory reducer on the in-memory rows
    r = load_reducer(tmp_path / "mem" / "reducer.safetensors")
    emb = _read(big)
    back = _read(tmp_path / "mem")
    np.testing.assert_array_equal(
        back.image_emb, r.transform_images(emb.image_emb).astype(np.float16).astype(np.float32)
    )
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())


@pytest.fixture(scope="module")
def off_norm(tmp_path_factory):
    """A float16 folder with some rows far from unit norm (the row preparation divides those,
    in float32, on every route) and uneven shards."""
    root = tmp_path_factory.mktemp("off") / "cr"
    make_folder(root, 3_000, 24, 5, seed=7)
    f = root / "img_emb" / "img_emb_1.npy"
    a = np.load(f)
    a[::7] *= np.float16(1.5)
    np.save(f, a)
    return root


@pytest.mark.parametrize("name", ["center", "shift", "gaussian", "procrustes"])
def test_moment_fits_do_not_depend_on_route_or_budget(off_norm, tmp_path, dask_engine, name):
    """In memory, streamed at two memory budgets, and on Dask: ``center`` and ``shift`` (exact
    means) write the same bytes; ``gaussian`` and ``procrustes`` (scatter and cross moments
    merged in float64) fit the same arrays to 1e-10 relative (the round-off of merged sums,
    amplified by matrix roots and SVDs) and the same float16 outputs up to one unit on a
    handful of values."""
    from modgap.reducers import load_reducer
    from modgap.workflow import reduce_to_folder

    routes = {
        "mem": {"stream": False},
        "st": {"stream": True},
        "tiny": {"stream": True, "compute": Compute(memory_budget="1MiB")},
    }
    if dask_engine is not None:
        routes["dk"] = {"engine": dask_engine, "compute": SMALL}
    for out, kw in routes.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ModgapNotice)
            reduce_to_folder(name, off_norm, out=tmp_path / out, **kw)
    models = {out: load_reducer(tmp_path / out / "reducer.safetensors") for out in routes}
    exact = name in ("center", "shift")
    for attr in type(models["mem"]).fitted_arrays:
        want = getattr(models["mem"], attr)
        for out, m in models.items():
            got = getattr(m, attr)
            if exact:
                np.testing.assert_array_equal(got, want, err_msg=f"{attr} {out}")
            else:
                np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12, err_msg=attr)
    for sub in ("img_emb", "text_emb"):
        for f in sorted((tmp_path / "mem" / sub).iterdir()):
            want = np.load(f)
            for out in routes:
                got = np.load(tmp_path / out / sub / f.name)
                if exact:
                    np.testing.assert_array_equal(got, want, err_msg=f"{out}/{sub}/{f.name}")
                else:
                    diff = got.astype(np.float32) != want.astype(np.float32)
                    assert diff.mean() < 1e-3, (out, f.name, diff.mean())
                    np.testing.assert_allclose(got, want, atol=1e-3)


def test_streamed_procrustes_is_the_in_memory_fit_with_fewer_pairs_than_dims(tmp_path):
    """r < d: the rotation is not unique; both routes must pick the one closest to identity."""
    from modgap.reducers import get_reducer
    from modgap.stream.fit import fit_streaming

    root = tmp_path / "cr"
    make_folder(root, 12, 32, 3, seed=5)
    streamed = get_reducer("procrustes")
    fit_streaming(streamed, open_source(root))
    emb = _read(root)
    ref = get_reducer("procrustes").fit(emb)
    # both routes fit on the same float32 rows (one row preparation); the cross moment is
    # summed shard by shard, so float64 round-off remains. The old streamed rotation (U Vᵀ of
    # a rank-12 moment) was off by up to 0.98
    np.testing.assert_allclose(streamed.rotation_, ref.rotation_, atol=1e-10)


def test_interrupted_reduce_resumes_skipping_finished_shards(small, tmp_path, monkeypatch):
    from modgap.workflow import reduce_to_folder
    from modgap.workflow import shard as shard_kernels

    reduce_to_folder("gaussian", small, out=tmp_path / "ref", stream=True)
    real = shard_kernels.transform_kernel
    calls: list[str] = []

    def flaky(shard, *args):
        calls.append(shard.name)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(shard, *args)

    monkeypatch.setattr(shard_kernels, "transform_kernel", flaky)
    with pytest.raises(KeyboardInterrupt):
        reduce_to_folder("gaussian", small, out=tmp_path / "out", stream=True)
    assert not (tmp_path / "out").exists()  # nothing half-written at --out
    assert sorted(os.listdir(tmp_path / ".out.partial" / ".done")) == ["0", "1"]
    # a worker killed mid-write leaves its temporary (a dead pid in its name) beside the shard
    shard2 = sorted((small / "img_emb").iterdir())[2].name
    stale = tmp_path / ".out.partial" / "img_emb" / f".{shard2}.999999999.x.tmp.npy"
    stale.write_bytes(b"half a shard")
    calls.clear()
    with pytest.warns(ModgapNotice, match="2 of 4 shards already written"):
        s = reduce_to_folder("gaussian", small, out=tmp_path / "out", stream=True)
    assert calls == ["2", "3"] and s["streaming"]["resumed_shards"] == 2
    for sub in ("img_emb", "text_emb"):
        for f in sorted((tmp_path / "ref" / sub).iterdir()):
            np.testing.assert_array_equal(np.load(f), np.load(tmp_path / "out" / sub / f.name))
    assert not (tmp_path / ".out.partial").exists()
    # no temporaries reach the output (only the list of the files modgap wrote)
    assert [p.name for p in (tmp_path / "out").rglob(".*")] == [MANIFEST]


def test_resume_redoes_shards_whose_files_were_removed_or_cut(small, tmp_path, monkeypatch):
    """A ``.done`` marker counts only while the files it lists are there at their sizes."""
    from modgap.workflow import reduce_to_folder
    from modgap.workflow import shard as shard_kernels

    reduce_to_folder("center", small, out=tmp_path / "ref", stream=True)
    real = shard_kernels.transform_kernel
    calls: list[str] = []

    def flaky(shard, *args):
        calls.append(shard.name)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real(shard, *args)

    monkeypatch.setattr(shard_kernels, "transform_kernel", flaky)
    with pytest.raises(KeyboardInterrupt):
        reduce_to_folder("center", small, out=tmp_path / "out", stream=True)
    staging = tmp_path / ".out.partial"
    assert sorted(os.listdir(staging / ".done")) == ["0", "1", "2"]
    shards = sorted((staging / "img_emb").iterdir())
    shards[0].unlink()  # shard 0: its image file is gone
    texts = sorted((staging / "text_emb").iterdir())[1]
    texts.write_bytes(texts.read_bytes()[:-64])  # shard 1: its text file is cut short
    calls.clear()
    with pytest.warns(ModgapNotice) as notes:
        s = reduce_to_folder("center", small, out=tmp_path / "out", stream=True)
    said = " ".join(str(n.message) for n in notes)
    assert "shard 0 changed" in said and "shard 1 changed" in said, said
    assert sorted(calls) == ["0", "1", "3"] and s["streaming"]["resumed_shards"] == 1
    for sub in ("img_emb", "text_emb"):
        for f in sorted((tmp_path / "ref" / sub).iterdir()):
            np.testing.assert_array_equal(np.load(f), np.load(tmp_path / "out" / sub / f.name))


def test_reduce_refuses_foreign_folder_before_work(small, tmp_path):
    from modgap.workflow import reduce_to_folder

    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("x")
    with pytest.raises(ModgapError, match="did not write"):
        reduce_to_folder("center", small, out=tmp_path / "mine", stream=True)
    with pytest.raises(ModgapError, match="never writes over its inputs"):
        reduce_to_folder("center", small, out=small / "img_emb", stream=True)


def test_spectral_fits_on_a_stated_sample(small, tmp_path):
    from modgap.workflow import reduce_to_folder

    s = reduce_to_folder(
        "spectral",
        small,
        out=tmp_path / "sp",
        stream=True,
        fit_sample=500,
        params={"n_components": 8},
    )
    assert s["fitted_on"]["rows"] == "sample" and s["fitted_on"]["n_images"] == 500
    back = _read(tmp_path / "sp")
    assert back.image_emb.shape == (1_500, 8) and back.n_texts == 1_500


# -- the multi-caption layout and the in-memory writer ------------------------------------
def test_multi_caption_layout_round_trip_and_stream(tmp_path):
    x, _ = gapped_pairs(40, 8, seed=1)
    _, y = gapped_pairs(100, 8, seed=2)
    t2i = np.random.default_rng(0).integers(0, 40, 100)
    t2i[:40] = np.arange(40)  # every image has a caption
    emb = EmbeddingSet(
        x,
        y,
        text_to_image=t2i,
        texts=[f"c{i}" for i in range(100)],
        image_ids=[f"i{i}" for i in range(40)],
    )
    write_embeddings(emb, tmp_path / "mc", shard_size=15, dtype="float16")
    root = tmp_path / "mc"
    assert not (root / "extra.npz").exists()
    tm = pq.read_table(root / "text_metadata" / "text_metadata_0.parquet")
    assert tm.column_names == ["image_index", "caption"]
    n_img = sum(np.load(f).shape[0] for f in (root / "img_emb").iterdir())
    n_txt = sum(pq.read_metadata(f).num_rows for f in (root / "text_metadata").iterdir())
    assert n_img == 40 and n_txt == 100  # each folder row-aligned with its embeddings
    back = _read(root)
    np.testing.assert_array_equal(back.text_to_image, t2i)
    assert back.texts == emb.texts and back.image_ids == emb.image_ids
    src = open_source(root)
    assert src.pairing == "index"
    ref = measure_all(back, only=["rmg", "alignment", "centroid"])
    got = stream_measures(src, ["rmg", "alignment", "centroid"])
    for k in ("rmg", "alignment", "centroid_gap"):
        assert got[k] == pytest.approx(ref[k], rel=1e-9)


def test_writer_pads_names_and_mirrors_a_read_folder(small, tmp_path):
    x, y = gapped_pairs(130, 8)
    write_embeddings(EmbeddingSet(x, y), tmp_path / "p", shard_size=10)
    assert sorted(os.listdir(tmp_path / "p/img_emb"))[:3] == [
        "img_emb_00.npy",
        "img_emb_01.npy",
        "img_emb_02.npy",
    ]
    emb = _read(small)
    write_embeddings(emb, tmp_path / "copy")  # no dtype: the input's float16, its shards
    assert _layout(tmp_path / "copy") == _layout(small)


# -- interoperability: embedding-reader reads modgap's folders -----------------------------
def test_embedding_reader_reads_modgap_output(big, tmp_path):
    er = pytest.importorskip("embedding_reader", reason="embedding-reader is in the dev extra")
    from modgap.workflow import reduce_to_folder

    reduce_to_folder("center", big, out=tmp_path / "out", stream=True)
    out = tmp_path / "out"
    for sub in ("img_emb", "text_emb"):
        reader = er.EmbeddingReader(str(out / sub), file_format="npy")
        assert reader.count == 100_000 and reader.dimension == 64
        got = np.concatenate([b for b, _ in reader(batch_size=30_000, show_progress=False)])
        ours = np.concatenate([np.load(f) for f in sorted((out / sub).iterdir())])
        np.testing.assert_array_equal(got, ours.astype(np.float32))
    reader = er.EmbeddingReader(
        str(out / "img_emb"),
        file_format="parquet_npy",
        metadata_folder=str(out / "metadata"),
        meta_columns=["url"],
    )
    _, meta = next(reader(batch_size=100_000, show_progress=False))
    assert list(meta["url"][:2]) == ["http://x/0", "http://x/1"]


def test_embedding_reader_reads_parquet_shard_folders(tmp_path):
    er = pytest.importorskip("embedding_reader", reason="embedding-reader is in the dev extra")
    from modgap.workflow import reduce_to_folder

    x, y = gapped_pairs(500, 16, seed=4)
    root = tmp_path / "pq"
    for sub in ("img_emb", "text_emb"):
        (root / sub).mkdir(parents=True)
    for i, s in enumerate(np.array_split(np.arange(500), 3)):
        for sub, a in (("img_emb", x), ("text_emb", y)):
            vec = pa.FixedSizeListArray.from_arrays(pa.array(a[s].reshape(-1)), 16)
            pq.write_table(
                pa.table({"embedding": vec, "key": [f"k{r}" for r in s]}),
                root / sub / f"{sub}_{i}.parquet",
            )
    reduce_to_folder("shift", root, out=tmp_path / "out", stream=True)
    reader = er.EmbeddingReader(
        str(tmp_path / "out" / "img_emb"),
        file_format="parquet",
        embedding_column="embedding",
        meta_columns=["key"],
    )
    assert reader.count == 500 and reader.dimension == 16
    emb, meta = next(reader(batch_size=500, show_progress=False))
    assert list(meta["key"][:3]) == ["k0", "k1", "k2"]
    back = _read(tmp_path / "out")
    np.testing.assert_allclose(emb, back.image_emb, atol=1e-6)


# -- when a command streams on its own --------------------------------------------------------
def _synthetic(n: int, d: int, dtype: str = "float16", root: str = "/data/cr"):
    """A source record of ``n`` pairs × ``d`` dims (headers only: no file behind it)."""
    from modgap.stream import Part, Shard, Source

    img = Part(f"{root}/img_emb/img_emb_0.npy", "npy", n, d, dtype, 128)
    txt = Part(f"{root}/text_emb/text_emb_0.npy", "npy", n, d, dtype, 128)
    return Source(root, "clip-retrieval", (Shard(0, "0", img, txt),), "rows")


def test_auto_stream_decides_from_the_predicted_in_memory_peak():
    from modgap.io.auto import IN_MEMORY_BASE, in_memory_peak, should_stream, stream_reason

    c = Compute()  # a 512 MiB working memory for the blocked kernels
    big = _synthetic(10**6, 256)  # 2.048 GB as float32: measured in memory at 8.58 GB
    assert big.float32_bytes == 2_048_000_000
    peak = in_memory_peak(big, "measure", c)
    assert peak == IN_MEMORY_BASE + 4 * 2_048_000_000 + (512 << 20)
    assert 8.58e9 < peak < 1.1 * 8.58e9  # the model covers the measured peak, tightly
    assert in_memory_peak(_synthetic(10**6, 256, "float32"), "measure", c) == peak  # widened
    # the data term (8.2 GB) against a quarter of what is available now
    assert should_stream(big, compute=c, available=22 * 10**9)  # 22 GB free of 24.7
    assert should_stream(big, compute=c, available=32 * 10**9)
    assert not should_stream(big, compute=c, available=33 * 10**9)
    why = stream_reason(big, compute=c, available=32 * 10**9)
    assert why == (
        "in memory they would take ≈8.2 GB (2.0 GB as float32 and its copies; ≈9.1 GB at "
        "peak), above the in-memory limit (8.0 GB: 25% of the 32.0 GB available now)"
    )
    # the command's own working set: reduce fits in memory where measure would not
    assert not should_stream(big, command="reduce", compute=c, available=10 * 10**9)
    assert should_stream(big, command="reduce", compute=c, available=9 * 10**9)
    # small sets stay in memory on a small or busy machine (the interpreter and the kernels'
    # working memory are paid by the streamed route too); nothing fits in 1 MB
    assert not should_stream(_synthetic(10**4, 256), compute=c, available=4 * 10**8)
    assert should_stream(_synthetic(10**4, 256), compute=c, available=10**6)
    # not on a local disk: always; a fixed float32 limit instead of the model
    assert stream_reason(_synthetic(100, 8, root="memory://cr"), available=10**12) == (
        "not on a local disk"
    )
    assert should_stream(big, 10**9) and not should_stream(big, 10**10)


def test_available_memory_is_what_the_system_says_now():
    from modgap.io._errors import machine_memory
    from modgap.io.auto import available_memory, memory_limit

    avail = available_memory()
    assert 0 < avail <= machine_memory() or not os.path.exists("/proc/meminfo")
    assert memory_limit(10**10) == 25 * 10**8


# -- the command line --------------------------------------------------------------------
def test_cli_streams_automatically_above_the_limit(small, tmp_path, monkeypatch, capsys):
    import json

    import modgap.io.auto as auto
    from modgap.cli import main

    monkeypatch.setattr(auto, "available_memory", lambda: 10**6)  # a machine with 1 MB free
    rc = main(["measure", str(small), "--only", "centroid", "--json", str(tmp_path / "m.json")])
    err = capsys.readouterr().err
    assert rc == 0 and "above the in-memory limit" in err and err.count("notice:") == 1
    doc = json.loads((tmp_path / "m.json").read_text())
    ref = measure_all(_read(small), only="centroid")
    assert doc["measures"]["centroid_gap"] == pytest.approx(ref["centroid_gap"], rel=1e-12)
    rc = main(
        [
            "reduce",
            "center",
            str(small),
            "--out",
            str(tmp_path / "r"),
            "--stream",
            "--fit-sample",
            "50",
            "-q",
        ]
    )
    assert rc == 0 and _layout(tmp_path / "r") == _layout(small)


def test_cli_scheduler_without_dask_engine_is_a_usage_error(small, capsys):
    from modgap.cli import main

    assert main(["measure", str(small), "--scheduler", "tcp://127.0.0.1:1"]) == 2
    assert "--scheduler needs --engine dask" in capsys.readouterr().err


def test_streamed_eval_refuses_what_needs_the_set_in_memory(small, capsys):
    from modgap.cli import main

    assert main(["eval", str(small), "--stream", "--encoder", "pocket", "-q"]) == 2
    assert "--encoder needs the set in memory" in capsys.readouterr().err


def test_streamed_eval_with_folds_equals_the_in_memory_eval(small, tmp_path):
    from modgap.cli import main

    got = {}
    for route in ("streamed", "memory"):
        out = tmp_path / f"{route}.json"
        flag = ["--stream", "--sample-queries", "100000"] if route == "streamed" else []
        argv = ["eval", str(small), *flag, "--tasks", "retrieval", "--folds", "2", "--k", "1,5"]
        assert main([*argv, "--json", str(out), "-q"]) == 0
        got[route] = json.loads(out.read_text())["tasks"]
    mem, st = got["memory"], got["streamed"]
    for key in ("image_retrieval_recall@1", "text_retrieval_recall@5", "rsum"):
        assert st[key] == pytest.approx(mem[key], rel=1e-12), key


def test_search_topk_equals_a_dense_reference(small):
    from modgap._array import prepare_rows
    from modgap.stream import search_topk

    def task_rows(x):
        return prepare_rows(x, "rows", unit="exact")

    emb = _read(small)
    src = open_source(small)
    q = task_rows(emb.text_emb[:20]).astype(np.float64)
    ids, scores = search_topk(src, emb.text_emb[:20], 5, modality="image", compute=SMALL)
    S = q @ task_rows(emb.image_emb).T.astype(np.float64)
    np.testing.assert_array_equal(ids, np.argsort(-S, axis=1, kind="stable")[:, :5])
    np.testing.assert_allclose(scores, np.sort(S, axis=1)[:, ::-1][:, :5], atol=1e-12)
    ids, _ = search_topk(src, emb.text_emb[:20], 5, compute=SMALL)  # mixed: texts at n_i + j
    Z = task_rows(np.vstack([emb.image_emb, emb.text_emb])).astype(np.float64)
    np.testing.assert_array_equal(ids, np.argsort(-(q @ Z.T), axis=1, kind="stable")[:, :5])


def test_apply_a_saved_reducer_to_a_folder(small, tmp_path):
    from modgap.workflow import reduce_to_folder

    reduce_to_folder("gaussian", small, out=tmp_path / "fit", stream=True)
    s = reduce_to_folder(
        None,
        small,
        out=tmp_path / "app",
        apply=tmp_path / "fit" / "reducer.safetensors",
        stream=True,
    )
    assert s["mode"] == "apply" and not (tmp_path / "app" / "reducer.safetensors").exists()
    for f in sorted((tmp_path / "fit" / "img_emb").iterdir()):
        np.testing.assert_array_equal(np.load(f), np.load(tmp_path / "app" / "img_emb" / f.name))


@pytest.mark.parametrize(
    "index, message",
    [([0, 1, 2, 99], "points outside the 4 images"), ([0, 1, None, 2], "empty entries")],
)
def test_parquet_pairing_column_is_checked_as_in_memory(tmp_path, index, message):
    from modgap.errors import InputError

    X = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
    p = tmp_path / "x.parquet"
    table = {"image_emb": list(X), "text_emb": list(X), "text_to_image": index}
    pq.write_table(pa.table(table), p)
    with pytest.raises(InputError, match=message):
        open_source(p)


# -- ties: the streamed scans decide them as the in-memory kernels do ------------------------
@pytest.fixture(scope="module")
def tied(tmp_path_factory):
    """Images with exact duplicates (ties in real arithmetic), in shards of uneven size."""
    root = tmp_path_factory.mktemp("tied") / "cr"
    rng = np.random.default_rng(7)
    base = rng.normal(size=(60, 16))
    X = ref.unit32(base[rng.integers(0, 60, 300)])  # every image has duplicates
    Y = ref.unit32(X + 0.35 * rng.normal(size=X.shape))
    (root / "img_emb").mkdir(parents=True)
    (root / "text_emb").mkdir()
    for i, (a, b) in enumerate([(0, 37), (37, 200), (200, 300)]):
        np.save(root / "img_emb" / f"img_emb_{i}.npy", X[a:b])
        np.save(root / "text_emb" / f"text_emb_{i}.npy", Y[a:b])
    return root


@pytest.mark.parametrize("threads", ref.THREADS)
@pytest.mark.parametrize("block", ref.BLOCKS)
def test_streamed_retrieval_and_search_on_ties_match_in_memory(tied, block, threads, monkeypatch):
    from modgap._array import prepare_rows
    from modgap.compute import limit_threads
    from modgap.stream import search_topk
    from modgap.tasks.mixed import mixed_search_metrics
    from modgap.tasks.retrieval import retrieval_metrics

    def task_rows(x):
        return prepare_rows(x, "rows", unit="exact")

    emb = _read(tied)
    want = retrieval_metrics(emb.image_emb, emb.text_emb, emb.text_to_image)
    want.update(mixed_search_metrics(emb.image_emb, emb.text_emb, emb.text_to_image))
    # every pool row block the scans cut holds `block` rows
    monkeypatch.setattr(Compute, "rows_per_block", lambda self, row_bytes, **kw: block)
    compute = Compute()
    with limit_threads(threads):
        got = stream_retrieval(open_source(tied), sample_queries=None, compute=compute)
        ids, _ = search_topk(
            open_source(tied), emb.text_emb[:40], 5, modality="image", compute=compute
        )
    for k, v in want.items():  # a tie decided otherwise moves a recall by at least 1/300
        assert got[k] == pytest.approx(v, abs=1e-12), k
    q = task_rows(emb.text_emb[:40]).astype(np.float64)
    S = q @ task_rows(emb.image_emb).T.astype(np.float64)
    np.testing.assert_array_equal(ids, ref.exact_topk_rows(S, 5))


def test_npy_pair_names_with_a_comma_reduce_out_of_core(tmp_path):
    from modgap.workflow import reduce_to_folder

    X, Y = gapped_pairs(n=30, d=8, seed=4)
    np.save(tmp_path / "img, v2.npy", X)
    np.save(tmp_path / "txt, v2.npy", Y)
    src = [str(tmp_path / "img, v2.npy"), str(tmp_path / "txt, v2.npy")]
    reduce_to_folder("center", *src, out=tmp_path / "out", stream=True)
    got = np.load(tmp_path / "out" / "img, v2.npy")
    assert got.shape == X.shape and (tmp_path / "out" / "txt, v2.npy").is_file()


def test_balanced_accuracy_interval_weights_each_class_by_its_own_rows():
    from modgap.stream.intervals import Z, balanced_interval

    lo, hi = balanced_interval([(90, 100), (5, 10)])  # recalls 0.9 and 0.5: mean 0.7
    half = Z * np.sqrt(0.9 * 0.1 / 100 + 0.5 * 0.5 / 10) / 2
    assert lo == pytest.approx(0.7 - half, rel=0.05) and hi == pytest.approx(0.7 + half, rel=0.05)
    # a count-weighted (plain accuracy) interval would centre on 95/110 = 0.86 instead
    assert lo < 0.7 < hi < 95 / 110 + 0.1
    lo, hi = balanced_interval([(10, 10), (10, 10)])  # perfect on few rows: not a zero width
    assert hi == 1.0 and lo < 0.95


# -- a Dask run never waits silently ---------------------------------------------------------
def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(
    ("address", "message"),
    [
        ("notanaddress", "not a Dask scheduler address"),
        ("udp://127.0.0.1:8786", "unknown scheme 'udp://'"),
        ("tcp://127.0.0.1:99999", "not a Dask scheduler address"),
        ("tcp://10.255.255.1", "not a Dask scheduler address"),  # no port: checked, not dialled
    ],
)
def test_scheduler_address_is_checked_without_contacting_it(address, message):
    from modgap.stream.engines import check_scheduler_address

    with pytest.raises(ModgapError, match=message):
        check_scheduler_address(address)
    for good in ("tcp://10.255.255.1:8786", "127.0.0.1:8786", "tls://[::1]:8786", "inproc://x"):
        assert check_scheduler_address(good) == good


def test_dask_closed_port_fails_within_the_connect_timeout():
    if not _have_dask():
        pytest.skip("dask.distributed is not installed")
    import time

    from modgap.stream import DaskEngine

    address = f"tcp://127.0.0.1:{_free_port()}"  # nothing listens there
    t0 = time.monotonic()
    with pytest.raises(ModgapError, match=r"cannot reach the Dask scheduler at .* within 2 s"):
        DaskEngine(address, connect_timeout=2)
    assert time.monotonic() - t0 < 10


def test_dask_cluster_without_workers_fails_before_submitting():
    if not _have_dask():
        pytest.skip("dask.distributed is not installed")
    import time

    from distributed import LocalCluster

    from modgap.stream import DaskEngine

    with LocalCluster(n_workers=0, processes=False, dashboard_address=None) as cluster:
        engine = DaskEngine(cluster.scheduler_address, worker_timeout=1)
        try:
            t0 = time.monotonic()
            with pytest.raises(ModgapError, match=r"has no workers \(waited 1 s\); start workers"):
                engine.map(time.sleep, [0.1])
            assert time.monotonic() - t0 < 10
        finally:
            engine.close()


@pytest.mark.parametrize("how", ["map", "reduce"])
def test_dask_workers_all_lost_mid_run_fail_in_one_line(how):
    if not _have_dask():
        pytest.skip("dask.distributed is not installed")
    import threading
    import time

    from distributed import LocalCluster

    from modgap.stream import DaskEngine

    with LocalCluster(
        n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1",
        dashboard_address=None, silence_logs=40,
    ) as cluster:  # fmt: skip
        engine = DaskEngine(cluster.scheduler_address, worker_timeout=2)
        killer = threading.Timer(1.0, cluster.scale, args=(0,))
        try:
            t0 = time.monotonic()
            killer.start()
            with pytest.raises(ModgapError) as e:  # tasks that would run 60 s if not stopped
                if how == "map":
                    engine.map(time.sleep, [60, 60])
                else:
                    engine.reduce(time.sleep, [60, 60, 60], max)
            assert time.monotonic() - t0 < 25
        finally:
            killer.join()
            engine.close()
    msg = str(e.value)
    assert "\n" not in msg
    assert f"the Dask cluster at {cluster.scheduler_address} has no workers (lost" in msg
    assert "start workers or use --engine local" in msg


@contextlib.contextmanager
def _process_cluster(cwd: Path | None = None):
    """A scheduler and one worker in their own processes on a free loopback port (the worker
    in folder ``cwd``): ``(address, scheduler_process)``."""
    import subprocess
    import sys

    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    scheduler = subprocess.Popen(
        [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
         "--port", str(port), "--dashboard-address", ":0", "--no-show"], **quiet,
    )  # fmt: skip
    worker = subprocess.Popen(
        [sys.executable, "-m", "distributed.cli.dask_worker", address, "--nthreads", "1",
         "--no-nanny", "--dashboard-address", ":0"], cwd=cwd, **quiet,
    )  # fmt: skip
    try:
        yield address, scheduler
    finally:
        for p in (scheduler, worker):
            p.kill()
            p.wait()


@pytest.mark.parametrize("how", ["map", "reduce"])
def test_dask_scheduler_killed_mid_run_fails_in_one_line(how):
    if not _have_dask():
        pytest.skip("dask.distributed is not installed")
    import threading
    import time

    from modgap.stream import DaskEngine

    with _process_cluster() as (address, scheduler):
        engine = DaskEngine(address, connect_timeout=20, worker_timeout=60)
        try:
            engine.client.wait_for_workers(1, timeout=20)
            killer = threading.Timer(1.0, scheduler.kill)
            t0 = time.monotonic()
            killer.start()
            with pytest.raises(ModgapError) as e:
                if how == "map":
                    engine.map(time.sleep, [60, 60])
                else:
                    engine.reduce(time.sleep, [60, 60, 60], max)
            assert time.monotonic() - t0 < 20  # long before the 60 s worker_timeout: said at once
            killer.join()
        finally:
            engine.close()
    assert str(e.value) == (
        f"lost the connection to the Dask cluster at {address} (the scheduler stopped or is "
        "unreachable); restart it and run again, or use --engine local"
    )


def test_dask_workers_in_another_folder_read_relative_inputs(small, tmp_path, monkeypatch):
    """The user gives paths relative to their folder; the worker runs in another one."""
    if not _have_dask():
        pytest.skip("dask.distributed is not installed")
    from modgap.stream import DaskEngine
    from modgap.workflow import reduce_to_folder

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    only = ["centroid", "rmg"]
    want = stream_measures(open_source(small), only, compute=SMALL)
    monkeypatch.chdir(small.parent)
    src = open_source("cr")
    for s in src.shards:
        for path in (s.image.path, s.text.path, s.metadata):
            assert os.path.isabs(path) and os.path.isfile(path), path
    assert src.path == "cr"  # what the user gave, for messages
    with _process_cluster(cwd=elsewhere) as (address, _):
        with DaskEngine(address, connect_timeout=20, worker_timeout=20) as engine:
            got = stream_measures(src, only, compute=SMALL, engine=engine)
            reduce_to_folder("center", "cr", out="reduced", engine=engine, compute=SMALL)
    for k in ("centroid_gap", "rmg"):
        assert got[k] == want[k]
    assert _layout(small.parent / "reduced") == _layout(small)
    assert not list(elsewhere.iterdir())  # nothing was written from the worker's folder


def test_dask_broadcast_to_a_cluster_without_workers_fails_in_one_line():
    if not _have_dask():
        pytest.skip("dask.distributed is not installed")
    import time

    from distributed import LocalCluster

    from modgap.stream import DaskEngine

    with LocalCluster(n_workers=0, processes=False, dashboard_address=None) as cluster:
        engine = DaskEngine(cluster.scheduler_address, worker_timeout=1)
        try:
            t0 = time.monotonic()
            with pytest.raises(ModgapError, match=r"has no workers \(waited 1 s\)"):
                engine.put(np.zeros(3))
            assert time.monotonic() - t0 < 10
        finally:
            engine.close()


def test_scan_pool_blocks_are_sized_from_the_queries_present(small, monkeypatch):
    # 200 queries under a 4 MiB budget: each shard's pool (375 rows) is one block, where sizing
    # from the 16,384 rows a query block may hold made blocks of 10 rows; same exact results
    from modgap.io.source import Source

    raw, yields = Source.raw_blocks, []

    def counted(self, shard, modality, rows):
        yields.append(0)
        for item in raw(self, shard, modality, rows):
            yields[-1] += 1
            yield item

    monkeypatch.setattr(Source, "raw_blocks", counted)
    keys = ("itr", "tir", "tmr", "imr")
    got = stream_measures(open_source(small), ["neighbours"], sample_queries=200, compute=SMALL)
    assert yields and set(yields) == {1}
    tiny = Compute(memory_budget="1MiB")  # several pool blocks per shard
    ref_ = stream_measures(open_source(small), ["neighbours"], sample_queries=200, compute=tiny)
    assert max(yields) > 1
    assert {k: got[k] for k in keys} == {k: ref_[k] for k in keys}
