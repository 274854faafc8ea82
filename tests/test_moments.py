"""The one moment kernel (measures.moments): float32 scatter within its stated bound of a float64
reference on adversarial data, and the same bits on every route, sharding, block size and
thread count (the chunk grid is fixed on global row numbers)."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from modgap.compute import Compute
from modgap.io import read_embeddings
from modgap.measures import centroid_gap, frechet_distance
from modgap.measures.moments import CHUNK, moments_of_unit_rows, scatter_bound
from modgap.stream import open_source
from modgap.stream.measures import moment_pass


def _unit(X: np.ndarray) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def _far_rows(n: int, d: int, seed: int) -> np.ndarray:
    """float16 rows far from their mean: a large common direction, a small spread, and the
    rows sorted along it so every chunk's mean differs from the set's."""
    rng = np.random.default_rng(seed)
    X = 20.0 * rng.standard_normal(d) + rng.standard_normal((n, d))
    X = X[np.argsort(X @ rng.standard_normal(d))]
    return X.astype(np.float16)


def _reference(U: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mu = U.mean(axis=0)
    C = U - mu
    return mu, C.T @ C


@pytest.mark.parametrize("d", [512, 1024])
def test_scatter_within_its_bound_of_float64(d):
    U = _unit(_far_rows(CHUNK + 1500, d, seed=d))  # a full chunk and a partial one
    got = moments_of_unit_rows(U, covariance=True)
    mu, M = _reference(U)
    np.testing.assert_allclose(got.mean, mu, rtol=0, atol=1e-15)  # means stay float64
    err = np.abs(got.scatter - M)
    bound = scatter_bound(U)
    assert (err <= bound).all()
    # and far inside it in practice (BLAS sums of both signs): the figure the docs quote
    assert err.max() <= 1e-5 * np.abs(M).max()
    assert np.array_equal(got.scatter, got.scatter.T)


def test_first_moments_only_equal_the_plain_mean():
    U = _unit(_far_rows(3000, 64, seed=1))
    assert np.allclose(moments_of_unit_rows(U).mean, U.mean(axis=0), rtol=0, atol=1e-15)
    out = centroid_gap(U[:1500], U[1500:])
    ref = np.linalg.norm(U[:1500].mean(0) - U[1500:].mean(0))
    assert out["centroid_gap"] == pytest.approx(ref, rel=1e-13)


def _folder(root: Path, X: np.ndarray, Y: np.ndarray, bounds: list[int]) -> tuple:
    """A clip-retrieval folder of float16 unit rows cut at ``bounds``, and the rows an
    in-memory set read from it holds (the reference of the routes)."""
    X, Y = _unit(X).astype(np.float16), _unit(Y).astype(np.float16)
    for sub in ("img_emb", "text_emb"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i, (a, b) in enumerate(itertools.pairwise(bounds)):
        np.save(root / "img_emb" / f"img_emb_{i}.npy", X[a:b])
        np.save(root / "text_emb" / f"text_emb_{i}.npy", Y[a:b])
    emb = read_embeddings(str(root))
    return open_source(str(root)), _unit(emb.image_emb), _unit(emb.text_emb)


def test_every_route_block_size_and_thread_count_gives_the_same_bits(tmp_path, monkeypatch):
    from modgap.stream import moments

    n, d = 2 * CHUNK + 700, 24
    X, Y = _far_rows(n, d, seed=2), _far_rows(n, d, seed=3)
    # shards that cut chunks anywhere: a chunk spanning three shards, a shard without a
    # grid line, one that starts on one
    bounds = [0, 1000, 1100, CHUNK, CHUNK + 3000, n]
    src, UX, UY = _folder(tmp_path / "cr", X, Y, bounds)
    mx = moments_of_unit_rows(UX, covariance=True)
    my = moments_of_unit_rows(UY, covariance=True)
    pairs = None
    for block in (97, 1000, 4096, 65536):  # reader blocks cut anywhere on the grid
        monkeypatch.setattr(moments, "_rows_per_block", lambda *a, block=block: block)
        for threads in (1, 2):
            compute = Compute(threads=threads)
            st = moment_pass(src, covariance=True, matched=True, compute=compute)
            for got, want in ((st["x"], mx), (st["y"], my)):
                assert got["n"] == want.n
                # one chunk grid: the same float32 products; only the float64 merge order
                # (the shards' tree) differs
                np.testing.assert_allclose(got["mean"], want.mean, rtol=0, atol=1e-15)
                np.testing.assert_allclose(got["scatter"], want.scatter, rtol=1e-12, atol=1e-13)
            if pairs is None:
                pairs = st["pairs"]
            assert st["pairs"]["n"] == n
            for k in ("sum", "sq", "align"):
                assert st["pairs"][k] == pytest.approx(pairs[k], rel=1e-13)
    c = np.einsum("ij,ij->i", UX, UY)
    assert pairs["sum"] == pytest.approx(c.sum(), rel=1e-12)
    assert pairs["align"] == pytest.approx(float(np.sum((UX - UY) ** 2)), rel=1e-12)


def test_in_memory_frechet_runs_the_streamed_kernel(tmp_path):
    n, d = CHUNK + 300, 16
    X, Y = _far_rows(n, d, seed=4), _far_rows(n, d, seed=5)
    src, UX, UY = _folder(tmp_path / "cr", X, Y, [0, 777, n])
    st = moment_pass(src, covariance=True, matched=False, compute=Compute(memory_budget="1MiB"))
    from modgap.measures.frechet import frechet_terms

    x, y = st["x"], st["y"]
    t = frechet_terms(x["mean"], x["scatter"] / (n - 1), y["mean"], y["scatter"] / (n - 1))
    mem = frechet_distance(UX, UY, terms=True)
    assert mem["covariance"] == pytest.approx(t["covariance"], rel=1e-10)
    assert mem["centroid"] == pytest.approx(t["centroid"], rel=1e-12)
