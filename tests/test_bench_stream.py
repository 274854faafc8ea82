"""The gap benchmark on a streamed source: split views of a source against
``EmbeddingSet.split``, the streamed bench against the in-memory one on the same splits, and
``modgap bench --stream``."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from modgap.bench import run_bench
from modgap.bench.stream import TransformedSource, run_bench_stream
from modgap.cli import main
from modgap.compute import Compute
from modgap.embeddings import EmbeddingSet
from modgap.io import read_embeddings, write_embeddings
from modgap.io.subset import SubsetSource, split_rows
from modgap.reducers import get_reducer
from modgap.stream import open_source
from test_stream import gapped_pairs, make_folder

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


def _close(key, a, b):
    if not (math.isfinite(a) and math.isfinite(b)):
        return a == b or (math.isnan(a) and math.isnan(b))
    return abs(a - b) <= LOOSE.get(key, 1e-9) * max(1.0, abs(a))


def test_streamed_bench_equals_the_in_memory_bench_on_the_same_splits(labelled):
    emb, src = read_embeddings(str(labelled)), open_source(str(labelled))
    kw = {"reducers": "none,center,shift", "repeats": 2, "seed": 3, "test_fraction": 0.5}
    mem, _ = run_bench(emb, **kw)
    got, views = run_bench_stream(src, **kw, sample_queries=None, compute=SMALL.replace(seed=3))
    assert views == {} and got["setting"]["route"] == "stream"
    assert got["setting"]["seeds"] == mem["setting"]["seeds"]
    assert got["setting"]["n_eval_images"] == mem["setting"]["n_eval_images"]
    for name, row in mem["results"].items():
        srow = got["results"][name]
        for key, m in row["metrics"].items():
            if key not in srow["metrics"]:  # not streamed: said so, with a reason
                assert srow["skipped"].get(key), (name, key)
                continue
            for a, b in zip(m["values"], srow["metrics"][key]["values"], strict=True):
                assert _close(key, a, b), (name, key, a, b)
            assert len(srow["metrics"][key]["ci95"]) == 2
        for key, d in row.get("vs_none", {}).items():
            assert _close(key, d["mean"], srow["vs_none"][key]["mean"]), (name, key)
    for name in ("center", "shift"):
        fitted = got["results"][name]["fitted_on"]
        assert fitted["how"] == "one streaming pass of moments" and fitted["split"] == "fit"
    assert got["verdicts"].keys() == mem["verdicts"].keys()
    assert "zeroshot" in got["verdicts"]  # labels and class prompts followed the split


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
    assert main([*argv, "--folds", "2", "--no-progress"]) == 2
