"""Spectral reducer: graph against a naive reference, subspace against a dense eigendecomposition
of the normalised bipartite Laplacian, Nyström extension of fitted points."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg

from conftest import gapped_pairs
from modgap.errors import ModgapError
from modgap.reducers import SpectralEmbedding
from modgap.reducers._graph import bipartite_knn_graph

pytestmark = pytest.mark.usefixtures("single_thread")


def naive_knn_weights(X, Y, k, kernel, tau):
    """Reference: full similarity matrix, row top-k OR column top-k, then the kernel."""
    S = X.astype(np.float64) @ Y.T.astype(np.float64)
    keep = np.zeros(S.shape, bool)
    rows = np.argsort(-S, axis=1)[:, :k]
    keep[np.arange(S.shape[0])[:, None], rows] = True
    cols = np.argsort(-S, axis=0)[:k]
    keep[cols, np.arange(S.shape[1])[None, :]] = True
    W = np.maximum(S, 0) if kernel == "clip" else np.exp((S - 1) / tau)
    return W * keep


def laplacian_eigenvectors(W, k):
    """Reference: the k smallest non-trivial eigenvectors of the random-walk normalised
    Laplacian of the full (n+m) bipartite graph, from a dense symmetric eigendecomposition."""
    n, m = W.shape
    A = np.zeros((n + m, n + m))
    A[:n, n:] = W
    A[n:, :n] = W.T
    d = A.sum(1)
    L = np.eye(n + m) - A / np.sqrt(np.outer(d, d))
    vals, vecs = np.linalg.eigh(L)
    return (vecs[:, 1 : k + 1] / np.sqrt(d)[:, None]), vals


@pytest.mark.parametrize("kernel", ["clip", "exp"])
@pytest.mark.parametrize(
    ("n", "k", "block_rows"),
    # one block; a few blocks; many small blocks, where the column top-k is merged from the
    # few above-threshold candidates (the segmented-sort path)
    [(50, 6, None), (50, 6, 7), (400, 3, 10)],
)
def test_knn_graph_matches_naive(kernel, n, k, block_rows):
    X, Y = gapped_pairs(n=n, d=10, seed=7)
    Y = Y[:40]
    W, row_kth, col_kth = bipartite_knn_graph(X, Y, k, kernel, 0.1, block_rows=block_rows)
    ref = naive_knn_weights(X, Y, k, kernel, 0.1)
    np.testing.assert_allclose(W.toarray(), ref, atol=1e-6)
    S = X @ Y.T
    np.testing.assert_allclose(row_kth, np.sort(S, axis=1)[:, -k], atol=1e-6)
    np.testing.assert_allclose(col_kth, np.sort(S, axis=0)[-k], atol=1e-6)


@pytest.mark.parametrize(
    "params",
    [
        {"n_neighbors": None, "kernel": "exp", "temperature": 0.1},
        {"n_neighbors": 8, "kernel": "exp", "temperature": 0.1, "solver": "arpack"},
        {"n_neighbors": 8, "kernel": "clip", "solver": "dense"},
    ],
)
def test_spans_dense_laplacian_subspace(params):
    X, Y = gapped_pairs(n=70, d=12, seed=8)
    k = 5
    r = SpectralEmbedding(n_components=k, normalize=False, **params)
    F, G = r.fit_transform(X, Y)
    if params["n_neighbors"] is None:
        W = np.exp((X.astype(np.float64) @ Y.T - 1) / 0.1)
    else:
        W = naive_knn_weights(X, Y, 8, params["kernel"], params.get("temperature", 0.05))
    ref, vals = laplacian_eigenvectors(W, k)
    assert vals[k + 1] - vals[k] > 1e-3  # an eigengap, so the subspace is well defined
    angles = scipy.linalg.subspace_angles(np.vstack([F, G]).astype(np.float64), ref)
    assert angles.max() < 1e-3
    # singular values are 1 - Laplacian eigenvalues
    np.testing.assert_allclose(r.singular_values_, 1 - vals[1 : k + 1], atol=1e-6)


@pytest.mark.parametrize("n_neighbors", [None, 10])
def test_nystrom_reproduces_fitted_points(n_neighbors):
    X, Y = gapped_pairs(n=90, d=16, seed=9)
    Y = Y[:80]  # unequal counts: an unpaired fit
    r = SpectralEmbedding(n_components=8, n_neighbors=n_neighbors, normalize=False)
    F, G = r.fit_transform(X, Y)
    np.testing.assert_allclose(r.transform_images(X), F, rtol=1e-4, atol=1e-6 * np.abs(F).max())
    np.testing.assert_allclose(r.transform_texts(Y), G, rtol=1e-4, atol=1e-6 * np.abs(G).max())
    # a new point lands near its nearest fitted neighbour's embedding
    Xn = X[:5] + 0.01 * np.random.default_rng(0).standard_normal((5, 16)).astype(np.float32)
    Fn = r.transform_images(Xn / np.linalg.norm(Xn, axis=1, keepdims=True))
    cos = (Fn * F[:5]).sum(1) / np.linalg.norm(Fn, axis=1) / np.linalg.norm(F[:5], axis=1)
    assert cos.min() > 0.9


def test_solvers_agree():
    X, Y = gapped_pairs(n=120, d=16, seed=10)
    embs = {
        s: np.vstack(
            SpectralEmbedding(n_components=4, solver=s, normalize=False).fit_transform(X, Y)
        )
        for s in ("dense", "arpack", "randomized", "lobpcg")
    }
    for s in ("arpack", "randomized", "lobpcg"):
        assert scipy.linalg.subspace_angles(embs["dense"], embs[s]).max() < 1e-2, s


def test_size_errors():
    X, Y = gapped_pairs(n=20, d=8)
    with pytest.raises(ModgapError, match=r"n_components=30 needs more than 30 images and texts"):
        SpectralEmbedding(n_components=30).fit(X, Y)
    with pytest.raises(ModgapError, match=r"dense route .* dense_limit=100; set n_neighbors"):
        SpectralEmbedding(n_components=3, n_neighbors=None, dense_limit=100).fit(X, Y)
