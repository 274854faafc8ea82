"""Generic checks run on every registry entry, in the spirit of scikit-learn's
``check_estimator``: each reducer (:data:`modgap.reducers.REDUCERS`), each score correction
(:data:`modgap.tasks.scoring.CORRECTIONS`), each file format (:data:`modgap.io.FORMATS`) and each
engine (:data:`modgap.stream.ENGINES`) is checked the same way, so a new entry needs no new test.

Per-reducer checks that predate this module (params round trip, save/load bit for bit, errors
before fit) stay in ``test_reducers.py``; these add the contract they did not cover.
"""

from __future__ import annotations

import inspect
import warnings

import numpy as np
import pytest
from sklearn.base import clone

from conftest import gapped_pairs
from modgap.embeddings import EmbeddingSet
from modgap.errors import InputError, ModgapError, ModgapNotice, NotFittedError
from modgap.io import FORMATS, open_source, read_embeddings, write_embeddings
from modgap.measures.accumulators import Moments
from modgap.reducers import REDUCERS, Reducer, get_reducer
from modgap.stream import ENGINES, get_engine, stream_measures, stream_retrieval
from modgap.tasks.scoring import CORRECTIONS, ScoreCorrection, get_correction

pytestmark = pytest.mark.usefixtures("single_thread")

# small settings so every entry runs in well under a second
SMALL = {
    "spectral": {"n_components": 6, "n_neighbors": 8},
    "ot-laplace": {"max_iter": 5},
    "ot-sinkhorn": {"reg": 0.1},
}
# the attributes every fitted reducer has besides its declared fitted arrays and scalars
BASE_FITTED = {"n_features_in_", "n_images_fit_", "n_texts_fit_"}
# a value of no parameter's type: refused by the type check of every parameter
NOT_A_PARAM = [object()]


def make(name: str, **extra) -> Reducer:
    return get_reducer(name, **{**SMALL.get(name, {}), **extra})


@pytest.fixture(scope="module")
def pairs():
    X, Y = gapped_pairs(n=48, d=10, seed=11)
    Xn, Yn = gapped_pairs(n=9, d=10, seed=12)
    return X, Y, Xn, Yn


def _fitted_names(est) -> set[str]:
    """Public attributes set by fit (scikit-learn: a trailing underscore)."""
    return {k for k in vars(est) if k.endswith("_") and not k.startswith("_")}


def _dims(spec: str, r: Reducer, X, Y) -> tuple[int, ...]:
    sizes = {"d": X.shape[1], "ni": X.shape[0], "nt": Y.shape[0]}
    sizes["k"] = getattr(r, "n_components", 0)
    return tuple(sizes[s] for s in spec.split(",")) if spec else ()


# == reducers =================================================================================
@pytest.mark.parametrize("name", list(REDUCERS))
def test_reducer_stores_parameters_unchanged(name):
    cls = REDUCERS[name]
    defaults = {
        p.name: p.default
        for p in inspect.signature(cls.__init__).parameters.values()
        if p.name != "self"
    }
    r = cls()
    assert r.get_params() == defaults  # __init__ stores, validates nothing
    # a bad value is stored as given too (checked at fit, scikit-learn's rule)
    for key in defaults:
        assert getattr(cls(**{key: NOT_A_PARAM}), key) is NOT_A_PARAM
    c = clone(make(name))
    assert type(c) is cls and c.get_params() == make(name).get_params()
    assert not c.is_fitted()


@pytest.mark.parametrize("name", list(REDUCERS))
def test_reducer_refuses_bad_parameter_types_before_reading_data(name):
    for key in REDUCERS[name]().get_params():
        r = make(name, **{key: NOT_A_PARAM})
        with pytest.raises(ModgapError, match=rf"reducer '{name}': parameter {key}="):
            r.check_params()
        # the data is not even looked at: a string in place of arrays gives the same error
        with pytest.raises(ModgapError, match=rf"parameter {key}="):
            r.fit("no such data", "nor this")
        assert not r.is_fitted()


