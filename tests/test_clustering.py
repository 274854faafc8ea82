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
    assert out["cluster_ami"] == pytest.approx(1.0)
    assert out["cluster_ari"] == pytest.approx(1.0)
    assert out["pair_coclustering"] == 1.0  # identical modalities: every pair together
    assert out["pair_coclustering_chance"] == pytest.approx(0.25)  # 4 equal clusters


def test_a_large_gap_splits_clusters_by_modality():
    X, Y = gapped_pairs(n=120, d=16, gap=3.0, noise=0.3, seed=1)
    out = clustering_metrics(X, Y, n_clusters=8)
    assert out["modality_purity"] == 1.0
    closed = clustering_metrics(X, X.copy(), n_clusters=8)
    assert closed["modality_purity"] == 0.5
    assert out["pair_coclustering"] == 0.0  # clusters split by modality: no pair together
    assert closed["pair_coclustering"] == 1.0
    assert "cluster_ami" not in out  # no labels: no semantic score


def _coclustering_reference(assign_img, assign_txt, t2i):
    together = np.mean([assign_img[i] == assign_txt[j] for j, i in enumerate(t2i)])
    k = max(assign_img.max(), assign_txt.max()) + 1
    chance = sum(np.mean(assign_img == c) * np.mean(assign_txt == c) for c in range(k))
    return together, chance


def test_pair_coclustering_matches_reference_and_random_clusterings_sit_at_chance():
    from sklearn.cluster import KMeans

    rng = np.random.default_rng(5)
    X = rng.standard_normal((80, 6)).astype(np.float32)
    t2i = rng.permutation(np.repeat(np.arange(80), 2))
    Y = (X[t2i] + 0.8 * rng.standard_normal((160, 6))).astype(np.float32)
    out = clustering_metrics(X, Y, t2i, n_clusters=6, seed=3)
    Z = np.concatenate([X, Y])
    Z /= np.linalg.norm(Z, axis=1, keepdims=True)
    assign = KMeans(n_clusters=6, n_init=3, random_state=3).fit(Z).labels_
    together, chance = _coclustering_reference(assign[:80], assign[80:], t2i)
    assert out["pair_coclustering"] == pytest.approx(together)
    assert out["pair_coclustering_chance"] == pytest.approx(chance)
    assert out["pair_coclustering"] > 2 * chance  # the pairs are informative here
    # unrelated texts (a random pairing) co-cluster at about the chance rate
    shuffled = clustering_metrics(X, Y, rng.permutation(t2i), n_clusters=6, seed=3)
    assert shuffled["pair_coclustering"] == pytest.approx(
        shuffled["pair_coclustering_chance"], abs=0.08
    )


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
