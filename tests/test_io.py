"""Readers and writers: round trips for every format, dispatch, memory mapping, clip-retrieval
shard order, pairs files, atomic writes, inputs left untouched."""

from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.numpy import save_file

from conftest import gapped_pairs
from modgap.embeddings import EmbeddingSet
from modgap.errors import InputError, ModgapError, ModgapNotice
from modgap.files import atomic_path
from modgap.io import FORMATS, read_embeddings, read_pairs, write_embeddings


def _multi_caption_set(n_images: int = 12, n_texts: int = 30, d: int = 8, seed: int = 0):
    """Several captions per image, labels, class prompts, ids and captions: every field set."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n_images, d)).astype(np.float32)
    t2i = rng.integers(0, n_images, n_texts)
    y = (x[t2i] + 0.5 * rng.standard_normal((n_texts, d))).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    y /= np.linalg.norm(y, axis=1, keepdims=True)
    cte = rng.standard_normal((3, d)).astype(np.float32)
    cte /= np.linalg.norm(cte, axis=1, keepdims=True)
    return EmbeddingSet(
        x,
        y,
        text_to_image=t2i,
        labels=np.arange(n_images) % 3,
        class_names=["cat", "dog", "ünïcode bird"],
        class_text_emb=cte,
        image_ids=[f"img/{i:03d}.jpg" for i in range(n_images)],
        texts=[f"a caption, number {i}" for i in range(n_texts)],
    )


@pytest.fixture
def full_set() -> EmbeddingSet:
    return _multi_caption_set()


@pytest.fixture
def row_set() -> EmbeddingSet:
    x, y = gapped_pairs(40, 16, seed=3)
    return EmbeddingSet(x, y, image_ids=[f"{i}.jpg" for i in range(40)], texts=list("ab" * 20))


def _same(a: EmbeddingSet, b: EmbeddingSet, fields=(), atol=0.0) -> None:
    np.testing.assert_allclose(a.image_emb, b.image_emb, atol=atol, rtol=0)
    np.testing.assert_allclose(a.text_emb, b.text_emb, atol=atol, rtol=0)
    np.testing.assert_array_equal(a.text_to_image, b.text_to_image)
    for f in fields:
        va, vb = getattr(a, f), getattr(b, f)
        if isinstance(va, np.ndarray):
            np.testing.assert_allclose(va, vb, atol=atol, rtol=0)
        else:
            assert va == vb, f


ALL = ("labels", "class_names", "class_text_emb", "image_ids", "texts")


@pytest.mark.parametrize(
    ("name", "fmt_fields"),
    [
        ("set.npz", ALL),
        ("set.safetensors", ALL),
        ("set.pt", ALL),
        ("set.pth", ALL),
        ("folder", ALL),
    ],
)
def test_round_trip_single_path(tmp_path, full_set, name, fmt_fields):
    out = tmp_path / name
    assert write_embeddings(full_set, out) == out
    back = read_embeddings(str(out))
    _same(full_set, back, fmt_fields)
    assert back.source == str(out)


def test_round_trip_npz_compressed(tmp_path, full_set):
    write_embeddings(full_set, tmp_path / "c.npz", compress=True)
    _same(full_set, read_embeddings(tmp_path / "c.npz"), ALL)


def test_round_trip_npy_pair_with_pairs_file(tmp_path, full_set):
    img, txt, pairs = tmp_path / "i.npy", tmp_path / "t.npy", tmp_path / "pairs.npy"
    with pytest.warns(ModgapNotice, match="not stored by this format: labels"):
        write_embeddings(full_set, img, texts=txt, pairs=pairs)
    back = read_embeddings(img, txt, pairs=pairs)
    _same(full_set, back)
    assert back.source == f"{img}, {txt}"
    assert back.metadata["pairs"] == str(pairs)


def test_npy_pair_needs_pairs_file_when_pairing_is_not_row_by_row(tmp_path, full_set):
    with pytest.raises(ModgapError, match="pass pairs=PATH"):
        write_embeddings(full_set, tmp_path / "i.npy", texts=tmp_path / "t.npy")
    assert not (tmp_path / "i.npy").exists()


def test_round_trip_npy_pair_row_by_row(tmp_path, row_set):
    with pytest.warns(ModgapNotice):
        write_embeddings(row_set, tmp_path / "i.npy", texts=tmp_path / "t.npy")
    back = read_embeddings(tmp_path / "i.npy", tmp_path / "t.npy")
    _same(row_set, back)
    np.testing.assert_array_equal(back.text_to_image, np.arange(40))


def test_round_trip_parquet_single_file(tmp_path, row_set):
    write_embeddings(row_set, tmp_path / "e.parquet")
    back = read_embeddings(tmp_path / "e.parquet")
    _same(row_set, back, ("image_ids", "texts"))
    assert pq.read_schema(tmp_path / "e.parquet").field("image_emb").type == pa.list_(
        pa.float32(), 16
    )


def test_round_trip_parquet_pair(tmp_path, full_set):
    with pytest.warns(ModgapNotice, match="class_names, class_text_emb"):
        write_embeddings(full_set, tmp_path / "i.parquet", texts=tmp_path / "t.parquet")
    back = read_embeddings(tmp_path / "i.parquet", tmp_path / "t.parquet")
    _same(full_set, back, ("labels", "image_ids", "texts"))


def test_parquet_single_file_refuses_unequal_counts(tmp_path, full_set):
    with pytest.raises(ModgapError, match="12 images and 30 texts"):
        write_embeddings(full_set, tmp_path / "e.parquet")


def test_round_trip_float16_everywhere(tmp_path, row_set):
    for name in ("h.npz", "h.safetensors", "h.pt", "hfolder", "h.parquet"):
        write_embeddings(row_set, tmp_path / name, dtype="float16")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ModgapNotice)  # fp16 rounding moves norms a little
            back = read_embeddings(tmp_path / name)
        assert back.image_emb.dtype == np.float32
        _same(row_set, back, atol=2e-3)


def test_format_override_and_unknown_suffix(tmp_path, row_set):
    out = tmp_path / "embeddings.bin"
    write_embeddings(row_set, out, format="npz")
    _same(row_set, read_embeddings(out, format="npz"))
    with pytest.raises(InputError) as e:
        read_embeddings(out)
    msg = str(e.value)
    assert str(out) in msg and "'.bin'" in msg
    for fmt in FORMATS:
        assert fmt in msg
    with pytest.raises(ModgapError, match="supported: npy"):
        write_embeddings(row_set, tmp_path / "x.csv")
    with pytest.raises(InputError, match="unknown format 'hdf5'"):
        read_embeddings(out, format="hdf5")


# -- npz details ----------------------------------------------------------------------------
def test_npz_key_overrides_and_unknown_keys_ignored(tmp_path):
    x, y = gapped_pairs(10, 4)
    path = tmp_path / "k.npz"
    # an unknown key holding a pickled object array must be ignored, never loaded
    np.savez(path, img=x, txt=y, notes=np.array([{"a": 1}], dtype=object), step=np.int64(3))
    emb = read_embeddings(path, image_key="img", text_key="txt")
    np.testing.assert_array_equal(emb.image_emb, x)
    np.testing.assert_array_equal(emb.text_emb, y)


def test_npz_bytes_class_names_are_decoded(tmp_path):
    x, y = gapped_pairs(6, 4)
    np.savez(
        tmp_path / "b.npz",
        image_emb=x,
        text_emb=y,
        labels=np.array([0, 1, 0, 1, 0, 1]),
        class_names=np.array([b"yes", b"no"]),
    )
    assert read_embeddings(tmp_path / "b.npz").class_names == ["yes", "no"]


@pytest.mark.parametrize("name", ["r.npz", "r.safetensors", "r.pt", "r.parquet", "rfolder"])
def test_read_leaves_input_bytes_unchanged(tmp_path, row_set, name):
    out = tmp_path / name
    write_embeddings(row_set, out)

    def digest() -> dict:
        files = sorted(out.rglob("*")) if out.is_dir() else [out]
        return {
            str(f): (hashlib.sha256(f.read_bytes()).hexdigest(), f.stat().st_mtime_ns)
            for f in files
            if f.is_file()
        }

    before = digest()
    emb = read_embeddings(out)
    emb.split(0.5)
    assert digest() == before


def test_unnormalised_input_file_is_normalised_with_notice_and_file_untouched(tmp_path):
    x, y = gapped_pairs(10, 4)
    path = tmp_path / "u.npz"
    np.savez(path, image_emb=3 * x, text_emb=y)
    before = path.read_bytes()
    with pytest.warns(ModgapNotice, match=f"{path}: 'image_emb' rows were L2-normalised"):
        emb = read_embeddings(path)
    np.testing.assert_allclose(np.linalg.norm(emb.image_emb, axis=1), 1, atol=1e-6)
    assert path.read_bytes() == before


# -- memory mapping -------------------------------------------------------------------------
def _is_memory_mapped(a: np.ndarray) -> bool:
    while a is not None:
        if isinstance(a, np.memmap) or type(a).__name__ == "mmap":
            return True
        a = getattr(a, "base", None)
    return False


def test_npy_pair_is_memory_mapped_not_copied(tmp_path):
    x, y = gapped_pairs(50, 8)
    np.save(tmp_path / "i.npy", x)
    np.save(tmp_path / "t.npy", y)
    emb = read_embeddings(tmp_path / "i.npy", tmp_path / "t.npy")
    assert _is_memory_mapped(emb.image_emb) and _is_memory_mapped(emb.text_emb)
    assert not emb.image_emb.flags.writeable  # read-only: the input cannot be modified
    np.testing.assert_array_equal(emb.image_emb, x)


def test_single_float32_clip_shard_stays_memory_mapped(tmp_path, row_set):
    write_embeddings(row_set, tmp_path / "f")
    emb = read_embeddings(tmp_path / "f")
    assert _is_memory_mapped(emb.image_emb)


def test_clip_reader_and_source_say_the_same_thing(tmp_path, row_set):
    # the in-memory reader reads the streamed route's source: one set of checks, one message
    from modgap.io.sources import clip_retrieval_source

    root = tmp_path / "cr"
    write_embeddings(row_set, root, shard_size=10)
    np.save(root / "text_emb/text_emb_1.npy", row_set.text_emb[10:17])
    with pytest.raises(InputError) as memory:
        read_embeddings(root)
    with pytest.raises(InputError) as streamed:
        clip_retrieval_source(os.fspath(root))
    assert str(memory.value) == str(streamed.value)
    assert "10 image rows but 7 text rows in shard img_emb_1.npy / text_emb_1.npy" in str(
        memory.value
    )


def test_clip_parquet_shards_take_captions_and_ids_from_metadata(tmp_path):
    x, y = gapped_pairs(12, 8, seed=3)
    root = tmp_path / "pq"
    for sub in ("img_emb", "text_emb", "metadata"):
        (root / sub).mkdir(parents=True)
    for i, rows in enumerate((range(0, 5), range(5, 12))):
        s = slice(rows.start, rows.stop)
        pq.write_table(
            pa.table({"embedding": x[s].tolist()}), root / f"img_emb/img_emb_{i}.parquet"
        )
        pq.write_table(
            pa.table({"embedding": y[s].tolist()}), root / f"text_emb/text_emb_{i}.parquet"
        )
        meta = {"image_path": [f"{r}.jpg" for r in rows], "caption": [f"c{r}" for r in rows]}
        pq.write_table(pa.table(meta), root / f"metadata/metadata_{i}.parquet")
    emb = read_embeddings(root)
    np.testing.assert_allclose(emb.image_emb, x, rtol=1e-6)
    assert emb.image_ids == [f"{r}.jpg" for r in range(12)]
    assert emb.texts == [f"c{r}" for r in range(12)]


# -- clip-retrieval folders -----------------------------------------------------------------
def test_clip_retrieval_shards_are_read_in_numeric_order(tmp_path, row_set):
    out = tmp_path / "many"
    write_embeddings(row_set, out, shard_size=3)  # 14 shards: 0..13
    names = sorted(p.name for p in (out / "img_emb").iterdir())
    assert "img_emb_10.npy" in names and len(names) == 14
    back = read_embeddings(out)
    _same(row_set, back, ("image_ids", "texts"))
    assert back.image_ids[30] == "30.jpg"


def _clip_folder(root: Path, shards, dtype=np.float16, meta=True) -> None:
    for sub in ("img_emb", "text_emb", "metadata"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i, (x, y, m) in enumerate(shards):
        np.save(root / "img_emb" / f"img_emb_{i}.npy", x.astype(dtype))
        np.save(root / "text_emb" / f"text_emb_{i}.npy", y.astype(dtype))
        if meta:
            pq.write_table(pa.table(m), root / "metadata" / f"metadata_{i}.parquet")


def test_clip_retrieval_folder_made_by_hand_float16_with_metadata(tmp_path):
    x, y = gapped_pairs(33, 8, seed=5)
    bounds = [0, 3, 5, 6, 9, 12, 15, 18, 21, 24, 27, 30, 33]  # 12 shards, shard 10 after 9
    shards = []
    for i in range(12):
        s = slice(bounds[i], bounds[i + 1])
        rows = range(bounds[i], bounds[i + 1])
        meta = {
            "image_path": [f"p{r}.jpg" for r in rows],
            "caption": [f"caption {r}" for r in rows],
            "url": [f"http://x/{r}" for r in rows],
            "similarity": [0.3] * len(rows),
        }
        shards.append((x[s], y[s], meta))
    _clip_folder(tmp_path / "cr", shards)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ModgapNotice)
        emb = read_embeddings(tmp_path / "cr")
    np.testing.assert_allclose(emb.image_emb, x, atol=2e-3)
    np.testing.assert_allclose(emb.text_emb, y, atol=2e-3)
    assert emb.image_ids == [f"p{r}.jpg" for r in range(33)]
    assert emb.texts == [f"caption {r}" for r in range(33)]
    np.testing.assert_array_equal(emb.text_to_image, np.arange(33))
    assert emb.metadata["format"] == "clip-retrieval"


def test_clip_retrieval_url_used_when_no_image_path_and_metadata_optional(tmp_path):
    x, y = gapped_pairs(6, 4)
    _clip_folder(tmp_path / "u", [(x, y, {"url": [f"u{i}" for i in range(6)]})], np.float32)
    assert read_embeddings(tmp_path / "u").image_ids == [f"u{i}" for i in range(6)]
    _clip_folder(tmp_path / "n", [(x, y, {})], np.float32, meta=False)
    emb = read_embeddings(tmp_path / "n")
    assert emb.image_ids is None and emb.n_images == 6


def test_clip_retrieval_writer_replaces_existing_folder_atomically(tmp_path, row_set, full_set):
    out = tmp_path / "out"
    write_embeddings(full_set, out, shard_size=5)
    write_embeddings(row_set, out)
    _same(row_set, read_embeddings(out))
    assert sorted(p.name for p in (out / "img_emb").iterdir()) == ["img_emb_0.npy"]
    assert not (out / "extra.npz").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_clip_retrieval_without_ids_or_captions_writes_no_metadata(tmp_path):
    x, y = gapped_pairs(6, 4)
    write_embeddings(EmbeddingSet(x, y), tmp_path / "f")
    names = sorted(p.name for p in (tmp_path / "f").iterdir())
    assert names == [".modgap-files.json", "img_emb", "metadata", "text_emb"]
    assert list((tmp_path / "f/metadata").iterdir()) == []
    back = read_embeddings(tmp_path / "f")
    assert back.image_ids is None and back.texts is None and back.has_pairs


def test_clip_retrieval_unpaired_set_round_trips(tmp_path):
    x, _ = gapped_pairs(7, 4)
    _, y = gapped_pairs(9, 4, seed=1)
    emb = EmbeddingSet(x, y)
    assert not emb.has_pairs
    write_embeddings(emb, tmp_path / "u", shard_size=3)
    back = read_embeddings(tmp_path / "u")
    assert not back.has_pairs and back.n_texts == 9
    np.testing.assert_array_equal(back.text_emb, y)


# -- parquet details ------------------------------------------------------------------------
def test_parquet_variable_list_columns_and_overrides(tmp_path):
    x, y = gapped_pairs(9, 5)
    table = pa.table(
        {
            "img": pa.array(x.astype(np.float64).tolist(), pa.list_(pa.float64())),
            "txt": pa.array(y.tolist(), pa.large_list(pa.float32())),
            "caption": [f"c{i}" for i in range(9)],
        }
    )
    pq.write_table(table, tmp_path / "v.parquet")
    emb = read_embeddings(tmp_path / "v.parquet", image_key="img", text_key="txt")
    np.testing.assert_allclose(emb.image_emb, x, atol=1e-7)
    np.testing.assert_allclose(emb.text_emb, y, atol=1e-7)
    assert emb.texts == [f"c{i}" for i in range(9)]


def test_parquet_pair_with_custom_columns(tmp_path):
    x, y = gapped_pairs(9, 5)
    pq.write_table(pa.table({"vec": pa.array(x.tolist())}), tmp_path / "i.parquet")
    pq.write_table(pa.table({"v": pa.array(y.tolist())}), tmp_path / "t.parquet")
    emb = read_embeddings(
        tmp_path / "i.parquet", tmp_path / "t.parquet", image_key="vec", text_key="v"
    )
    np.testing.assert_allclose(emb.text_emb, y, atol=1e-7)


# -- safetensors / torch details ------------------------------------------------------------
def test_safetensors_written_elsewhere_with_custom_keys(tmp_path):
    x, y = gapped_pairs(8, 4)
    save_file({"vision": x, "language": y, "other": np.zeros(3)}, str(tmp_path / "s.safetensors"))
    emb = read_embeddings(tmp_path / "s.safetensors", image_key="vision", text_key="language")
    np.testing.assert_array_equal(emb.image_emb, x)


def test_torch_bfloat16_tensors_and_plain_lists(tmp_path):
    x, y = gapped_pairs(8, 4)
    obj = {
        "image_emb": torch.from_numpy(x).to(torch.bfloat16),
        "text_emb": torch.from_numpy(y),
        "text_to_image": list(range(8))[::-1],
        "extra": {"nested": 1},
    }
    torch.save(obj, tmp_path / "b.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ModgapNotice)
        emb = read_embeddings(tmp_path / "b.pt")
    np.testing.assert_allclose(emb.image_emb, x, atol=1e-2)
    np.testing.assert_array_equal(emb.text_to_image, np.arange(8)[::-1])


# -- pairs files ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("p.txt", "0\n0\n1\n2\n2\n"),
        ("p.csv", "text_to_image\n0\n0\n1\n2\n2\n"),
        ("q.csv", "caption_id,image_index\n0,0\n1,0\n2,1\n3,2\n4,2\n"),
        ("r.tsv", "# one per line\n0\n\n0\n1\n2\n2\n"),
        ("bom.txt", "\ufeff0\n0\n1\n2\n2\n"),  # a byte-order mark, as Excel and Notepad write
        ("bom.csv", "\ufefftext_to_image,caption_id\n0,0\n0,1\n1,2\n2,3\n2,4\n"),
    ],
)
def test_pairs_text_files(tmp_path, name, content):
    (tmp_path / name).write_text(content)
    np.testing.assert_array_equal(
        read_pairs(tmp_path / name, n_texts=5, n_images=3), [0, 0, 1, 2, 2]
    )


def test_pairs_option_sets_text_to_image(tmp_path):
    x, _ = gapped_pairs(3, 4)
    _, y = gapped_pairs(5, 4, seed=2)
    np.save(tmp_path / "i.npy", x)
    np.save(tmp_path / "t.npy", y)
    np.save(tmp_path / "p.npy", np.array([0, 0, 1, 2, 2], dtype=np.int32))
    emb = read_embeddings(tmp_path / "i.npy", tmp_path / "t.npy", pairs=tmp_path / "p.npy")
    np.testing.assert_array_equal(emb.text_to_image, [0, 0, 1, 2, 2])
    # a pairs file overrides the row-by-row default of an npz as well
    np.savez(tmp_path / "e.npz", image_emb=x, text_emb=x[::-1])
    (tmp_path / "rev.txt").write_text("2\n1\n0\n")
    emb = read_embeddings(tmp_path / "e.npz", pairs=tmp_path / "rev.txt")
    np.testing.assert_array_equal(emb.text_to_image, [2, 1, 0])


# -- atomic writes --------------------------------------------------------------------------
def test_failed_write_keeps_old_file_and_leaves_no_temp(tmp_path, row_set, monkeypatch):
    out = tmp_path / "keep.npz"
    write_embeddings(row_set, out)
    before = out.read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(OSError, match="disk full"):
        write_embeddings(row_set, out)
    assert out.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["keep.npz"]


def test_failed_folder_write_keeps_old_folder(tmp_path, row_set, full_set, monkeypatch):
    out = tmp_path / "cr"
    write_embeddings(row_set, out)
    calls = {"n": 0}
    real_save = np.save

    def flaky(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("disk full")
        return real_save(*a, **k)

    monkeypatch.setattr(np, "save", flaky)
    with pytest.raises(OSError):
        write_embeddings(full_set, out, shard_size=4)
    monkeypatch.undo()
    _same(row_set, read_embeddings(out))
    assert [p.name for p in tmp_path.iterdir()] == ["cr"]


def test_atomic_path_renames_only_on_success(tmp_path):
    target = tmp_path / "a" / "b.txt"
    with atomic_path(target) as tmp:
        tmp.write_text("hi")
        assert not target.exists()
    assert target.read_text() == "hi"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError
    assert target.read_text() == "hi"
    assert os.listdir(target.parent) == ["b.txt"]


# -- real data ------------------------------------------------------------------------------
def test_real_coco500_through_every_format(tmp_path, coco500_path):
    emb = read_embeddings(coco500_path)
    assert (emb.n_images, emb.n_texts, emb.dim) == (500, 500, 512)
    for name in ("c.parquet", "c.safetensors", "c.pt", "cfolder"):
        write_embeddings(emb, tmp_path / name)
        _same(emb, read_embeddings(tmp_path / name))


def test_safetensors_bfloat16_written_by_torch(tmp_path):
    from safetensors.torch import save_file as save_torch

    x, y = gapped_pairs(8, 4)
    save_torch(
        {"image_emb": torch.from_numpy(x).bfloat16(), "text_emb": torch.from_numpy(y)},
        str(tmp_path / "bf.safetensors"),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ModgapNotice)
        emb = read_embeddings(tmp_path / "bf.safetensors")
    assert emb.image_emb.dtype == np.float32
    np.testing.assert_allclose(emb.image_emb, x, atol=1e-2)
    np.testing.assert_array_equal(emb.text_emb, y)


def test_reading_a_normalised_npy_pair_allocates_no_copy(tmp_path):
    import tracemalloc

    rng = np.random.default_rng(0)
    for name in ("i", "t"):
        a = rng.standard_normal((20_000, 128), dtype=np.float32)
        a /= np.linalg.norm(a, axis=1, keepdims=True)
        np.save(tmp_path / f"{name}.npy", a)  # 10 MB each
    tracemalloc.start()
    try:
        emb = read_embeddings(tmp_path / "i.npy", tmp_path / "t.npy")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert emb.n_images == 20_000
    assert peak < 2 * 2**20, f"{peak / 2**20:.1f} MB allocated while reading 20 MB of mapped data"


def test_float16_clip_shards_are_widened_once(tmp_path):
    import tracemalloc

    x, y = gapped_pairs(20_000, 64, seed=1)
    write_embeddings(EmbeddingSet(x, y), tmp_path / "cr", shard_size=5_000, dtype="float16")
    tracemalloc.start()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ModgapNotice)
            read_embeddings(tmp_path / "cr")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    out = 2 * x.nbytes  # the two float32 matrices that are returned
    # one renormalised copy of each is allowed (fp16 rounding moves the norms)
    assert peak < 2 * out + 2**20, f"{peak / 2**20:.1f} MB for {out / 2**20:.1f} MB of output"


@pytest.mark.parametrize("name", ["u.npz", "u.safetensors", "u.pt", "ufolder"])
def test_unpaired_set_with_equal_counts_stays_unpaired(tmp_path, name):
    x, _ = gapped_pairs(6, 4)
    _, y = gapped_pairs(6, 4, seed=9)
    emb = EmbeddingSet(x, y, paired=False)
    write_embeddings(emb, tmp_path / name)
    back = read_embeddings(tmp_path / name)
    assert not back.has_pairs
    np.testing.assert_array_equal(back.text_emb, y)


def test_formats_that_cannot_say_unpaired_warn(tmp_path):
    x, y = gapped_pairs(6, 4)
    emb = EmbeddingSet(x, y, paired=False)
    with pytest.warns(ModgapNotice, match=r"paired=False \(equal counts read back as row-by-row"):
        write_embeddings(emb, tmp_path / "u.parquet")
    with pytest.warns(ModgapNotice, match=r"paired=False"):
        write_embeddings(emb, tmp_path / "i.npy", texts=tmp_path / "t.npy")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n_images=st.integers(1, 9),
    n_texts=st.integers(1, 12),
    d=st.integers(1, 6),
    fmt=st.sampled_from(["x.npz", "x.safetensors", "x.pt", "xfolder"]),
    shard=st.integers(1, 4),
    seed=st.integers(0, 2**16),
)
def test_round_trip_property(n_images, n_texts, d, fmt, shard, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n_images, d)).astype(np.float32) + 0.1
    y = rng.standard_normal((n_texts, d)).astype(np.float32) + 0.1
    t2i = rng.integers(0, n_images, n_texts) if rng.random() < 0.7 else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ModgapNotice)
        emb = EmbeddingSet(x, y, text_to_image=t2i)
        with tempfile.TemporaryDirectory() as root:
            write_embeddings(emb, Path(root) / fmt, shard_size=shard)
            back = read_embeddings(Path(root) / fmt)
    np.testing.assert_array_equal(back.image_emb, emb.image_emb)
    np.testing.assert_array_equal(back.text_emb, emb.text_emb)
    assert back.has_pairs == emb.has_pairs
    if emb.has_pairs:
        np.testing.assert_array_equal(back.text_to_image, emb.text_to_image)


def test_outputs_get_ordinary_permissions(tmp_path, row_set):
    mask = os.umask(0o022)
    try:
        write_embeddings(row_set, tmp_path / "p.npz")
        write_embeddings(row_set, tmp_path / "pf")
    finally:
        os.umask(mask)
    assert (tmp_path / "p.npz").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "pf").stat().st_mode & 0o777 == 0o755
