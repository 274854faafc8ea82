"""OT reducers against POT: log-domain Sinkhorn potentials and plan, the entropic map of fitted
points, EMDLaplaceTransport's in- and out-of-sample transform."""

from __future__ import annotations

import numpy as np
import ot
import pytest
import torch

from conftest import gapped_pairs
from modgap.errors import ModgapError
from modgap.reducers import LaplaceOT, SinkhornOT
from modgap.reducers._sinkhorn import entropic_map, sinkhorn_log

pytestmark = pytest.mark.usefixtures("single_thread")


def plan(X, Y, f, g, reg):
    C = ((X[:, None, :] - Y[None, :, :]) ** 2).sum(-1)
    n, m = C.shape
    return np.exp((f[:, None] + g[None, :] - C) / reg) / (n * m)


@pytest.mark.parametrize("max_cache_bytes", [2**30, 0])  # cached cost and blockwise recompute
def test_sinkhorn_matches_pot(max_cache_bytes):
    X, Y = gapped_pairs(n=40, d=8, seed=11)
    X, Y = X.astype(np.float64), Y[:30].astype(np.float64)
    reg = 0.1  # converges in ~300 iterations at tol 1e-10 (0.05 needs ~3000)
    res = sinkhorn_log(
        X, Y, reg, tol=1e-10, max_iter=5000, dtype=torch.float64, max_cache_bytes=max_cache_bytes
    )
    assert res.converged
    a, b = np.full(40, 1 / 40), np.full(30, 1 / 30)
    M = ot.dist(X, Y)
    P_ref, log = ot.sinkhorn(
        a, b, M, reg, method="sinkhorn_log", stopThr=1e-12, log=True, numItermax=20000
    )
    P = plan(X, Y, res.f, res.g, reg)
    np.testing.assert_allclose(P, P_ref, atol=1e-9, rtol=1e-5)
    # POT's log-scalings: P = exp(log_u - M/reg + log_v); potentials match up to a constant
    f_ref = reg * (log["log_u"] - np.log(a))
    g_ref = reg * (log["log_v"] - np.log(b))
    shift = (res.f - f_ref).mean()
    np.testing.assert_allclose(res.f - shift, f_ref, atol=1e-7)
    np.testing.assert_allclose(res.g + shift, g_ref, atol=1e-7)


def test_entropic_map_of_fitted_points_is_barycentric_projection():
    X, Y = gapped_pairs(n=40, d=8, seed=12)
    X, Y = X.astype(np.float64), Y.astype(np.float64)
    res = sinkhorn_log(X, Y, 0.1, tol=1e-10, max_iter=5000, dtype=torch.float64)
    P = plan(X, Y, res.f, res.g, 0.1)
    T = entropic_map(X, Y, res.g, 0.1, dtype=torch.float64)
    np.testing.assert_allclose(T, (P @ Y) / P.sum(1, keepdims=True), atol=1e-5)


def test_sinkhorn_reducer_directions():
    X, Y = gapped_pairs(n=50, d=8, seed=13)
    r = SinkhornOT(direction="images->texts", reg=0.05, normalize=False, tol=1e-4)
    A, B = r.fit_transform(X, Y)
    np.testing.assert_array_equal(B, Y)
    # the mapped images' mean is the texts' mean (the plan's column marginal)
    np.testing.assert_allclose(A.mean(0), Y.mean(0), atol=5e-4)
    bary = SinkhornOT(direction="barycenter", reg=0.05, normalize=False, tol=1e-4)
    A2, B2 = bary.fit_transform(X, Y)
    np.testing.assert_allclose(A2, (X + A) / 2, atol=1e-5)
    np.testing.assert_allclose(A2.mean(0), B2.mean(0), atol=5e-4)


def test_sinkhorn_not_converged_notice():
    X, Y = gapped_pairs(n=30, d=8, seed=14)
    with pytest.warns(UserWarning, match=r"not converged after 2 iterations"):
        SinkhornOT(reg=0.01, max_iter=2).fit(X, Y)


def test_laplace_matches_pot_transform():
    X, Y = gapped_pairs(n=40, d=8, seed=15)
    Xn, Yn = gapped_pairs(n=10, d=8, seed=16)
    r = LaplaceOT(max_iter=5, normalize=False).fit(X, Y)
    ref = ot.da.EMDLaplaceTransport(max_iter=5)
    ref.fit(Xs=X.astype(np.float64), Xt=Y.astype(np.float64))
    for Q in (X, Xn):
        np.testing.assert_allclose(
            r.transform_images(Q), ref.transform(Xs=Q.astype(np.float64)), atol=1e-5
        )
    np.testing.assert_allclose(
        r.transform_texts(Yn), Yn, atol=1e-6
    )  # images->texts leaves texts alone
    inv = LaplaceOT(max_iter=5, normalize=False, direction="barycenter").fit(X, Y)
    np.testing.assert_allclose(
        inv.transform_texts(Yn),
        (Yn + ref.inverse_transform(Xt=Yn.astype(np.float64))) / 2,
        atol=1e-5,
    )


def test_laplace_size_limit():
    X, Y = gapped_pairs(n=30, d=8)
    with pytest.raises(ModgapError, match=r"30 images is above max_size=20.*Use 'ot-sinkhorn'"):
        LaplaceOT(max_size=20).fit(X, Y)
