"""The gap benchmark on a streamed source: split views of a source against
``EmbeddingSet.split``, the streamed bench against the in-memory one on the same splits, and
``modgap bench --stream``."""

from __future__ import annotations

import json
import math
import pickle

import numpy as np
import pytest

from modgap.bench import run_bench
from modgap.bench.stream import TransformedSource, run_bench_stream
from modgap.cli import main
from modgap.compute import Compute
from modgap.embeddings import EmbeddingSet
from modgap.io import read_embeddings, write_embeddings
from modgap.io.subset import SubsetSource, split_rows
from modgap.measures import MEASURES
from modgap.reducers import get_reducer
from modgap.stream import open_source
from test_stream import _have_dask, gapped_pairs, make_folder

SMALL = Compute(memory_budget="4MiB")  # several row blocks per shard
#: as tests/test_parity.py: both routes sum the uniformity kernel in float64 (one kernel)
LOOSE = {"uniformity_image": 1e-12, "uniformity_text": 1e-12, "uniformity_cross": 1e-12}


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    """A 3-shard clip-retrieval folder with labels and class prompts."""
    root = tmp_path_factory.mktemp("bench_stream") / "cr"
    x, _ = make_folder(root, 240, 16, 3, seed=4)
    rng = np.random.default_rng(4)
    classes = rng.normal(size=(5, 16)).astype(np.float32)
    labels = np.argmax(x @ classes.T + rng.normal(scale=0.5, size=(len(x), 5)), axis=1)
    np.savez(root / "extra.npz", labels=labels, class_text_emb=classes)
    return root


@pytest.fixture(scope="module")
def multi_caption(tmp_path_factory):
    """A multi-caption folder (pairing by ``image_index``), texts not in image order."""
    x, _ = gapped_pairs(60, 8, seed=1)
    _, y = gapped_pairs(150, 8, seed=2)
    t2i = np.random.default_rng(0).integers(0, 60, 150)
    t2i[:60] = np.arange(60)[::-1]
    root = tmp_path_factory.mktemp("mc") / "mc"
    write_embeddings(EmbeddingSet(x, y, text_to_image=t2i), root, shard_size=25, dtype="float16")
    return root


@pytest.fixture(scope="module")
def captionless(tmp_path_factory):
    """A multi-caption folder where 12 of the 60 images have no caption."""
    x, _ = gapped_pairs(60, 8, seed=3)
    _, y = gapped_pairs(90, 8, seed=6)
    t2i = np.random.default_rng(1).integers(0, 48, 90)
    root = tmp_path_factory.mktemp("cl") / "cl"
    write_embeddings(EmbeddingSet(x, y, text_to_image=t2i), root, shard_size=25)
    return root


def test_split_rows_is_the_rule_of_embedding_set_split(labelled):
    emb = read_embeddings(str(labelled))
    for seed, frac in ((0, 0.5), (3, 0.3)):
        fit, ev = emb.split(test_fraction=frac, seed=seed)
        f, e = split_rows(emb.n_images, frac, seed)
        np.testing.assert_array_equal(emb.image_emb[f], fit.image_emb)
        np.testing.assert_array_equal(emb.image_emb[e], ev.image_emb)


@pytest.mark.parametrize("which", ["labelled", "multi_caption"])
def test_subset_view_holds_the_rows_and_pairs_of_embedding_set_subset(which, request):
    root = request.getfixturevalue(which)
    emb, src = read_embeddings(str(root)), open_source(str(root))
    assert src.pairing == ("rows" if which == "labelled" else "index")
    f, e = split_rows(emb.n_images, 0.5, 1)
    for rows, ref in zip((f, e), emb.split(0.5, seed=1), strict=True):
        view = SubsetSource(src, rows)
        assert (view.n_images, view.n_texts) == (ref.n_images, ref.n_texts)
        np.testing.assert_array_equal(view.gather("image", np.arange(view.n_images)), ref.image_emb)
        # texts keep the source order; EmbeddingSet.subset orders them by image
        t2i = view.pairs()
        order = np.argsort(t2i, kind="stable")
        np.testing.assert_array_equal(t2i[order], ref.text_to_image)
        texts = view.gather("text", np.arange(view.n_texts))
        np.testing.assert_array_equal(texts[order], ref.text_emb)
        # the block readers give the same rows, shard by shard, renumbered in the view
        got = {"image": [], "text": []}
        for shard in view.shards:
            for m in got:
                blocks = list(view.blocks(shard, m, 7))
                starts = [s for s, _ in blocks]
                assert starts == sorted(starts) and all(b.shape[0] for _, b in blocks)
                got[m] += [b for _, b in blocks]
            if view.pairing == "index":
                np.testing.assert_array_equal(
                    view.shard_pairs(shard),
                    t2i[shard.text_start : shard.text_start + shard.n_texts],
                )
        np.testing.assert_array_equal(np.concatenate(got["image"]), ref.image_emb)
        np.testing.assert_array_equal(np.concatenate(got["text"]), texts)


