"""One row preparation: :func:`modgap._array.prepare_rows` checks rows and makes them unit-norm
for the readers, the sources, the measures, the tasks and the streamed kernels alike."""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np
import pytest

from modgap._array import NORM_TOL, UNIT_TOL, prepare_rows
from modgap.compute import Compute
from modgap.embeddings import EmbeddingSet
from modgap.errors import InputError
from modgap.io import read_embeddings
from modgap.measures import measure_all
from modgap.stream import open_source, stream_measures


def _kinds(seed: int = 0, n: int = 40, d: int = 16) -> dict[str, np.ndarray]:
    """Rows of every kind the preparation meets: float16 storage (~1e-4 off unit), rows
    normalised in float32 (~1e-7 off), rows far off unit, and rows exactly unit."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n, d))
    u = a / np.linalg.norm(a, axis=1, keepdims=True)
    exact = np.zeros((n, d), np.float32)
    exact[np.arange(n), np.arange(n) % d] = 1.0
    return {
        "float16": u.astype(np.float16),
        "float32": u.astype(np.float32),
        "off": (a * rng.uniform(0.2, 5, size=(n, 1))).astype(np.float32),
        "unit": exact,
    }


KINDS = list(_kinds())


def test_the_old_row_helpers_are_gone():
    gone = {
        "modgap._array": ["as_float_matrix", "normalize_off_rows", "checked_row_norms"],
        "modgap.io.source": ["prepare_rows"],
        "modgap.measures._common": ["unit_rows"],
        "modgap.measures.hubness": ["unit32"],
        "modgap.stream.kernels": ["unit64", "pool_rows", "unit_block", "pool_block"],
        "modgap.stream.blocks": ["task_rows"],
        "modgap.stream.retrieval": ["task_rows"],
        "modgap.stream.hubness": ["unit32_rows"],
    }
    for module, names in gone.items():
        m = importlib.import_module(module)
        for name in names:
            # gone, or the one function imported under its own name
            assert getattr(m, name, prepare_rows) is prepare_rows, f"{module}.{name}"
    assert not hasattr(importlib.import_module("modgap.stream.kernels"), "unit64_block")


@pytest.mark.parametrize("kind", KINDS)
def test_the_tolerance_rule(kind):
    x = _kinds()[kind]
    stored = prepare_rows(x, "image_emb")
    assert stored.dtype == np.float32
    n = np.linalg.norm(x.astype(np.float64), axis=1)
    kept = np.abs(n - 1) <= NORM_TOL
    # rows within 1e-3 of unit keep their bits (float16 files, float32-normalised rows)
    np.testing.assert_array_equal(stored[kept], x[kept].astype(np.float32))
    assert kind != "off" or not kept.any()
    ns = np.linalg.norm(stored.astype(np.float64), axis=1)
    assert np.all(np.abs(ns - 1) <= NORM_TOL)
    # exact rows: every row divided by its float64 norm; float32 = the nearest float32
    x64 = prepare_rows(x, "image_emb", unit="exact", dtype=np.float64)
    s64 = stored.astype(np.float64)
    np.testing.assert_array_equal(x64, s64 / np.sqrt(np.einsum("ij,ij->i", s64, s64))[:, None])
    np.testing.assert_allclose(np.linalg.norm(x64, axis=1), 1, rtol=0, atol=1e-15)
    # float32 unit rows: rows within 1e-6 of unit (normalised in float32) keep their bits,
    # every other row is the nearest float32 of its float64 unit row
    x32 = prepare_rows(x, "image_emb", unit="exact")
    unit32 = np.abs(ns - 1) <= UNIT_TOL["float32"]
    assert kind != "float16" or unit32.mean() < 0.2  # float16 rows are divided
    assert kind == "float16" or unit32.all()  # stored float32 rows are unit already
    np.testing.assert_array_equal(x32[unit32], stored[unit32])
    np.testing.assert_array_equal(x32[~unit32], x64[~unit32].astype(np.float32))
    # idempotent: unit float32 rows are their own unit rows
    np.testing.assert_array_equal(prepare_rows(x32, "image_emb", unit="exact"), x32)
    # the exact rows of the stored rows are the exact rows of the input (idempotent)
    np.testing.assert_array_equal(prepare_rows(stored, "e", unit="exact", dtype=np.float64), x64)
    checked = prepare_rows(x, "image_emb", unit="checked")
    np.testing.assert_array_equal(checked, x.astype(np.float32))


def test_float64_input_is_divided_in_float64():
    a = np.random.default_rng(3).normal(size=(30, 8)) * 3.0
    got = prepare_rows(a, "x", unit="exact", dtype=np.float64)
    np.testing.assert_allclose(got, a / np.linalg.norm(a, axis=1, keepdims=True), rtol=1e-15)


@pytest.mark.parametrize("kind", KINDS)
def test_every_caller_gets_the_rows_of_the_one_function(kind):
    hub = importlib.import_module("modgap.measures.hubness")
    ret = importlib.import_module("modgap.tasks.retrieval")

    x = _kinds()[kind]
    y = _kinds(seed=1)[kind]
    emb = EmbeddingSet(x, y)
    np.testing.assert_array_equal(emb.image_emb, prepare_rows(x, "image_emb"))
    np.testing.assert_array_equal(
        EmbeddingSet(x, y, normalize=False).image_emb, prepare_rows(x, "i", unit="checked")
    )
    exact32 = prepare_rows(x, "image_emb", unit="exact")
    # retrieval and hubness score the float32 exact rows, of the input or of the set
    for rows in (x, emb.image_emb):
        np.testing.assert_array_equal(ret._as_tensor(rows, "q", "cpu", None, True).numpy(), exact32)
        np.testing.assert_array_equal(hub._unit_tensor(rows, "q", "cpu", None).numpy(), exact32)


def _folder(root: Path, x: np.ndarray, y: np.ndarray, shards: int) -> Path:
    """A clip-retrieval folder of float16 shards written as stored (no preparation)."""
    for sub in ("img_emb", "text_emb"):
        (root / sub).mkdir(parents=True)
    b = np.linspace(0, x.shape[0], shards + 1).astype(int)
    for i in range(shards):
        np.save(root / "img_emb" / f"img_emb_{i}.npy", x[b[i] : b[i + 1]])
        np.save(root / "text_emb" / f"text_emb_{i}.npy", y[b[i] : b[i + 1]])
    return root


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    rng = np.random.default_rng(5)
    a, c = rng.normal(size=(2, 90, 12))
    x = (a / np.linalg.norm(a, axis=1, keepdims=True)).astype(np.float16)
    y = (c / np.linalg.norm(c, axis=1, keepdims=True)).astype(np.float16)
    x[::9] *= np.float16(1.7)  # rows the stored rule divides
    return _folder(tmp_path_factory.mktemp("rows") / "cr", x, y, 4)


@pytest.mark.parametrize("block", [7, 64])
def test_every_route_gives_the_rows_of_the_kernels(folder, block):
    from modgap.stream.moments import _unit_block

    emb = read_embeddings(folder)  # in memory: every block of the source, then the set's rule
    src = open_source(folder)
    for modality, name, rows in (
        ("image", "image_emb", emb.image_emb),
        ("text", "text_emb", emb.text_emb),
    ):
        # streamed, at two block sizes: the same stored rows as the set in memory
        got = np.concatenate([b for s in src.shards for _, b in src.blocks(s, modality, block)])
        np.testing.assert_array_equal(got, rows)
        idx = np.random.default_rng(0).permutation(rows.shape[0])[:33]
        np.testing.assert_array_equal(src.gather(modality, idx), rows[idx])
        # the moment kernel's float64 rows and norms, from the raw blocks, are the measures'
        x, sq = prepare_rows(rows, name, unit="exact", dtype=np.float64, sq_norms=True)
        parts = [
            _unit_block(raw, name, path, start)
            for s in src.shards
            for start, raw, path in src.raw_blocks(s, modality, block)
        ]
        np.testing.assert_array_equal(np.concatenate([p[0] for p in parts]), x)
        np.testing.assert_array_equal(np.concatenate([p[2] for p in parts]), sq)


def test_streamed_hubness_ranks_the_rows_measured_in_memory(folder):
    """Exact streamed hubness (every query) equals the in-memory hubness on a float16 set
    with rows off unit: both rank the same float32 exact rows."""
    emb = read_embeddings(folder)
    want = measure_all(emb, only=["hubness"])
    got = stream_measures(
        open_source(folder),
        only=["hubness"],
        sample_queries=None,
        compute=Compute(memory_budget="4MiB"),
    )
    keys = [k for k in want if k.startswith("hub")]
    assert keys
    for k in keys:
        assert got[k] == want[k], k


def test_one_wording_for_a_bad_row():
    from modgap.measures import centroid_gap

    bad = np.ones((3, 4), np.float32)
    bad[1, 2] = np.nan
    good = np.ones((3, 4), np.float32)
    for call in (
        lambda: prepare_rows(bad, "image_emb"),
        lambda: prepare_rows(bad, "image_emb", unit="exact", dtype=np.float64),
        lambda: EmbeddingSet(bad, good),
        lambda: centroid_gap(bad, good),
    ):
        with pytest.raises(
            InputError, match=r"^'image_emb' has NaN/inf in 1 row\(s\) \(first: row 1\)"
        ):
            call()


@pytest.mark.parametrize("kind", KINDS)
def test_float32_unit_rows_do_not_depend_on_the_chunk(kind, monkeypatch):
    import modgap._array as array

    x = _kinds(n=50)[kind]
    whole = prepare_rows(x, "image_emb", unit="exact")
    monkeypatch.setattr(array, "_CHUNK", 7)
    np.testing.assert_array_equal(prepare_rows(x, "image_emb", unit="exact"), whole)
    bad = x.astype(np.float32)
    bad[[20, 33]] = 0
    with pytest.raises(InputError, match=r"2 all-zero row\(s\) \(first: row 20\)"):
        prepare_rows(bad, "image_emb", unit="exact")
