"""Validation: every bad input stops with a one-line InputError naming the file; plus the
EmbeddingSet data model itself (pairing, subsets, splits)."""

from __future__ import annotations

import pickle
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from safetensors.numpy import save_file

from conftest import gapped_pairs
from modgap.embeddings import EmbeddingSet
from modgap.errors import InputError, ModgapNotice
from modgap.io import read_embeddings, write_embeddings


def _error(fn, *args, **kwargs) -> str:
    """Run ``fn`` expecting an InputError; return its message after checking it is one line."""
    with pytest.raises(InputError) as info:
        fn(*args, **kwargs)
    msg = str(info.value)
    assert "\n" not in msg, msg
    assert len(msg) < 400, msg
    return msg


def _names(msg: str, path) -> None:
    assert str(path) in msg, f"{path} not named in: {msg}"


@pytest.fixture
def xy():
    return gapped_pairs(10, 6)


def _npz(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


# -- dimension mismatch ----------------------------------------------------------------------
def test_dimension_mismatch_npz(tmp_path, xy):
    x, _ = xy
    p = _npz(tmp_path / "d.npz", image_emb=x, text_emb=gapped_pairs(10, 5)[1])
    msg = _error(read_embeddings, p)
    _names(msg, p)
    assert "5 dimensions but 6 were expected" in msg


def test_dimension_mismatch_npy_pair_names_the_text_file(tmp_path, xy):
    x, _ = xy
    np.save(tmp_path / "img.npy", x)
    np.save(tmp_path / "txt.npy", gapped_pairs(10, 7)[1])
    msg = _error(read_embeddings, tmp_path / "img.npy", tmp_path / "txt.npy")
    assert msg.startswith(f"{tmp_path / 'txt.npy'}: 'text_emb' has 7 dimensions")


def test_dimension_mismatch_parquet_pair_and_clip_shard(tmp_path, xy):
    x, y = xy
    pq.write_table(pa.table({"embedding": x.tolist()}), tmp_path / "i.parquet")
    pq.write_table(pa.table({"embedding": y[:, :4].tolist()}), tmp_path / "t.parquet")
    msg = _error(read_embeddings, tmp_path / "i.parquet", tmp_path / "t.parquet")
    assert msg.startswith(f"{tmp_path / 't.parquet'}:") and "4 dimensions" in msg

    write_embeddings(EmbeddingSet(x, y), tmp_path / "cr", shard_size=5)
    np.save(tmp_path / "cr/text_emb/text_emb_1.npy", y[5:, :3])
    msg = _error(read_embeddings, tmp_path / "cr")
    _names(msg, tmp_path / "cr/text_emb/text_emb_1.npy")
    assert "3 dimensions but 6" in msg


# -- NaN / inf -------------------------------------------------------------------------------
def _write_npz(path, x, y):
    return _npz(path.with_suffix(".npz"), image_emb=x, text_emb=y)


def _write_parquet(path, x, y):
    path = path.with_suffix(".parquet")
    pq.write_table(pa.table({"image_emb": x.tolist(), "text_emb": y.tolist()}), path)
    return path


@pytest.mark.parametrize("write", [_write_npz, _write_parquet], ids=["npz", "parquet"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_inf_names_file_key_and_row(tmp_path, xy, bad, write):
    x, y = xy
    y = y.copy()
    y[4, 2] = bad
    p = write(tmp_path / "n", x, y)
    msg = _error(read_embeddings, p)
    _names(msg, p)
    assert "'text_emb' has NaN/inf in 1 row(s) (first: row 4)" in msg


def test_nan_in_npy_pair_names_image_file(tmp_path, xy):
    x, y = xy
    x = x.copy()
    x[7] = np.nan
    np.save(tmp_path / "i.npy", x)
    np.save(tmp_path / "t.npy", y)
    msg = _error(read_embeddings, tmp_path / "i.npy", tmp_path / "t.npy")
    assert msg.startswith(f"{tmp_path / 'i.npy'}: 'image_emb' has NaN/inf")


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_nan_in_clip_shard_names_the_shard(tmp_path, xy, dtype):
    x, y = xy
    write_embeddings(EmbeddingSet(x, y), tmp_path / "cr", shard_size=4, dtype=dtype)
    shard = tmp_path / "cr/img_emb/img_emb_2.npy"
    bad = np.load(shard).copy()
    bad[0, 0] = np.inf
    np.save(shard, bad)
    msg = _error(read_embeddings, tmp_path / "cr")
    _names(msg, shard)
    assert "NaN/inf" in msg


# -- all-zero rows ---------------------------------------------------------------------------
def test_all_zero_rows(tmp_path, xy):
    x, y = xy
    x = x.copy()
    x[[2, 5]] = 0
    p = _npz(tmp_path / "z.npz", image_emb=x, text_emb=y)
    msg = _error(read_embeddings, p)
    _names(msg, p)
    assert "2 all-zero row(s) (first: row 2)" in msg
    np.save(tmp_path / "i.npy", y)
    np.save(tmp_path / "t.npy", x)
    msg = _error(read_embeddings, tmp_path / "i.npy", tmp_path / "t.npy")
    assert msg.startswith(f"{tmp_path / 't.npy'}: 'text_emb' has 2 all-zero")


def test_all_zero_class_prompt(tmp_path, xy):
    x, y = xy
    p = _npz(
        tmp_path / "c.npz", image_emb=x, text_emb=y, class_text_emb=np.zeros((2, 6), np.float32)
    )
    msg = _error(read_embeddings, p)
    _names(msg, p)
    assert "'class_text_emb' has 2 all-zero" in msg


# -- empty input -----------------------------------------------------------------------------
def test_zero_rows(tmp_path, xy):
    x, _ = xy
    p = _npz(tmp_path / "e.npz", image_emb=x, text_emb=np.zeros((0, 6), np.float32))
    msg = _error(read_embeddings, p)
    _names(msg, p)
    assert "'text_emb' is empty (0 rows)" in msg
    np.save(tmp_path / "i.npy", np.zeros((0, 6), np.float32))
    np.save(tmp_path / "t.npy", x)
    msg = _error(read_embeddings, tmp_path / "i.npy", tmp_path / "t.npy")
    assert msg.startswith(f"{tmp_path / 'i.npy'}: 'image_emb' is empty")


@pytest.mark.parametrize("suffix", [".npy", ".npz", ".parquet", ".safetensors", ".pt", ".pth"])
def test_zero_byte_files(tmp_path, xy, suffix):
    p = tmp_path / f"empty{suffix}"
    p.write_bytes(b"")
    other = None
    if suffix == ".npy":
        other = tmp_path / "t.npy"
        np.save(other, xy[1])
    msg = _error(read_embeddings, p, other)
    _names(msg, p)
    assert "empty (0 bytes)" in msg
    # the second file of a pair is checked too
    if suffix == ".npy":
        msg = _error(read_embeddings, other, p)
        assert msg.startswith(f"{p}: ") and "0 bytes" in msg


def test_empty_folder_and_folder_without_shards(tmp_path, xy):
    (tmp_path / "nothing").mkdir()
    msg = _error(read_embeddings, tmp_path / "nothing")
    _names(msg, tmp_path / "nothing")
    assert "the folder is empty" in msg and "img_emb/img_emb_0.npy" in msg
    (tmp_path / "other").mkdir()
    (tmp_path / "other/readme.txt").write_text("hi")
    (tmp_path / "other/img_emb").mkdir()
    np.save(tmp_path / "other/img_emb/img_emb_0.npy", xy[0])
    msg = _error(read_embeddings, tmp_path / "other")
    _names(msg, tmp_path / "other")
    assert "no text_emb/text_emb_{i}.npy shards (found: img_emb/, readme.txt)" in msg


def test_empty_clip_shard(tmp_path, xy):
    x, y = xy
    write_embeddings(EmbeddingSet(x, y), tmp_path / "cr", shard_size=5)
    np.save(tmp_path / "cr/img_emb/img_emb_1.npy", np.zeros((0, 6), np.float32))
    msg = _error(read_embeddings, tmp_path / "cr")
    _names(msg, tmp_path / "cr/img_emb/img_emb_1.npy")
    assert "empty (0 rows)" in msg


def test_empty_pairs_file(tmp_path, xy):
    x, y = xy
    p = _npz(tmp_path / "e.npz", image_emb=x, text_emb=y)
    (tmp_path / "p.txt").write_text("")
    msg = _error(read_embeddings, p, pairs=tmp_path / "p.txt")
    _names(msg, tmp_path / "p.txt")
    (tmp_path / "c.txt").write_text("# only a comment\n\n")
    msg = _error(read_embeddings, p, pairs=tmp_path / "c.txt")
    assert msg == f"{tmp_path / 'c.txt'}: the pairs file has no entries"


# -- pairing out of range / mismatched counts ------------------------------------------------
def test_pairing_index_out_of_range_in_npz(tmp_path, xy):
    x, y = xy
    t2i = np.arange(10)
    t2i[3] = 10
    p = _npz(tmp_path / "p.npz", image_emb=x, text_emb=y, text_to_image=t2i)
    msg = _error(read_embeddings, p)
    _names(msg, p)
    assert "text 3 -> 10" in msg and "[0, 10)" in msg


@pytest.mark.parametrize("bad", [-1, 10])
def test_pairing_index_out_of_range_in_pairs_file(tmp_path, xy, bad):
    x, y = xy
    p = _npz(tmp_path / "e.npz", image_emb=x, text_emb=y)
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("\n".join(str(v) for v in [0, 1, 2, bad, 4, 5, 6, 7, 8, 9]))
    msg = _error(read_embeddings, p, pairs=pairs)
    assert msg.startswith(f"{pairs}: pairing index out of range: text 3 -> image {bad}")


def test_mismatched_pair_counts(tmp_path, xy):
    x, y = xy
    p = _npz(tmp_path / "e.npz", image_emb=x, text_emb=y)
    np.save(tmp_path / "short.npy", np.arange(7))
    msg = _error(read_embeddings, p, pairs=tmp_path / "short.npy")
    assert msg.startswith(f"{tmp_path / 'short.npy'}: 7 pairs for 10 texts")
    # row-by-row pairing forced on unequal counts
    np.save(tmp_path / "i.npy", x)
    np.save(tmp_path / "t.npy", y[:8])
    msg = _error(read_embeddings, tmp_path / "i.npy", tmp_path / "t.npy", paired=True)
    _names(msg, tmp_path / "i.npy")
    assert "10 images but 8 texts" in msg


def test_clip_retrieval_count_mismatches(tmp_path, xy):
    x, y = xy
    root = tmp_path / "cr"
    write_embeddings(EmbeddingSet(x, y, texts=list("abcdefghij")), root, shard_size=5)
    np.save(root / "text_emb/text_emb_1.npy", y[5:9])
    msg = _error(read_embeddings, root)
    _names(msg, root)
    assert "5 image rows but 4 text rows in shard img_emb_1.npy / text_emb_1.npy" in msg
    (root / "text_emb/text_emb_1.npy").unlink()
    msg = _error(read_embeddings, root)
    _names(msg, root)
    assert "2 image shards but 1 text shards" in msg
    np.save(root / "text_emb/text_emb_1.npy", y[5:])
    (root / "metadata/metadata_1.parquet").unlink()
    msg = _error(read_embeddings, root)
    assert "2 embedding shards but 1 metadata shards" in msg


def test_clip_retrieval_metadata_rows_and_shard_shape(tmp_path, xy):
    x, y = xy
    root = tmp_path / "cr"
    write_embeddings(EmbeddingSet(x, y, image_ids=list("abcdefghij")), root, shard_size=5)
    pq.write_table(pa.table({"image_path": list("abc")}), root / "metadata/metadata_1.parquet")
    msg = _error(read_embeddings, root)
    assert msg == (
        f"{root / 'metadata/metadata_1.parquet'}: 3 metadata rows but 5 image embeddings "
        "in this shard"
    )
    np.save(root / "img_emb/img_emb_0.npy", x[:5].reshape(-1))
    msg = _error(read_embeddings, root)
    assert msg.startswith(f"{root / 'img_emb/img_emb_0.npy'}: 'image_emb' shard must be 2-D")


def test_bad_pairs_csv(tmp_path, xy):
    x, y = xy
    p = _npz(tmp_path / "e.npz", image_emb=x, text_emb=y)
    csv = tmp_path / "p.csv"
    csv.write_text("caption,img\n0,1\n")
    msg = _error(read_embeddings, p, pairs=csv)
    assert msg.startswith(f"{csv}: pairs CSV with 2 columns needs a header") and "img" in msg
    csv.write_text("0\n1\nseven\n")
    msg = _error(read_embeddings, p, pairs=csv)
    assert msg.startswith(f"{csv}: line 3: expected an image index, got 'seven'")
    csv.write_text("0\n1.5\n")
    msg = _error(read_embeddings, p, pairs=csv)
    assert msg == f"{csv}: line 2: image index 1.5 is not an integer"
    csv.write_text("# header comment\n\nimage\n0\nnan\n")  # line numbers count every line
    msg = _error(read_embeddings, p, pairs=csv)
    assert msg == f"{csv}: line 5: image index nan is not an integer"


# -- missing keys ----------------------------------------------------------------------------
def test_missing_key_npz_lists_found_keys(tmp_path, xy):
    x, y = xy
    p = _npz(tmp_path / "m.npz", images=x, text_emb=y, extra=np.arange(3))
    msg = _error(read_embeddings, p)
    assert msg.startswith(f"{p}: missing key 'image_emb' (found: images, text_emb, extra)")
    assert "image_key=" in msg
    msg = _error(read_embeddings, p, image_key="images", text_key="captions")
    assert "missing key 'captions' (found: images, text_emb, extra)" in msg


def test_missing_key_safetensors_torch_parquet(tmp_path, xy):
    x, y = xy
    st = tmp_path / "m.safetensors"
    save_file({"image_emb": x, "txt": y}, str(st))
    msg = _error(read_embeddings, st)
    _names(msg, st)
    assert "missing key 'text_emb' (found: " in msg and "txt" in msg
    pt = tmp_path / "m.pt"
    torch.save({"image_emb": torch.from_numpy(x)}, pt)
    msg = _error(read_embeddings, pt)
    assert msg.startswith(f"{pt}: missing key 'text_emb' (found: image_emb)")
    par = tmp_path / "m.parquet"
    pq.write_table(pa.table({"image_emb": x.tolist(), "caption": list("abcdefghij")}), par)
    msg = _error(read_embeddings, par)
    assert msg.startswith(f"{par}: missing key 'text_emb' (found: image_emb, caption)")
    pq.write_table(pa.table({"vec": y.tolist()}), tmp_path / "t.parquet")
    pq.write_table(pa.table({"embedding": x.tolist()}), tmp_path / "i.parquet")
    msg = _error(read_embeddings, tmp_path / "i.parquet", tmp_path / "t.parquet")
    assert msg.startswith(f"{tmp_path / 't.parquet'}: missing key 'embedding' (found: vec)")


def test_parquet_column_of_wrong_type_or_ragged(tmp_path, xy):
    x, y = xy
    p = tmp_path / "w.parquet"
    pq.write_table(pa.table({"image_emb": list("abcdefghij"), "text_emb": y.tolist()}), p)
    msg = _error(read_embeddings, p)
    _names(msg, p)
    assert "column 'image_emb' has type string" in msg
    ragged = [row.tolist() for row in x]
    ragged[3] = ragged[3][:4]
    pq.write_table(pa.table({"image_emb": ragged, "text_emb": y.tolist()}), p)
    msg = _error(read_embeddings, p)
    assert "rows have different lengths (row 0 has 6, row 3 has 4)" in msg


# -- object / pickled arrays -----------------------------------------------------------------
def test_object_array_in_npz(tmp_path, xy):
    x, y = xy
    p = _npz(tmp_path / "o.npz", image_emb=np.array(list(x), dtype=object), text_emb=y)
    msg = _error(read_embeddings, p)
    _names(msg, p)
    assert msg == (
        f"{p}: has an object array (pickled Python objects), which modgap never loads "
        "(no unpickling); save plain numeric arrays"
    )


def test_object_array_npy_and_raw_pickle(tmp_path, xy):
    x, y = xy
    np.save(tmp_path / "t.npy", y)
    np.save(tmp_path / "o.npy", np.array([{"a": 1}] * 3, dtype=object), allow_pickle=True)
    msg = _error(read_embeddings, tmp_path / "o.npy", tmp_path / "t.npy")
    _names(msg, tmp_path / "o.npy")
    assert "pickled" in msg
    with open(tmp_path / "raw.npy", "wb") as f:
        pickle.dump({"image_emb": x}, f)
    msg = _error(read_embeddings, tmp_path / "raw.npy", tmp_path / "t.npy")
    assert msg.startswith(f"{tmp_path / 'raw.npy'}: is a pickle file, which modgap never loads")
    np.save(tmp_path / "p.npy", np.array([0, "a"], dtype=object), allow_pickle=True)
    msg = _error(read_embeddings, tmp_path / "t.npy", tmp_path / "t.npy", pairs=tmp_path / "p.npy")
    _names(msg, tmp_path / "p.npy")
    assert "pickled" in msg


@dataclass
class _Custom:
    value: int = 1


def test_torch_file_with_arbitrary_objects_is_refused(tmp_path, xy):
    x, y = xy
    p = tmp_path / "obj.pt"
    torch.save(
        {"image_emb": torch.from_numpy(x), "text_emb": torch.from_numpy(y), "extra": _Custom()}, p
    )
    msg = _error(read_embeddings, p)
    _names(msg, p)
    assert msg.startswith(f"{p}: holds Python objects other than tensors (test_embeddings._Custom)")
    assert "never unpickles" in msg


def test_torch_file_not_a_dict(tmp_path, xy):
    p = tmp_path / "t.pt"
    torch.save(torch.from_numpy(xy[0]), p)
    msg = _error(read_embeddings, p)
    assert msg == f"{p}: expected a dict of tensors with keys image_emb, text_emb, got Tensor"


def test_string_embeddings_are_refused(tmp_path, xy):
    p = _npz(tmp_path / "s.npz", image_emb=np.array([["a", "b"]]), text_emb=xy[1])
    msg = _error(read_embeddings, p)
    _names(msg, p)
    assert "non-numeric dtype" in msg


# -- corrupt / truncated files ---------------------------------------------------------------
@pytest.mark.parametrize("name", ["c.npz", "c.safetensors", "c.parquet", "c.pt", "c.npy"])
@pytest.mark.parametrize("keep", [0.5, 0.95])
def test_truncated_files(tmp_path, xy, name, keep):
    x, y = xy
    p = tmp_path / name
    other = None
    if name.endswith(".npy"):
        other = tmp_path / "t.npy"
        write_embeddings(EmbeddingSet(x, y), p, texts=other)
    else:
        write_embeddings(EmbeddingSet(x, y), p)
    data = p.read_bytes()
    p.write_bytes(data[: int(len(data) * keep)])
    msg = _error(read_embeddings, p, other)
    assert msg.startswith(f"{p}: cannot read"), msg
    assert "corrupt" in msg or "truncated" in msg


def test_garbage_bytes(tmp_path):
    p = tmp_path / "g.npz"
    p.write_bytes(b"this is not a zip file at all" * 10)
    msg = _error(read_embeddings, p)
    assert msg.startswith(f"{p}: cannot read .npz, the file looks corrupt")


# -- other user errors -----------------------------------------------------------------------
def test_single_npy_without_texts_and_missing_paths(tmp_path, xy):
    np.save(tmp_path / "i.npy", xy[0])
    msg = _error(read_embeddings, tmp_path / "i.npy")
    _names(msg, tmp_path / "i.npy")
    assert "give the text embeddings file too" in msg
    msg = _error(read_embeddings, tmp_path / "nope.npz")
    assert msg == f"{tmp_path / 'nope.npz'}: no such file or folder"
    msg = _error(read_embeddings, tmp_path / "i.npy", tmp_path / "nope.npy")
    assert msg == f"{tmp_path / 'nope.npy'}: no such file or folder"
    msg = _error(read_embeddings, tmp_path / "i.npy", tmp_path / "i.npy", pairs=tmp_path / "x")
    assert msg == f"{tmp_path / 'x'}: no such file or folder"


def test_unnormalised_npy_pair_notice_names_the_file(tmp_path, xy):
    x, y = xy
    np.save(tmp_path / "i.npy", x)
    np.save(tmp_path / "t.npy", 2 * y)
    with pytest.warns(ModgapNotice) as rec:
        emb = read_embeddings(tmp_path / "i.npy", tmp_path / "t.npy")
    assert [str(w.message) for w in rec] == [
        f"{tmp_path / 't.npy'}: 'text_emb' rows were L2-normalised"
    ]
    np.testing.assert_allclose(emb.text_emb, y, atol=1e-6)


# -- CLI -------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", ["nan", "missing_key", "pairs_out_of_range", "truncated"])
def test_cli_bad_input_exit_code_2_one_line(tmp_path, xy, capsys, case):
    from modgap.cli import main

    x, y = xy
    p = tmp_path / "bad.npz"
    args = [str(p)]
    if case == "nan":
        x = x.copy()
        x[0, 0] = np.nan
        _npz(p, image_emb=x, text_emb=y)
    elif case == "missing_key":
        _npz(p, image_emb=x)
    elif case == "pairs_out_of_range":
        _npz(p, image_emb=x, text_emb=y)
        (tmp_path / "pairs.txt").write_text("\n".join(["99"] * 10))
        args += ["--pairs", str(tmp_path / "pairs.txt")]
    else:
        write_embeddings(EmbeddingSet(x, y), p)
        p.write_bytes(p.read_bytes()[:100])
    code = main(["measure", *args])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.count("\n") == 0 and err.startswith("error: ")
    assert str(tmp_path / ("pairs.txt" if case == "pairs_out_of_range" else "bad.npz")) in err
    assert "Traceback" not in err


# -- the EmbeddingSet model ------------------------------------------------------------------
def test_default_pairing_and_unpaired_sets(xy):
    x, y = xy
    assert EmbeddingSet(x, y).has_pairs
    assert not EmbeddingSet(x, y, paired=False).has_pairs
    assert not EmbeddingSet(x, y[:7]).has_pairs
    msg = _error(EmbeddingSet, x, y, text_to_image=np.arange(10), paired=False, source="s.npz")
    assert msg.startswith("s.npz: paired=False contradicts")


def test_text_to_image_must_be_integers(xy):
    x, y = xy
    msg = _error(EmbeddingSet, x, y, text_to_image=np.full(10, 0.5), source="f.npz")
    assert msg == "f.npz: 'text_to_image' must hold integers"
    msg = _error(EmbeddingSet, x, y, text_to_image=np.arange(9), source="f.npz")
    assert msg == "f.npz: 'text_to_image' must have shape (10,), got (9,)"


def test_labels_and_classes_checks(xy):
    x, y = xy
    msg = _error(
        EmbeddingSet, x, y, labels=np.arange(10) % 4, class_names=["a", "b"], source="l.npz"
    )
    assert msg == "l.npz: 'labels' go up to 3 but only 2 class names are given"
    with pytest.warns(ModgapNotice):  # the ones rows are normalised before the count check
        msg = _error(
            EmbeddingSet, x, y, class_names=["a"], class_text_emb=np.ones((2, 6)), source="l.npz"
        )
    assert "'class_text_emb' has 2 classes but 'class_names' has 1" in msg
    msg = _error(EmbeddingSet, x, y, image_ids=["a"], source="l.npz")
    assert msg == "l.npz: 'image_ids' has 1 entries, expected 10"
    with pytest.warns(ModgapNotice):
        emb = EmbeddingSet(x, y, class_text_emb=np.ones((3, 2, 6)))
    np.testing.assert_allclose(np.linalg.norm(emb.class_text_emb, axis=-1), 1, atol=1e-6)


def test_subset_split_and_paired_arrays():
    rng = np.random.default_rng(0)
    x, _ = gapped_pairs(8, 4)
    t2i = np.array([0, 0, 1, 2, 3, 3, 3, 4, 5, 6, 7, 7])
    y = x[t2i] + 0.01 * rng.standard_normal((12, 4)).astype(np.float32)
    y /= np.linalg.norm(y, axis=1, keepdims=True)
    emb = EmbeddingSet(x, y, text_to_image=t2i, texts=[f"t{i}" for i in range(12)])
    sub = emb.subset([3, 7])
    np.testing.assert_array_equal(sub.image_emb, x[[3, 7]])
    np.testing.assert_array_equal(sub.text_to_image, [0, 0, 0, 1, 1])
    assert sub.texts == ["t4", "t5", "t6", "t10", "t11"]
    fit, test = emb.split(0.25, seed=1)
    assert fit.n_images + test.n_images == 8 and fit.n_texts + test.n_texts == 12
    xp, yp = emb.paired_arrays()
    np.testing.assert_array_equal(xp, x[t2i])
    np.testing.assert_array_equal(yp, emb.text_emb)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # replace() must not re-normalise or warn
        moved = emb.with_embeddings(2 * emb.image_emb, emb.text_emb)
    np.testing.assert_allclose(moved.image_emb, 2 * x)
    msg = _error(EmbeddingSet(x, y[:5], paired=False).paired_arrays)
    assert "needs image-text pairs" in msg


def test_huge_finite_values_are_not_mistaken_for_inf(tmp_path, xy):
    x, y = xy
    x = x.copy()
    x[0] *= 1e30  # finite in float32, but its squares overflow float32
    p = _npz(tmp_path / "h.npz", image_emb=x, text_emb=y)
    with pytest.warns(ModgapNotice):
        emb = read_embeddings(p)
    np.testing.assert_allclose(emb.image_emb[0], xy[0][0], atol=1e-6)


def test_replace_keeps_an_unpaired_set_unpaired_with_equal_counts():
    from modgap.reducers import get_reducer

    X, Y = gapped_pairs(n=20, d=6, seed=3)
    emb = EmbeddingSet(X, Y, paired=False)
    assert not emb.has_pairs
    assert not emb.replace(normalize=True).has_pairs
    assert not get_reducer("center").fit(emb).transform_set(emb).has_pairs
    paired = EmbeddingSet(X, Y)
    assert paired.replace(normalize=True).has_pairs


def test_feature_set_lives_apart_and_checks_shared_fields_alike(xy):
    # FeatureSet has its own module (below the data model), still importable from embeddings
    from modgap import embeddings, features

    assert embeddings.FeatureSet is features.FeatureSet
    x, y = xy
    bad = np.arange(10) - 1  # a negative label
    msgs = [
        _error(EmbeddingSet, x, y, labels=bad, source="s"),
        _error(features.FeatureSet, x, y, labels=bad, source="s"),
    ]
    assert msgs[0] == msgs[1] == "s: 'labels' must be non-negative class indices"
    names = ["a", "b"]
    msgs = [
        _error(EmbeddingSet, x, y, labels=np.arange(10) % 3, class_names=names),
        _error(features.FeatureSet, x, y, labels=np.arange(10) % 3, class_names=names),
    ]
    assert msgs[0] == msgs[1] and "only 2 class names" in msgs[0]