@pytest.mark.parametrize("name", list(REDUCERS))
def test_reducer_fit_sets_declared_attributes_and_keeps_parameters(name, pairs):
    X, Y, _, _ = pairs
    r = make(name)
    before = r.get_params()
    assert r.fit(X, Y) is r
    assert r.get_params() == before  # fit never rewrites a parameter
    cls = REDUCERS[name]
    assert _fitted_names(r) == set(cls.fitted_arrays) | set(cls.fitted_scalars) | BASE_FITTED
    for attr, spec in cls.fitted_arrays.items():
        value = getattr(r, attr)
        assert isinstance(value, np.ndarray), attr
        assert value.shape == _dims(spec, r, X, Y), (attr, value.shape, spec)
    for attr, kind in cls.fitted_scalars.items():
        assert isinstance(getattr(r, attr), kind), attr
    assert (r.n_features_in_, r.n_images_fit_, r.n_texts_fit_) == (10, 48, 48)


@pytest.mark.parametrize("name", list(REDUCERS))
def test_reducer_transform_shapes_and_unit_rows(name, pairs):
    X, Y, Xn, Yn = pairs
    r = make(name).fit(X, Y)
    A, B = r.transform_images(X), r.transform_texts(Y)
    assert A.dtype == B.dtype == np.float32
    assert A.shape[0] == 48 and B.shape[0] == 48 and A.shape[1] == B.shape[1]
    if getattr(r, "normalize", False):
        np.testing.assert_allclose(np.linalg.norm(A, axis=1), 1, atol=1e-5)
        np.testing.assert_allclose(np.linalg.norm(B, axis=1), 1, atol=1e-5)
    # an empty batch keeps the output width
    assert r.transform_texts(np.empty((0, 10), np.float32)).shape == (0, B.shape[1])
    # a set is transformed with its pairing and class prompts
    cte = np.stack([Yn[:3], Yn[3:6]], axis=1)  # 3 classes x 2 templates
    emb = EmbeddingSet(Xn, Yn, labels=np.arange(9) % 3, class_text_emb=cte)
    out = r.transform_set(emb)
    assert out.class_text_emb.shape == (3, 2, B.shape[1])
    np.testing.assert_array_equal(out.labels, emb.labels)


@pytest.mark.parametrize("name", list(REDUCERS))
def test_reducer_every_transform_refuses_before_fit(name, pairs):
    X, Y, _, _ = pairs
    r = make(name)
    for call in (
        lambda: r.transform_images(X),
        lambda: r.transform_texts(Y),
        lambda: r.transform_set(EmbeddingSet(X, Y)),
    ):
        with pytest.raises(NotFittedError, match=f"'{name}' is not fitted yet"):
            call()


@pytest.mark.parametrize("name", list(REDUCERS))
def test_reducer_out_of_sample_promise(name, pairs):
    """A reducer that says it maps new rows does (one without the extension is scored on its
    fitted rows by the bench: tests/test_bench.py)."""
    X, Y, Xn, Yn = pairs
    r = make(name).fit(X, Y)
    if r.supports_out_of_sample:
        assert r.transform_images(Xn).shape[0] == 9
        assert r.transform_texts(Yn).shape[0] == 9
    # the fitted rows themselves go through either way, the same bits for the same rows
    np.testing.assert_array_equal(r.transform_images(X), r.transform_images(X.copy()))


def _shard_moments(Z: np.ndarray, covariance: bool, cut: int) -> Moments:
    a = Moments(covariance=covariance, exact=True).update(Z[:cut].astype(np.float64))
    return a.merge(Moments(covariance=covariance, exact=True).update(Z[cut:].astype(np.float64)))