def test_transformed_view_is_transform_set_of_the_subset(labelled):
    emb, src = read_embeddings(str(labelled)), open_source(str(labelled))
    _, e = split_rows(emb.n_images, 0.5, 0)
    fit, ev = emb.split(0.5, seed=0)
    red = get_reducer("shift").fit(fit)
    ref = red.transform_set(ev)
    view = TransformedSource(SubsetSource(src, e, {"labels": emb.labels}), red)
    np.testing.assert_array_equal(view.gather("image", np.arange(view.n_images)), ref.image_emb)
    rows = np.concatenate([b for s in view.shards for _, b, _ in view.raw_blocks(s, "text", 9)])
    np.testing.assert_array_equal(rows, ref.text_emb)
    np.testing.assert_array_equal(view.classes()["labels"], ref.labels)
    # an engine with workers ships the view to them (Dask pickles its task graph)
    back = pickle.loads(pickle.dumps(view))
    np.testing.assert_array_equal(back.gather("image", [0, 5]), view.gather("image", [0, 5]))
    assert back.n_texts == view.n_texts


def _close(key, a, b, rel=1e-9):
    if not (math.isfinite(a) and math.isfinite(b)):
        return a == b or (math.isnan(a) and math.isnan(b))
    return abs(a - b) <= LOOSE.get(key, rel) * max(1.0, abs(a))


#: reducer rows -> relative tolerance of their numbers against the in-memory bench: exact
#: means (center, shift) and the fit on every row (spectral with the whole fit split as its
#: sample) at 1e-9 as every exact key; gaussian and procrustes at 1e-10 (merged float64
#: moments through matrix roots and SVDs, as tests/test_stream.py compares their fits)
ROWS = {
    "none,center,shift": 1e-9,
    "gaussian,procrustes": 1e-10,
    "spectral": 1e-9,
}


def _assert_same_bench(mem: dict, got: dict, rel: float) -> None:
    assert got["setting"]["seeds"] == mem["setting"]["seeds"]
    assert got["setting"]["n_eval_images"] == mem["setting"]["n_eval_images"]
    assert got["skipped"] == mem["skipped"] == {}
    for name, row in mem["results"].items():
        srow = got["results"][name]
        for key, m in row["metrics"].items():
            if key not in srow["metrics"]:  # not streamed: said so, with a reason
                assert srow["skipped"].get(key), (name, key)
                continue
            for a, b in zip(m["values"], srow["metrics"][key]["values"], strict=True):
                assert _close(key, a, b, rel), (name, key, a, b)
            assert len(srow["metrics"][key]["ci95"]) == 2
        for key, d in row.get("vs_none", {}).items():
            assert _close(key, d["mean"], srow["vs_none"][key]["mean"], rel), (name, key)
    assert got["verdicts"].keys() == mem["verdicts"].keys()


