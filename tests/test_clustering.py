"""Clustering metrics: known values and a plain reference for modality purity."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import gapped_pairs
from modgap.errors import InputError, ModgapError
from modgap.tasks.clustering import clustering_metrics, modality_purity


def _purity_reference(cluster, is_text):
    total = 0.0
    for c in set(cluster.tolist()):
        members = is_text[cluster == c]
        share = max(members.mean(), 1 - members.mean())
        total += len(members) / len(cluster) * share
    return total


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.booleans()), min_size=1, max_size=60))
def test_purity_matches_reference_and_bounds(points):
    cluster = np.array([p[0] for p in points])
    is_text = np.array([p[1] for p in points])
    got = modality_purity(cluster, is_text)
    assert got == pytest.approx(_purity_reference(cluster, is_text))
    p = is_text.mean()
    # never below the modality-blind value, never above 1
    assert max(p, 1 - p) - 1e-12 <= got <= 1 + 1e-12


def test_identical_modalities_are_modality_blind_and_classes_are_found():
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((4, 16)) * 5
    labels = np.repeat(np.arange(4), 25)
    X = (centres[labels] + 0.1 * rng.standard_normal((100, 16))).astype(np.float32)
    out = clustering_metrics(X, X.copy(), labels=labels)
    assert out["n_clusters"] == 4
    assert out["modality_purity"] == 0.5 == out["modality_purity_blind"]
    assert out["cluster_nmi"] == pytest.approx(1.0)
    assert out["cluster_ari"] == pytest.approx(1.0)


def test_a_large_gap_splits_clusters_by_modality():
    X, Y = gapped_pairs(n=120, d=16, gap=3.0, noise=0.3, seed=1)
    out = clustering_metrics(X, Y, n_clusters=8)
    assert out["modality_purity"] == 1.0
    closed = clustering_metrics(X, X.copy(), n_clusters=8)
    assert closed["modality_purity"] == 0.5
    assert closed["cluster_nmi"] > out["cluster_nmi"]  # pair ids: images meet their captions


def test_several_captions_and_default_k():
    rng = np.random.default_rng(2)
    X = rng.standard_normal((30, 8)).astype(np.float32)
    t2i = np.repeat(np.arange(30), 3)
    Y = X[t2i] + 0.01 * rng.standard_normal((90, 8)).astype(np.float32)
    out = clustering_metrics(X, Y, t2i)
    assert out["n_clusters"] == 30
    assert out["modality_purity_blind"] == pytest.approx(0.75)
    assert out["modality_purity"] == pytest.approx(0.75)  # each image sits with its captions


def test_subsampling_keeps_captions_with_their_image():
    X, Y = gapped_pairs(n=300, d=8, seed=3)
    out = clustering_metrics(X, Y, max_points=200, n_clusters=5)
    assert out["modality_purity_blind"] == 0.5  # pairs stay whole


def test_bad_inputs():
    X, Y = gapped_pairs(n=10, d=8)
    with pytest.raises(ModgapError, match=r"n_clusters must be in \[2, 20\]"):
        clustering_metrics(X, Y, n_clusters=50)
    with pytest.raises(InputError, match="'labels' must have shape"):
        clustering_metrics(X, Y, labels=np.zeros(3))
    with pytest.raises(InputError, match="text_to_image"):
        clustering_metrics(X, Y, text_to_image=np.arange(10) + 5)