def _from_moments(name: str, X, Y, cut: int) -> Reducer:
    need = REDUCERS[name].moment_fit
    pairs = None
    if need.get("cross"):
        # row i <-> row i here; summed shard by shard like a streamed pass
        cross = X[:cut].astype(np.float64).T @ Y[:cut] + X[cut:].astype(np.float64).T @ Y[cut:]
        pairs = {"n": X.shape[0], "cross": cross}
    cov = bool(need.get("covariance"))
    return make(name).fit_from_moments(
        _shard_moments(X, cov, cut), _shard_moments(Y, cov, cut), pairs
    )


MOMENT_FITTED = [n for n, c in REDUCERS.items() if c.moment_fit is not None]


@pytest.mark.parametrize("name", MOMENT_FITTED)
def test_moment_fit_equals_fit_on_the_same_rows(name, pairs):
    X, Y, Xn, Yn = pairs
    ref = make(name).fit(X, Y)
    for cut in (1, 17, 47):
        got = _from_moments(name, X, Y, cut)
        assert _fitted_names(got) == _fitted_names(ref)
        for attr in REDUCERS[name].fitted_arrays:
            a, b = getattr(got, attr), getattr(ref, attr)
            if attr.endswith("mean_") or attr == "gap_":
                np.testing.assert_array_equal(a, b, err_msg=attr)  # exact sums: same bits
            else:
                np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12, err_msg=attr)
        np.testing.assert_allclose(got.transform_images(Xn), ref.transform_images(Xn), atol=1e-6)
        np.testing.assert_allclose(got.transform_texts(Yn), ref.transform_texts(Yn), atol=1e-6)


@pytest.mark.parametrize("name", MOMENT_FITTED)
def test_moment_fit_does_not_depend_on_the_order_of_the_pairs(name, pairs):
    X, Y, _, _ = pairs
    perm = np.random.default_rng(3).permutation(X.shape[0])
    a, b = make(name).fit(X, Y), make(name).fit(X[perm], Y[perm])
    for attr in REDUCERS[name].fitted_arrays:
        x, y = getattr(a, attr), getattr(b, attr)
        if attr.endswith("mean_") or attr == "gap_":
            np.testing.assert_array_equal(x, y, err_msg=attr)
        else:
            np.testing.assert_allclose(x, y, rtol=1e-9, atol=1e-12, err_msg=attr)


@pytest.mark.parametrize("name", [n for n in REDUCERS if n not in MOMENT_FITTED])
def test_reducer_without_moment_fit_says_so(name):
    with pytest.raises(ModgapError, match=f"'{name}' needs the rows themselves"):
        make(name).fit_from_moments(Moments(), Moments())


# == score corrections ========================================================================
@pytest.fixture(scope="module")
def banks():
    X, Y = gapped_pairs(n=40, d=8, seed=21)
    Xe, Ye = gapped_pairs(n=25, d=8, seed=22)
    return X, Y, Xe, Ye


@pytest.mark.parametrize("name", list(CORRECTIONS))
def test_correction_parameters_and_clone(name):
    cls = CORRECTIONS[name]
    defaults = {
        p.name: p.default
        for p in inspect.signature(cls.__init__).parameters.values()
        if p.name != "self"
    }
    c = cls()
    assert isinstance(c, ScoreCorrection) and c.get_params() == defaults
    for key in defaults:
        assert getattr(cls(**{key: NOT_A_PARAM}), key) is NOT_A_PARAM
    c2 = clone(get_correction(name))
    assert type(c2) is cls and c2.get_params() == defaults
    assert c2.set_params(**defaults) is c2


@pytest.mark.parametrize("name", list(CORRECTIONS))
def test_correction_refuses_bad_parameters_before_reading_data(name):
    for key in CORRECTIONS[name]().get_params():
        for bad in (NOT_A_PARAM, -1, True):
            c = get_correction(name, **{key: bad})
            with pytest.raises(ModgapError, match=rf"correction '{name}': parameter {key}="):
                c.fit("no such data", "nor this")
            assert not c.__sklearn_is_fitted__()


