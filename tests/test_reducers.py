"""The reducer interface, checked the same way for every registered reducer (scikit-learn's
habit), plus the simple reducers against plain reference formulas."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import scipy.linalg
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import gapped_pairs
from modgap.embeddings import EmbeddingSet
from modgap.errors import InputError, ModgapError, NotFittedError
from modgap.measures.accumulators import Moments
from modgap.reducers import (
    REDUCERS,
    GapShift,
    GaussianMap,
    MeanCentering,
    ProcrustesAlignment,
    Reducer,
    SpectralEmbedding,
    get_reducer,
    load_reducer,
)
from modgap.reducers.gaussian import bures_map, sym_sqrt

pytestmark = pytest.mark.usefixtures("single_thread")

# small settings so every reducer fits in well under a second
SMALL = {
    "spectral": {"n_components": 6, "n_neighbors": 8},
    "ot-laplace": {"max_iter": 5},
    "ot-sinkhorn": {"reg": 0.1},
}


def make(name: str, **extra) -> Reducer:
    return get_reducer(name, **{**SMALL.get(name, {}), **extra})


@pytest.fixture(scope="module")
def data():
    X, Y = gapped_pairs(n=60, d=12, seed=1)
    Xn, Yn = gapped_pairs(n=15, d=12, seed=2)
    return X, Y, Xn, Yn


def test_registry_names():
    assert list(REDUCERS) == [
        "center",
        "shift",
        "gaussian",
        "procrustes",
        "spectral",
        "ot-laplace",
        "ot-sinkhorn",
    ]
    for name, cls in REDUCERS.items():
        assert cls.name == name
        assert isinstance(cls.supports_out_of_sample, bool)
        assert isinstance(cls.requires_pairs, bool)
    assert REDUCERS["procrustes"].requires_pairs


def test_unknown_reducer_and_parameter():
    with pytest.raises(ModgapError, match=r"unknown reducer 'pca'.*center, shift"):
        get_reducer("pca")
    with pytest.raises(ModgapError, match=r"'shift' has no parameter 'lambda'.*lam"):
        get_reducer("shift", **{"lambda": 1})


@pytest.mark.parametrize("name", list(REDUCERS))
def test_params_roundtrip(name):
    r = make(name)
    params = r.get_params()
    clone = type(r)(**params)
    assert clone.get_params() == params
    key = next(iter(params))
    assert r.set_params(**{key: params[key]}) is r
    assert repr(r).startswith(type(r).__name__ + "(")


@pytest.mark.parametrize("name", list(REDUCERS))
def test_fit_transform_save_load_roundtrip(name, data, tmp_path):
    X, Y, Xn, Yn = data
    r = make(name)
    assert r.fit(X, Y) is r
    A, B = r.transform_images(X), r.transform_texts(Y)
    FA, FB = make(name).fit_transform(X, Y)
    np.testing.assert_allclose(FA, A, atol=2e-5)
    np.testing.assert_allclose(FB, B, atol=2e-5)
    assert A.dtype == np.float32 and A.shape[0] == 60 and B.shape[0] == 60
    assert np.isfinite(A).all() and np.isfinite(B).all()
    # out of sample: every registered reducer claims it
    assert r.supports_out_of_sample
    An, Bn = r.transform_images(Xn), r.transform_texts(Yn)
    assert An.shape == (15, A.shape[1]) and Bn.shape == (15, B.shape[1])
    path = r.save(tmp_path / f"{name}.safetensors")
    loaded = load_reducer(path)
    assert type(loaded) is type(r)
    assert loaded.get_params() == r.get_params()
    for got, want in (
        (loaded.transform_images(X), A),
        (loaded.transform_texts(Y), B),
        (loaded.transform_images(Xn), An),
        (loaded.transform_texts(Yn), Bn),
    ):
        np.testing.assert_array_equal(got, want)
    assert type(r).load(path).get_params() == r.get_params()


@pytest.mark.parametrize("name", list(REDUCERS))
def test_unfitted_and_wrong_dimension_errors(name, data, tmp_path):
    X, Y, _, _ = data
    r = make(name)
    with pytest.raises(NotFittedError, match=f"'{name}' is not fitted yet"):
        r.transform_images(X)
    with pytest.raises(NotFittedError, match=r"not fitted"):
        r.save(tmp_path / "x.safetensors")
    r.fit(X, Y)
    with pytest.raises(InputError, match=f"has 5 dimensions but reducer '{name}' was fitted on 12"):
        r.transform_texts(np.full((3, 5), 5**-0.5, np.float32))
    with pytest.raises(InputError, match=r"must be a 2-D"):
        r.transform_images(np.ones(12, np.float32))


@pytest.mark.parametrize("name", list(REDUCERS))
def test_mismatched_dimensions_at_fit(name):
    X, _ = gapped_pairs(n=30, d=12)
    _, Y = gapped_pairs(n=30, d=10)
    with pytest.raises(InputError, match=r"'text_emb' has 10 dimensions but 12 were expected"):
        make(name).fit(X, Y)


def test_nan_input_rejected(data):
    X, Y, _, _ = data
    X = X.copy()
    X[3, 0] = np.nan
    with pytest.raises(InputError, match=r"NaN/inf in 1 row"):
        MeanCentering().fit(X, Y)


def test_fit_accepts_embedding_set(data):
    X, Y, _, _ = data
    a = GapShift().fit(EmbeddingSet(X, Y))
    b = GapShift().fit(X, Y)
    np.testing.assert_array_equal(a.gap_, b.gap_)
    with pytest.raises(ModgapError, match=r"needs image_emb and text_emb"):
        GapShift().fit(X)


def test_bad_parameter_values(data):
    X, Y, _, _ = data
    with pytest.raises(ModgapError, match=r"direction='sideways'.*images->texts"):
        GaussianMap(direction="sideways").fit(X, Y)
    with pytest.raises(ModgapError, match=r"n_neighbors=0.*must be in"):
        SpectralEmbedding(n_neighbors=0).fit(X, Y)
    with pytest.raises(ModgapError, match=r"lam='1'.*a number"):
        GapShift(lam="1").fit(X, Y)


def test_procrustes_needs_pairs():
    X, _ = gapped_pairs(n=30, d=8)
    _, Y = gapped_pairs(n=20, d=8)
    with pytest.raises(InputError, match=r"'procrustes' needs image-text pairs.*30 images, 20"):
        ProcrustesAlignment().fit(X, Y)
    # unpaired reducers fit unequal counts
    MeanCentering().fit(X, Y)


# -- corrupted / foreign files -----------------------------------------------------------------
@pytest.fixture
def saved(data, tmp_path):
    X, Y, _, _ = data
    return GapShift().fit(X, Y).save(tmp_path / "shift.safetensors")


def test_load_missing_file(tmp_path):
    with pytest.raises(InputError, match=r"nope.safetensors: no such reducer file"):
        load_reducer(tmp_path / "nope.safetensors")


def test_load_truncated_file(saved):
    raw = saved.read_bytes()
    saved.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(InputError, match=r"not a readable reducer file.*truncated or corrupted"):
        load_reducer(saved)


def test_load_garbage_file(tmp_path):
    p = tmp_path / "g.safetensors"
    p.write_bytes(b"hello, not a model at all")
    with pytest.raises(InputError, match=r"g.safetensors: not a readable reducer file"):
        load_reducer(p)


def test_load_altered_array_fails_checksum(saved):
    raw = bytearray(saved.read_bytes())
    raw[-3] ^= 0xFF  # flip bits inside the tensor data
    saved.write_bytes(bytes(raw))
    with pytest.raises(InputError, match=r"corrupted reducer file \(checksum mismatch"):
        load_reducer(saved)


def _rewrite_header(path, edit):
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    meta = json.loads(header["__metadata__"]["modgap"])
    edit(meta)
    header["__metadata__"]["modgap"] = json.dumps(meta)
    new = json.dumps(header).encode()
    new += b" " * ((8 - len(new) % 8) % 8)
    path.write_bytes(struct.pack("<Q", len(new)) + new + raw[8 + n :])


def test_load_unknown_reducer_and_newer_format(saved):
    _rewrite_header(saved, lambda m: m.update(reducer="umap"))
    with pytest.raises(InputError, match=r"unknown reducer 'umap' in file"):
        load_reducer(saved)
    _rewrite_header(saved, lambda m: m.update(reducer="shift", format_version=99))
    with pytest.raises(InputError, match=r"format version 99 is newer"):
        load_reducer(saved)


def test_load_wrong_class_and_foreign_safetensors(saved, tmp_path):
    with pytest.raises(InputError, match=r"holds a 'shift' reducer, not a 'spectral' one"):
        SpectralEmbedding.load(saved)
    from safetensors.numpy import save_file

    p = tmp_path / "plain.safetensors"
    save_file({"w": np.zeros(3, np.float32)}, str(p))
    with pytest.raises(InputError, match=r"not a modgap reducer file"):
        load_reducer(p)


# -- the simple reducers against their formulas -------------------------------------------------
def test_center_and_shift_formulas(data):
    X, Y, Xn, _ = data
    mx, my = X.mean(0), Y.mean(0)
    A, B = MeanCentering(normalize=False).fit_transform(X, Y)
    np.testing.assert_allclose(A, X - mx, atol=1e-6)
    np.testing.assert_allclose(B, Y - my, atol=1e-6)
    A = MeanCentering().fit(X, Y).transform_images(Xn)
    ref = Xn - mx
    np.testing.assert_allclose(A, ref / np.linalg.norm(ref, axis=1, keepdims=True), atol=1e-6)
    for lam in (0.0, 0.5, 1.0):
        A, B = GapShift(lam=lam, normalize=False).fit_transform(X, Y)
        np.testing.assert_allclose(A, X - lam * (mx - my) / 2, atol=1e-6)
        np.testing.assert_allclose(B, Y + lam * (mx - my) / 2, atol=1e-6)
    A, B = GapShift(lam=1.0, normalize=False).fit_transform(X, Y)
    assert np.linalg.norm(A.mean(0) - B.mean(0)) < 1e-6


def test_bures_map_properties():
    rng = np.random.default_rng(0)
    M1, M2 = rng.standard_normal((2, 6, 6))
    S1, S2 = M1 @ M1.T + 0.1 * np.eye(6), M2 @ M2.T + 0.1 * np.eye(6)
    A = bures_map(S1, S2)
    np.testing.assert_allclose(A, A.T, atol=1e-10)
    assert np.linalg.eigvalsh(A).min() > 0
    np.testing.assert_allclose(A @ S1 @ A, S2, atol=1e-8)
    np.testing.assert_allclose(bures_map(S2, S1), np.linalg.inv(A), atol=1e-8)
    np.testing.assert_allclose(sym_sqrt(S1) @ sym_sqrt(S1), S1, atol=1e-10)


def test_gaussian_map_moves_moments():
    X, Y = gapped_pairs(n=400, d=6, seed=3)  # n >> d: full-rank covariances
    A, B = GaussianMap(ridge=0.0, normalize=False).fit_transform(X, Y)
    np.testing.assert_allclose(A.mean(0), Y.mean(0), atol=1e-5)
    np.testing.assert_allclose(np.cov(A.T, bias=True), np.cov(Y.T, bias=True), atol=1e-5)
    np.testing.assert_array_equal(B, Y)
    A, B = GaussianMap(direction="texts->images", ridge=0.0, normalize=False).fit_transform(X, Y)
    np.testing.assert_allclose(np.cov(B.T, bias=True), np.cov(X.T, bias=True), atol=1e-5)
    # barycenter: both modalities land on the same Gaussian
    A, B = GaussianMap(direction="barycenter", ridge=0.0, normalize=False).fit_transform(X, Y)
    np.testing.assert_allclose(A.mean(0), B.mean(0), atol=1e-5)
    np.testing.assert_allclose(np.cov(A.T, bias=True), np.cov(B.T, bias=True), atol=1e-5)


def _moments(Z):
    return Moments(covariance=True).update(Z.astype(np.float64))


def test_gaussian_streaming_and_sharded_fit_agree(data):
    X, Y, Xn, _ = data
    ref = GaussianMap().fit(X, Y)
    small = GaussianMap(batch_size=7).fit(X, Y)
    acc_i = _moments(X[:25]).merge(_moments(X[25:]))
    acc_t = _moments(Y[:40]).merge(_moments(Y[40:]))
    sharded = GaussianMap().fit_from_moments(acc_i, acc_t)
    for r in (small, sharded):
        np.testing.assert_allclose(r.transform_images(Xn), ref.transform_images(Xn), atol=1e-5)
    assert sharded.n_images_fit_ == 60
    with pytest.raises(ModgapError, match=r"image moments are 12-d but text moments are 3-d"):
        GaussianMap().fit_from_moments(acc_i, _moments(np.ones((4, 3))))
    with pytest.raises(ModgapError, match=r"need Moments\(covariance=True\)"):
        GaussianMap().fit_from_moments(Moments(), acc_t)


def test_procrustes_matches_scipy_and_recovers_rotation():
    rng = np.random.default_rng(0)
    X, _ = gapped_pairs(n=50, d=8, seed=4)
    Q, _ = np.linalg.qr(rng.standard_normal((8, 8)))
    Y = (X @ Q).astype(np.float32)
    r = ProcrustesAlignment().fit(X, Y)
    np.testing.assert_allclose(r.rotation_, Q, atol=1e-5)
    X2, Y2 = gapped_pairs(n=50, d=8, seed=5)
    ref, _ = scipy.linalg.orthogonal_procrustes(X2.astype(np.float64), Y2.astype(np.float64))
    np.testing.assert_allclose(ProcrustesAlignment().fit(X2, Y2).rotation_, ref, atol=1e-8)
    B = ProcrustesAlignment(direction="texts->images").fit(X, Y).transform_texts(Y)
    np.testing.assert_allclose(B, X, atol=1e-5)


def test_procrustes_uses_text_to_image():
    X, Y = gapped_pairs(n=30, d=8, seed=6)
    t2i = np.repeat(np.arange(30), 2)
    Y2 = np.vstack([Y, Y])[np.argsort(np.r_[np.arange(30), np.arange(30)], kind="stable")]
    a = ProcrustesAlignment().fit(X, Y2, text_to_image=t2i)
    b = ProcrustesAlignment().fit(X, Y)
    np.testing.assert_allclose(a.rotation_, b.rotation_, atol=1e-6)


# -- invariance: a rotation shared by both modalities commutes with every reducer -------------
@settings(max_examples=6, deadline=None)
@given(
    name=st.sampled_from(["center", "shift", "gaussian", "procrustes", "ot-sinkhorn"]),
    seed=st.integers(0, 2**16),
)
def test_shared_rotation_commutes(name, seed):
    X, Y = gapped_pairs(n=40, d=6, seed=seed)
    Q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((6, 6)))
    Q = Q.astype(np.float32)
    A, B = make(name).fit_transform(X, Y)
    AQ, BQ = make(name).fit_transform(X @ Q, Y @ Q)
    np.testing.assert_allclose(AQ, A @ Q, atol=2e-4)
    np.testing.assert_allclose(BQ, B @ Q, atol=2e-4)


@settings(max_examples=3, deadline=None)
@given(seed=st.integers(0, 2**16))
def test_spectral_invariant_to_shared_rotation(seed):
    # the graph depends on dot products only, so the embedding is unchanged up to the sign of
    # each singular vector: compare Gram matrices
    X, Y = gapped_pairs(n=40, d=6, seed=seed)
    Q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((6, 6)))
    r = SpectralEmbedding(n_components=4, n_neighbors=None, normalize=False)
    Z = np.vstack(r.fit_transform(X, Y)).astype(np.float64)
    r2 = SpectralEmbedding(n_components=4, n_neighbors=None, normalize=False)
    ZQ = np.vstack(r2.fit_transform(X @ Q, Y @ Q)).astype(np.float64)
    np.testing.assert_allclose(ZQ @ ZQ.T, Z @ Z.T, atol=1e-4 * np.abs(Z @ Z.T).max())


def test_procrustes_with_fewer_pairs_than_dimensions_does_not_depend_on_pair_order():
    from modgap.reducers.procrustes import orthogonal_procrustes

    X, Y = gapped_pairs(n=40, d=96, seed=12)  # 40 pairs in 96 dimensions
    perm = np.random.default_rng(0).permutation(40)
    R1 = orthogonal_procrustes(X, Y)
    R2 = orthogonal_procrustes(X[perm], Y[perm])
    np.testing.assert_allclose(R1, R2, atol=1e-9)
    np.testing.assert_allclose(R1 @ R1.T, np.eye(96), atol=1e-9)
    # optimal: no orthogonal map fits the pairs better than the plain SVD solution
    U, _, Vt = np.linalg.svd(X.astype(np.float64).T @ Y)
    assert np.linalg.norm(X @ R1 - Y) == pytest.approx(np.linalg.norm(X @ (U @ Vt) - Y))
    # the identity on directions the data never reach
    null = np.linalg.svd(np.vstack([X, Y]))[2][-10:].T  # orthogonal to every x and y
    np.testing.assert_allclose(R1 @ null, null, atol=1e-8)
    # so held-out transforms agree too
    Xn, _ = gapped_pairs(n=20, d=96, seed=13)
    a = ProcrustesAlignment().fit(X, Y).transform_images(Xn)
    b = ProcrustesAlignment().fit(X[perm], Y[perm]).transform_images(Xn)
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_every_fit_route_checks_parameter_types(tmp_path):
    from modgap.errors import ModgapError
    from modgap.stream import open_source
    from modgap.stream.fit import fit_streaming

    moments = {"count": 10, "mean": np.zeros(3), "cov": np.eye(3)}
    with pytest.raises(ModgapError, match="normalize='no'"):
        get_reducer("gaussian", normalize="no").fit_from_moments(moments, moments)
    X, Y = gapped_pairs(n=20, d=4, seed=1)
    np.save(tmp_path / "i.npy", X)
    np.save(tmp_path / "t.npy", Y)
    src = open_source(tmp_path / "i.npy", tmp_path / "t.npy")
    with pytest.raises(ModgapError, match="normalize='no'"):
        fit_streaming(get_reducer("center", normalize="no"), src)