@pytest.mark.parametrize("reducers", list(ROWS))
def test_streamed_bench_equals_the_in_memory_bench_on_the_same_splits(labelled, reducers):
    emb, src = read_embeddings(str(labelled)), open_source(str(labelled))
    kw = {"reducers": reducers, "repeats": 2, "seed": 3, "test_fraction": 0.5}
    if reducers == "gaussian,procrustes":  # every measure family but the slow probe
        kw["measures"] = [m for m in MEASURES if m not in ("linear_separability", "uniformity")]
    elif reducers == "spectral":  # the route of its fit is what is new here
        kw["measures"] = ["centroid", "neighbours"]
    mem, _ = run_bench(emb, **kw)
    got, views = run_bench_stream(
        src, **kw, sample_queries=None, fit_sample=None, compute=SMALL.replace(seed=3)
    )
    assert views == {} and got["setting"]["route"] == "stream"
    _assert_same_bench(mem, got, ROWS[reducers])
    for name in mem["results"]:
        if name == "none":
            continue
        fitted = got["results"][name]["fitted_on"]
        assert fitted["split"] == "fit" and fitted["rows"] == "all", fitted
        moments = name in ("center", "shift", "gaussian", "procrustes")
        assert (fitted["how"] == "one streaming pass of moments") is moments
    if "none" in mem["results"]:
        assert "zeroshot" in got["verdicts"]  # labels and class prompts followed the split


@pytest.mark.parametrize("which", ["labelled", "multi_caption"])
def test_streamed_retrieval_folds_are_the_in_memory_folds(which, request):
    from modgap.stream.tasks import stream_retrieval_folds
    from modgap.tasks.retrieval import retrieval_metrics

    root = request.getfixturevalue(which)
    emb, src = read_embeddings(str(root)), open_source(str(root))
    want = retrieval_metrics(emb.image_emb, emb.text_emb, emb.text_to_image, (1, 5), folds=3)
    got = stream_retrieval_folds(src, (1, 5), 3, sample_queries=None, compute=SMALL)
    assert got["sampling"]["folds"] == 3
    assert got["sampling"]["texts"] == emb.n_texts
    for key, v in want.items():
        assert got[key] == pytest.approx(v, abs=1e-12), key
    for key, e in got["estimates"].items():  # every fold whole: exact
        assert e["exact"] and e["interval"] == [got[key], got[key]], key
    sampled = stream_retrieval_folds(src, (1, 5), 3, sample_queries=10, compute=SMALL)
    e = sampled["estimates"]["image_retrieval_recall@5"]
    assert e["sample"] == 30 and not e["exact"] and e["interval"][0] <= e["value"]


def test_streamed_bench_folds_equal_the_in_memory_folds(labelled):
    emb, src = read_embeddings(str(labelled)), open_source(str(labelled))
    kw = {"reducers": "none,shift", "repeats": 2, "seed": 1, "folds": 4, "ks": (1, 5)}
    mem, _ = run_bench(emb, **kw, measures=["centroid_gap"])
    got, _ = run_bench_stream(
        src, **kw, measures=["centroid_gap"], sample_queries=None, compute=SMALL.replace(seed=1)
    )
    assert got["setting"]["folds"] == mem["setting"]["folds"] == 4
    _assert_same_bench(mem, got, 1e-9)
    plain, _ = run_bench(emb, **{**kw, "folds": None}, measures=["centroid_gap"])
    a = mem["results"]["none"]["metrics"]["rsum"]["values"]
    assert a != plain["results"]["none"]["metrics"]["rsum"]["values"]  # folds change retrieval
    notes = got["results"]["shift"]["streaming"]["tasks"]["sampling"]
    assert notes["retrieval_folds"]["folds"] == 4


@pytest.mark.parametrize("block", [7, 64])
@pytest.mark.parametrize("which", ["labelled", "multi_caption", "captionless"])
def test_streamed_mixed_keys_equal_the_in_memory_ones_exactly(which, block, request, monkeypatch):
    """The mixed corpus on a source (an image top-k and a text top-k merged by
    ``merge_modalities``, counts combined over the strata) gives the in-memory
    ``mixed_search_metrics`` to the bit, at two block sizes of both routes."""
    from modgap.stream.retrieval import stream_retrieval
    from modgap.tasks.mixed import mixed_search_metrics

    root = request.getfixturevalue(which)
    emb, src = read_embeddings(str(root)), open_source(str(root))
    monkeypatch.setattr(Compute, "rows_per_block", lambda self, row_bytes, **kw: block)
    want = mixed_search_metrics(emb.image_emb, emb.text_emb, emb.text_to_image, (1, 5, 10))
    got = stream_retrieval(src, (1, 5, 10), sample_queries=None, compute=Compute())
    assert {k: got[k] for k in want} == want
    # images without a caption query the corpus but have no recall: the populations say so
    n_cap = len(np.unique(emb.text_to_image))
    assert got["estimates"]["mixed_image_query_recall@5"]["population"] == n_cap
    assert got["estimates"]["mixed_same_modality@5"]["population"] == emb.n_images + emb.n_texts
    sampled = stream_retrieval(src, (1, 5), sample_queries=20, compute=Compute())
    assert sampled["estimates"]["text_retrieval_recall@5"]["population"] == n_cap