@pytest.mark.parametrize("name", list(CORRECTIONS))
def test_correction_fit_offsets_shapes_and_not_fitted(name, banks):
    X, Y, Xe, Ye = banks
    c = get_correction(name)
    with pytest.raises(NotFittedError, match="not fitted yet"):
        c.offsets(Xe, Ye)
    assert c.fit(X, Y) is c
    assert _fitted_names(c) == {"image_bank_", "text_bank_", "n_features_in_"}
    off = c.offsets(Xe, Ye[:20])
    assert off.image_offset.shape == (25,) and off.text_offset.shape == (20,)
    for v in (off.image_offset, off.text_offset):
        assert v.dtype == np.float64 and np.isfinite(v).all()
    for mask, n in ((off.text_active, 20), (off.image_active, 25)):
        assert mask is None or (mask.dtype == bool and mask.shape == (n,))


@pytest.mark.parametrize("name", list(CORRECTIONS))
def test_correction_follows_the_order_of_the_candidates(name, banks):
    X, Y, Xe, Ye = banks
    c = get_correction(name).fit(X, Y)
    pi, pt = np.random.default_rng(5).permutation(25), np.random.default_rng(6).permutation(25)
    a, b = c.offsets(Xe, Ye), c.offsets(Xe[pi], Ye[pt])
    np.testing.assert_array_equal(b.image_offset, a.image_offset[pi])
    np.testing.assert_array_equal(b.text_offset, a.text_offset[pt])
    if a.text_active is not None:  # which queries are corrected: follows the queries
        np.testing.assert_array_equal(b.text_active, a.text_active[pt])
        np.testing.assert_array_equal(b.image_active, a.image_active[pi])


# == formats ==================================================================================
def _small_set() -> EmbeddingSet:
    """7 images, 2-3 captions each (not row by row), labels and class prompts (3 x 2)."""
    X, _ = gapped_pairs(n=7, d=6, seed=31)
    _, Y = gapped_pairs(n=17, d=6, seed=32)
    t2i = np.r_[np.repeat(np.arange(7), 2), [0, 3, 6]]
    _, C = gapped_pairs(n=6, d=6, seed=33)
    return EmbeddingSet(
        X,
        Y,
        text_to_image=t2i,
        labels=np.array([0, 1, 2, 0, 1, 2, 0]),
        class_names=["cat", "dog", "owl"],
        class_text_emb=C.reshape(3, 2, 6),
    )


def _paths(fmt, tmp_path) -> dict:
    """Where a set goes in ``fmt``: its path, plus a texts and a pairs file for formats stored
    as two files (the pairing is not row by row)."""
    base = tmp_path / ("set" if fmt.folder else "set" + fmt.suffixes[0])
    if not fmt.pair_files:
        return {"path": base}
    return {
        "path": base,
        "texts": tmp_path / ("texts" + fmt.suffixes[0]),
        "pairs": tmp_path / "pairs.npy",
    }


def _write(fmt, emb, tmp_path, **kw) -> dict:
    where = _paths(fmt, tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ModgapNotice)
        write_embeddings(emb, where["path"], fmt.name, **{**kw, **_extra(where)})
    where["dropped"] = " ".join(str(w.message) for w in caught)
    return where


def _extra(where: dict) -> dict:
    return {k: where[k] for k in ("texts", "pairs") if k in where}


def _read(where: dict) -> EmbeddingSet:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ModgapNotice)
        return read_embeddings(where["path"], where.get("texts"), pairs=where.get("pairs"))


WRITABLE = [n for n, f in FORMATS.items() if f.write is not None]
STREAMED = [n for n, f in FORMATS.items() if f.write is not None and f.stream is not None]


@pytest.mark.parametrize("name", WRITABLE)
def test_format_write_read_round_trip(name, tmp_path):
    fmt, emb = FORMATS[name], _small_set()
    where = _write(fmt, emb, tmp_path, shard_size=3)
    got = _read(where)
    np.testing.assert_array_equal(got.image_emb, emb.image_emb)
    np.testing.assert_array_equal(got.text_emb, emb.text_emb)
    np.testing.assert_array_equal(got.text_to_image, emb.text_to_image)
    # optional fields: kept, or left out with a notice that names them
    for field in ("labels", "class_names", "class_text_emb"):
        value = getattr(got, field)
        if value is None:
            assert field in where["dropped"], (name, field, where["dropped"])
        elif field == "class_names":
            assert list(value) == list(emb.class_names)
        else:
            np.testing.assert_array_equal(value, getattr(emb, field))


