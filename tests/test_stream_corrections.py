"""Retrieval-time corrections (CSLS, inverted softmax, QB-Norm) on a streamed source: the same
offsets, query weights and ranks as in memory, on every engine and block size, for every entry
of :data:`modgap.tasks.scoring.CORRECTIONS` (a new correction is covered without a new test);
and the correction rows of the streamed bench."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest

from modgap._array import prepare_rows
from modgap.bench.stream import run_bench_stream
from modgap.cli import main
from modgap.compute import Compute
from modgap.embeddings import EmbeddingSet
from modgap.errors import ModgapError, ModgapNotice, NotFittedError
from modgap.io import read_embeddings, write_embeddings
from modgap.stream import LocalEngine, open_source, stream_retrieval
from modgap.stream.corrections import correction_terms
from modgap.tasks.retrieval import retrieval_metrics
from modgap.tasks.scoring import CORRECTIONS, get_correction
from test_stream import dask_engine, gapped_pairs, make_folder  # noqa: F401 (a fixture)

BUDGETS = (Compute(memory_budget="2MiB"), Compute(memory_budget="256MiB"))


@pytest.fixture(scope="module")
def rows_folder(tmp_path_factory):
    """A 3-shard clip-retrieval folder, one caption per image."""
    root = tmp_path_factory.mktemp("corr_rows") / "cr"
    make_folder(root, 500, 16, 3, seed=7)
    return root


@pytest.fixture(scope="module")
def captions_folder(tmp_path_factory):
    """A 4-shard float32 folder with several captions per image, texts not in image order,
    and two duplicated images (exact ties for QB-Norm's top-1 and the activation set). Its
    rows are unit to 1e-7, so both routes score the very same rows (no renormalisation)."""
    x, _ = gapped_pairs(80, 16, seed=8)
    x[41] = x[40]
    _, y = gapped_pairs(200, 16, seed=9)
    t2i = np.random.default_rng(3).integers(0, 80, 200)
    t2i[:80] = np.arange(80)[::-1]
    root = tmp_path_factory.mktemp("corr_caps") / "mc"
    write_embeddings(EmbeddingSet(x, y, text_to_image=t2i), root, shard_size=20, dtype="float32")
    return root


def _read(path) -> EmbeddingSet:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ModgapNotice)
        return read_embeddings(path)


def _fitted(name: str, d: int = 16):
    X, Y = gapped_pairs(120, d, seed=11)
    return get_correction(name).fit(X, Y[:90])  # banks of unequal sizes


@pytest.mark.parametrize("name", list(CORRECTIONS))
def test_streamed_offsets_and_weights_are_the_in_memory_ones(name, captions_folder):
    emb, src = _read(captions_folder), open_source(captions_folder)
    c = _fitted(name)
    ref = c.offsets(emb.image_emb, emb.text_emb)
    Qx = prepare_rows(emb.image_emb, "image_emb", unit="exact")
    Qy = prepare_rows(emb.text_emb, "text_emb", unit="exact")
    for compute in BUDGETS:
        got = correction_terms(src, c, Qx, Qy, engine=LocalEngine(), compute=compute)
        # bit for bit: each shard block runs the very method the in-memory route runs
        np.testing.assert_array_equal(got["image_offset"], ref.image_offset)
        np.testing.assert_array_equal(got["text_offset"], ref.text_offset)
        for key, mask in (("text_active", ref.text_active), ("image_active", ref.image_active)):
            want = np.ones(len(got[key])) if mask is None else mask.astype(np.float64)
            np.testing.assert_array_equal(got[key], want)


@pytest.mark.parametrize("name", list(CORRECTIONS))
def test_a_candidate_block_gets_the_bits_it_gets_in_the_whole_set(name):
    import torch

    c = _fitted(name)
    X, _ = gapped_pairs(70, 16, seed=12)
    C = torch.from_numpy(prepare_rows(X, "image_emb", unit="exact"))
    whole = c.candidate_offsets(C, "image").numpy()
    parts = [c.candidate_offsets(C[a:b], "image").numpy() for a, b in ((0, 13), (13, 64), (64, 70))]
    np.testing.assert_array_equal(np.concatenate(parts), whole)


@pytest.mark.parametrize("name", list(CORRECTIONS))
@pytest.mark.parametrize("folder", ["rows_folder", "captions_folder"])
def test_streamed_corrected_retrieval_equals_in_memory(name, folder, request, dask_engine):  # noqa: F811
    path = request.getfixturevalue(folder)
    emb = _read(path)
    c = _fitted(name)
    ref = retrieval_metrics(emb.image_emb, emb.text_emb, emb.text_to_image, correction=c)
    plain = retrieval_metrics(emb.image_emb, emb.text_emb, emb.text_to_image)
    assert ref != plain  # the correction changes the ranks: the test can tell
    runs = [
        stream_retrieval(open_source(path), sample_queries=None, correction=c, compute=compute)
        for compute in BUDGETS
    ]
    if dask_engine is not None:
        runs.append(
            stream_retrieval(
                open_source(path),
                sample_queries=None,
                correction=c,
                compute=BUDGETS[0],
                engine=dask_engine,
            )
        )
    for got in runs:
        assert {k: got[k] for k in ref} == ref  # exact: the whole set is the query sample
        assert not any(k.startswith("mixed") for k in got)  # no corrected mixed corpus
        stated = got["sampling"]["correction"]
        assert stated["name"] == name and stated["bank_texts"] == 90


def test_sampled_corrected_retrieval_states_its_sample(rows_folder):
    c = _fitted("qb-norm")
    got = stream_retrieval(open_source(rows_folder), sample_queries=60, correction=c)
    est = got["estimates"]["image_retrieval_recall@5"]
    lo, hi = est["interval"]
    assert est["sample"] == 60 and not est["exact"] and lo <= est["value"] <= hi and lo < hi


def test_corrected_stream_refuses_what_it_cannot_score(rows_folder):
    src = open_source(rows_folder)
    with pytest.raises(NotFittedError, match="not fitted yet"):
        stream_retrieval(src, correction=get_correction("csls"))
    with pytest.raises(ModgapError, match="fitted on 8-dimensional rows"):
        stream_retrieval(src, correction=_fitted("csls", d=8))
    with pytest.raises(ModgapError, match="mixed-corpus search has no retrieval-time"):
        stream_retrieval(src, correction=_fitted("csls"), mixed=True)
    with pytest.raises(ModgapError, match="CSLS k=200 is larger than the 90 bank texts"):
        stream_retrieval(src, correction=_fitted("csls").set_params(k=200))


@pytest.mark.parametrize("folds", [None, 2])
def test_streamed_bench_correction_rows_equal_the_in_memory_bench(captions_folder, folds):
    from modgap.bench import run_bench

    c = Compute(memory_budget="8MiB", seed=5)
    names = list(CORRECTIONS)  # every registered correction
    common = dict(
        reducers=["none"], corrections=names, repeats=2, measures=["centroid"], folds=folds
    )
    mem, _ = run_bench(_read(captions_folder), compute=c, **common)
    got, _ = run_bench_stream(
        open_source(captions_folder), sample_queries=None, fit_sample=None, compute=c, **common
    )
    assert not got["skipped"]
    for name in names:
        row, srow = mem["results"][name], got["results"][name]
        assert srow["kind"] == "correction"
        assert srow["bank"]["split"] == "fit" and srow["bank"]["rows"] == "all"
        assert srow["metrics"].keys() == row["metrics"].keys()
        for key, m in row["metrics"].items():  # the whole fit split is the bank: same numbers
            assert srow["metrics"][key]["values"] == m["values"], (name, key)
            assert srow["metrics"][key]["ci95"] == m["ci95"], (name, key)
    assert got["verdicts"]["retrieval"] == mem["verdicts"]["retrieval"]


def test_cli_bench_stream_has_the_correction_rows(rows_folder, tmp_path):
    out = tmp_path / "o"
    argv = ["bench", str(rows_folder), "--stream", "--repeats", "2", "--out", str(out)]
    extra = ["--reducers", "none", "--corrections", "csls,qb-norm", "--fit-sample", "100"]
    assert main([*argv, *extra, "--sample-queries", "80", "--no-progress", "--quiet"]) == 0
    run = next(iter(json.loads((out / "results.json").read_text())["datasets"].values()))
    assert run["skipped"] == {} and run["setting"]["bank_sample"] == 100
    for name in ("csls", "qb-norm"):
        row = run["results"][name]
        assert row["kind"] == "correction"
        assert row["bank"]["images"] == 100 and row["bank"]["rows"] == "uniform sample"
        assert all(math.isfinite(v) for v in row["metrics"]["rsum"]["ci95"])
        assert "rsum" in row["vs_none"]
        est = row["streaming"]["tasks"]["estimates"]["image_retrieval_recall@1"]
        assert est["sample"] == 80
    assert any(line.startswith("qb-norm:") for line in run["verdicts"]["retrieval"])
