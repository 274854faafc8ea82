"""measure_all: every measure once, pair measures only with pairs, name selection, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import gapped_pairs
from modgap.embeddings import EmbeddingSet
from modgap.errors import ModgapError
from modgap.measures import (
    MEASURES,
    centroid_gap,
    cosine_stats,
    linear_separability,
    measure_all,
    mixed_neighbour_diagnostics,
    relative_modality_gap,
)
from modgap.provenance import jsonable, provenance

pytestmark = pytest.mark.usefixtures("single_thread")

FLAT_KEYS = {
    "centroid_gap",
    "centroid_cosine",
    "gap_dims_50",
    "gap_dims_90",
    "linear_separability",
    "rmg",
    "rmg_chance",
    "itr",
    "tir",
    "tmr",
    "imr",
    "frechet_distance",
    "alignment",
    "uniformity_image",
    "uniformity_text",
    "uniformity_cross",
    "matched_cosine_mean",
    "matched_cosine_std",
    "unmatched_cosine_mean",
    "unmatched_cosine_std",
}


def test_measure_all_paired_runs_everything_and_matches_the_functions():
    X, Y = gapped_pairs(150, 12, seed=1)  # 50 images: enough for hubness
    t2i = np.r_[np.arange(50), np.random.default_rng(0).integers(0, 50, size=100)]
    X = X[:50]
    emb = EmbeddingSet(X, Y, text_to_image=t2i)
    out = measure_all(emb, seed=4)
    assert FLAT_KEYS <= out.keys()
    assert "skipped" not in out
    assert out["centroid_gap"] == pytest.approx(centroid_gap(X, Y)["centroid_gap"], rel=1e-6)
    assert out["rmg"] == pytest.approx(relative_modality_gap(X, Y, t2i), rel=1e-6)
    assert out["linear_separability"] == linear_separability(X, Y, seed=4)
    neighbours = mixed_neighbour_diagnostics(X, Y)
    assert {k: out[k] for k in neighbours} == neighbours
    cos = cosine_stats(X, Y, t2i, seed=4)
    assert out["unmatched_cosine"] == pytest.approx(cos["unmatched"], rel=1e-6)
    assert out["per_dimension"]["dims_90"] == out["gap_dims_90"]
    # strict JSON after jsonable (no NaN/Infinity tokens)
    json.dumps(jsonable(out), allow_nan=False)


def test_measure_all_unpaired_skips_pair_measures():
    X, Y = gapped_pairs(80, 8, seed=2)
    out = measure_all(EmbeddingSet(X, Y[:60]))
    assert out["skipped"] == {
        "rmg": "needs image-text pairs",
        "alignment": "needs image-text pairs",
        "cosine": "needs image-text pairs",
    }
    assert "rmg" not in out and "centroid_gap" in out


def test_measure_all_only_accepts_measure_and_result_names():
    X, Y = gapped_pairs(30, 8, seed=3)
    emb = EmbeddingSet(X, Y)
    out = measure_all(emb, only=["itr", "centroid"])
    assert set(out) == {"itr", "tir", "tmr", "imr", "centroid_gap", "centroid_cosine"}
    assert set(measure_all(emb, only="rmg")) == {"rmg", "rmg_chance"}
    seen = []
    measure_all(emb, only=["rmg", "alignment"], progress=seen.append)
    assert seen == ["rmg", "alignment"]


def test_measure_all_reports_neighbour_progress_per_block():
    X, Y = gapped_pairs(3000, 4, seed=3)  # 6000 queries: 3 blocks of 2048 rows, 2 per side
    seen = []
    measure_all(
        EmbeddingSet(X, Y), only=["neighbours"], progress_fraction=lambda *a: seen.append(a)
    )
    assert seen == [
        ("neighbours", 2048 / 6000),
        ("neighbours", 3000 / 6000),
        ("neighbours", 5048 / 6000),
        ("neighbours", 1.0),
    ]


def test_measure_all_errors():
    X, Y = gapped_pairs(30, 8, seed=3)
    with pytest.raises(ModgapError, match=r"unknown measure 'gap'; valid names: centroid, "):
        measure_all(EmbeddingSet(X, Y), only=["gap"])
    with pytest.raises(ModgapError, match="no measure selected"):
        measure_all(EmbeddingSet(X, Y), only=[])
    with pytest.raises(ModgapError, match=r"rmg need\(s\) image-text pairs and the set has none"):
        measure_all(EmbeddingSet(X, Y[:20]), only=["rmg", "centroid"])


def test_measure_registry_lists_every_key():
    produced = {k for m in MEASURES.values() for k in m.keys}
    assert FLAT_KEYS <= produced


def test_provenance_fields():
    rec = provenance(seed=3, counts={"n": 1}, value=float("inf"))
    assert set(rec["versions"]) == {"modgap", "numpy", "torch", "scipy", "sklearn", "POT"}
    assert rec["versions"]["numpy"] == np.__version__
    assert rec["seed"] == 3 and rec["counts"] == {"n": 1} and rec["value"] == "inf"
    assert {"python", "platform", "time"} <= rec.keys()
    json.dumps(rec, allow_nan=False)


def test_jsonable_converts_numpy_and_non_finite():
    obj = {"a": np.float32(0.5), "b": np.arange(2), "c": [float("nan"), -float("inf")], 1: True}
    assert jsonable(obj) == {"a": 0.5, "b": [0, 1], "c": ["nan", "-inf"], "1": True}


def test_hubness_k_comes_from_the_pool_and_tiny_pools_are_skipped():
    from modgap.measures.hubness import MIN_HUBNESS_POOL, hubness_k
    from modgap.stream.hubness import hubness_k as streamed_k

    assert streamed_k is hubness_k  # one rule for both routes
    assert [hubness_k(n, 5000) for n in (10, 49, 50, 64, 99, 100, 10_000)] == [
        0,
        0,
        7,
        8,
        9,
        10,
        10,
    ]
    assert hubness_k(848, 10) == 0 and MIN_HUBNESS_POOL == 50
    # 848 images against 10 class prompts: skipped with the reason, not k = 9 of 10
    rng = np.random.default_rng(1)
    X, P = rng.normal(size=(848, 16)), rng.normal(size=(10, 16))
    labels = rng.integers(0, 10, 848)
    emb = EmbeddingSet(X, labels=labels, class_names=list("abcdefghij"), class_text_emb=P)
    out = measure_all(emb, only="hubness")
    assert "hubness_skew_t2i" not in out and "10 rows" in out["skipped"]["hubness"]
    # from 50 rows on it runs, with k = floor(sqrt(n))
    X, Y = gapped_pairs(64, 8, seed=2)
    out = measure_all(EmbeddingSet(X, Y), only="hubness")
    from modgap.measures import hubness

    assert out["hubness_skew_t2i"] == hubness(X, Y, k=8)["hubness_skew_t2i"]


def test_streamed_hubness_uses_the_same_rule(tmp_path):
    from modgap.stream import open_source, stream_measures

    for n, runs in ((40, False), (64, True)):
        X, Y = gapped_pairs(n, 8, seed=3)
        np.save(tmp_path / f"a{n}.npy", X)
        np.save(tmp_path / f"b{n}.npy", Y)
        src = open_source(str(tmp_path / f"a{n}.npy"), str(tmp_path / f"b{n}.npy"))
        streamed = stream_measures(src, only="hubness", sample_queries=None)
        mem = measure_all(EmbeddingSet(X, Y), only="hubness")
        if runs:  # k = 8 on both routes, the same counts
            assert streamed["hubness_skew_t2i"] == pytest.approx(mem["hubness_skew_t2i"], rel=1e-9)
        else:
            assert streamed["skipped"]["hubness"] == mem["skipped"]["hubness"]
            assert "hubness_skew_t2i" not in streamed