@pytest.mark.parametrize("name", STREAMED)
def test_format_source_blocks_equal_the_read_set(name, tmp_path):
    fmt, emb = FORMATS[name], _small_set()
    where = _write(fmt, emb, tmp_path, shard_size=3)
    got = _read(where)
    src = open_source(where["path"], where.get("texts"), pairs=where.get("pairs"), format=name)
    assert (src.n_images, src.n_texts, src.dim) == (7, 17, 6)
    for modality, want in (("image", got.image_emb), ("text", got.text_emb)):
        rows = [b for shard in src.shards for _, b in src.blocks(shard, modality, 2)]
        np.testing.assert_array_equal(np.concatenate(rows), want)
        np.testing.assert_array_equal(src.gather(modality, [4, 0, 4]), want[[4, 0, 4]])
    np.testing.assert_array_equal(src.pairs(), got.text_to_image)


def _one_line_input_error(call, path) -> None:
    with pytest.raises(InputError) as info:
        call()
    text = str(info.value)
    assert "\n" not in text.strip() and str(path) in text, text


def _damage(where: dict, how: str):
    """Empty or truncate the (first) embedding file of a written set; return that file."""
    path = where["path"]
    if path.is_dir():
        path = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix != ".json")[0]
    raw = path.read_bytes()
    path.write_bytes(b"" if how == "empty" else raw[: len(raw) // 2])
    return path


@pytest.mark.parametrize("how", ["empty", "truncated"])
@pytest.mark.parametrize("name", WRITABLE)
def test_format_damaged_file_is_one_line_naming_it(name, how, tmp_path):
    fmt = FORMATS[name]
    where = _write(fmt, _small_set(), tmp_path)
    bad = _damage(where, how)
    _one_line_input_error(lambda: _read(where), bad.name)
    if fmt.stream is not None:

        def stream_all():
            src = open_source(where["path"], where.get("texts"), pairs=where.get("pairs"))
            for shard in src.shards:
                for modality in ("image", "text"):
                    for _ in src.blocks(shard, modality, 4):
                        pass

        _one_line_input_error(stream_all, bad.name)


# == engines ==================================================================================
# how a test starts each engine: small and in this process where it can
ENGINE_ARGS = {"dask": {"n_workers": 2, "processes": False}}


def _engine(name: str):
    if name == "dask":
        pytest.importorskip(
            "distributed", reason="dask.distributed is not installed (the 'scale' extra)"
        )
    return get_engine(name, **ENGINE_ARGS.get(name, {}))


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    X, Y = gapped_pairs(n=60, d=8, seed=41)
    path = tmp_path_factory.mktemp("engines") / "set"
    write_embeddings(EmbeddingSet(X, Y), path, shard_size=13)
    return open_source(path)


@pytest.mark.parametrize("name", list(ENGINES))
def test_engine_gives_the_local_bits(name, folder):
    local_m = stream_measures(folder, sample_queries=20)
    local_r = stream_retrieval(folder, sample_queries=20, mixed=False)
    with _engine(name) as engine:
        got_m = stream_measures(folder, sample_queries=20, engine=engine)
        got_r = stream_retrieval(folder, sample_queries=20, mixed=False, engine=engine)
    assert "hubness_skew_t2i" in local_m and "rsum" in local_r  # sampled keys compared too
    for key, value in local_m.items():
        if isinstance(value, float | int | np.floating):
            assert got_m[key] == value, (key, got_m[key], value)
    for key, value in local_r.items():
        if isinstance(value, float | int | np.floating):
            assert got_r[key] == value, (key, got_r[key], value)
