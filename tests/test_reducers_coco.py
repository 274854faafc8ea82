"""On the real CLIP ViT-B/16 COCO-500 embeddings, each reducer moves the measure it is built for
in the intended direction (the numbers of docs/reducers.md, as assertions)."""

from __future__ import annotations

import numpy as np
import pytest

from modgap.measures import centroid_gap, mixed_neighbour_diagnostics, relative_modality_gap
from modgap.reducers import get_reducer
from modgap.tasks.retrieval import retrieval_metrics

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def coco(request):
    from conftest import COCO500

    if not COCO500.exists():
        pytest.skip(f"shared real data not found at {COCO500}")
    z = np.load(COCO500, allow_pickle=False)
    return z["image_emb"], z["text_emb"]


def gap(A, B):
    return centroid_gap(A, B)["centroid_gap"]


def test_raw_reference_values(coco):
    X, Y = coco
    assert gap(X, Y) == pytest.approx(0.8514, abs=1e-4)
    mix = mixed_neighbour_diagnostics(X, Y)
    assert mix["itr"] == np.inf and mix["tir"] == np.inf  # no mixed neighbours at all


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("center", {}),
        ("shift", {}),
        ("gaussian", {}),
        ("gaussian", {"direction": "barycenter"}),
        ("procrustes", {}),
        ("ot-sinkhorn", {}),
    ],
)
def test_closes_the_centroid_gap(coco, name, params):
    X, Y = coco
    A, B = get_reducer(name, **params).fit_transform(X, Y)
    assert gap(A, B) < 0.05
    assert relative_modality_gap(A, B) < relative_modality_gap(X, Y)


def test_spectral_mixes_the_modalities(coco):
    X, Y = coco
    A, B = get_reducer("spectral").fit_transform(X, Y)
    assert A.shape == (500, 60)
    mix = mixed_neighbour_diagnostics(A, B)
    assert mix["itr"] < 5 and mix["tir"] < 5


def test_sinkhorn_barycenter_mixes_and_keeps_retrieval(coco):
    X, Y = coco
    A, B = get_reducer("ot-sinkhorn").fit_transform(X, Y)
    mix = mixed_neighbour_diagnostics(A, B)
    assert mix["itr"] < 5 and mix["tir"] < 5
    before = retrieval_metrics(X, Y, ks=(1,))
    after = retrieval_metrics(A, B, ks=(1,))
    assert after["rsum"] >= before["rsum"]


def test_procrustes_aligns_pairs(coco):
    X, Y = coco
    A, B = get_reducer("procrustes").fit_transform(X, Y)
    before = retrieval_metrics(X, Y, ks=(1,))["text_retrieval_recall@1"]
    assert retrieval_metrics(A, B, ks=(1,))["text_retrieval_recall@1"] > before


def test_ot_laplace_on_a_subset(coco):
    X, Y = coco
    X, Y = X[:150], Y[:150]
    A, B = get_reducer("ot-laplace", max_iter=10).fit_transform(X, Y)
    assert gap(A, B) < 0.05