def test_streamed_bench_on_dask_equals_the_local_engine(labelled):
    if not _have_dask():
        pytest.skip("dask.distributed is not installed")
    from modgap.stream import DaskEngine

    src = open_source(str(labelled))
    kw = {
        "reducers": "none,procrustes,spectral",
        "repeats": 2,
        "seed": 5,
        "ks": (1, 5),
        "measures": ["centroid", "rmg", "neighbours", "hubness"],  # moments and scans
        "sample_queries": 50,
        "fit_sample": 100,
        "compute": SMALL.replace(seed=5),
    }
    local, _ = run_bench_stream(src, **kw)
    with DaskEngine(n_workers=2, processes=False) as engine:
        dask, _ = run_bench_stream(src, **kw, engine=engine)
    assert dask["setting"]["engine"] != local["setting"]["engine"]
    assert dask["skipped"] == local["skipped"] == {}
    assert dask["results"].keys() == local["results"].keys()
    for name, row in local["results"].items():
        got = dask["results"][name]
        assert got["fitted_on"] == row["fitted_on"] if name != "none" else True
        assert got["skipped"] == row["skipped"]
        for part in ("tasks", "measures"):  # the same samples and intervals
            for key in ("estimates", "sampling"):
                a, b = got["streaming"][part].get(key), row["streaming"][part].get(key)
                assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True), name
        for key, m in row["metrics"].items():  # the same kernels, merged in the same tree
            assert got["metrics"][key]["values"] == m["values"], (name, key)


def test_streamed_bench_says_what_does_not_stream(labelled):
    src = open_source(str(labelled))
    doc, _ = run_bench_stream(
        src,
        reducers="none,shift",
        corrections=["csls"],
        transductive=True,
        repeats=2,
        sample_queries=40,
        compute=SMALL,
    )
    # score corrections stream now: a row, its bank stated (transductive: the evaluated view)
    assert "csls" not in doc["skipped"]
    bank = doc["results"]["csls"]["bank"]
    assert bank["split"] == "evaluated" and bank["rows"] == "all" and bank["images"] > 0
    row = doc["results"]["shift"]  # transductive: fitted on the rows it is scored on
    assert row["scored_on_fitted_rows"] and row["fitted_on"]["split"] == "evaluated"
    assert "linear_separability" in row["skipped"]
    assert "linear_separability" not in row["metrics"]
    est = row["streaming"]["measures"]["estimates"]["itr"]
    assert est["sample"] == 40  # the sampled keys state their sample


def test_cli_bench_stream_writes_intervals(labelled, tmp_path):
    out = tmp_path / "o"
    argv = ["bench", str(labelled), "--stream", "--repeats", "2", "--out", str(out)]
    rc = main([*argv, "--reducers", "none,center", "--sample-queries", "60", "--no-progress"])
    assert rc == 0
    doc = json.loads((out / "results.json").read_text())
    run = next(iter(doc["datasets"].values()))
    assert run["setting"]["route"] == "stream" and run["setting"]["sample_queries"] == 60
    ci = run["results"]["center"]["metrics"]["centroid_gap"]["ci95"]
    assert all(math.isfinite(v) for v in ci)
    assert "significant" in run["results"]["center"]["vs_none"]["rsum"]
    assert (out / "report.html").exists()
    argv[-1] = str(tmp_path / "folds")
    assert main([*argv, "--reducers", "none", "--folds", "2", "--k", "1", "-q"]) == 0
    doc = json.loads((tmp_path / "folds" / "results.json").read_text())
    run = next(iter(doc["datasets"].values()))
    assert run["setting"]["folds"] == 2 and "rsum" in run["results"]["none"]["metrics"]
