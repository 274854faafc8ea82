"""Webdataset tar shards: the reader (``modgap.datasets.webdataset``) and ``modgap embed SHARDS``.

Shards are written here with the standard library's ``tarfile`` in the layout the webdataset
package writes (members of a sample consecutive, fields in sorted order); the compatibility
tests at the end write them with the webdataset package itself, as img2dataset and
CLIP_benchmark do, when it is installed.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import pickle
import tarfile
import time

import numpy as np
import pytest
from PIL import Image

from conftest import POCKET_MODULES, require
from modgap.cli import main
from modgap.datasets.webdataset import expand_braces, find_shards, read_webdataset
from modgap.encoders import load_encoder
from modgap.errors import InputError
from modgap.io import read_embeddings

pytestmark = pytest.mark.usefixtures("offline_hub")


# ---------------------------------------------------------------------------------- helpers --
def image_bytes(seed: int, fmt: str = "png", size=(28, 36)) -> bytes:
    arr = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt)
    return buf.getvalue()


def write_tar(path, samples, compress: bool = False):
    """Write ``samples`` (dicts: ``__key__`` plus field -> bytes/str) as one shard."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for sample in samples:
            key = sample["__key__"]
            for field in sorted(k for k in sample if k != "__key__"):
                data = sample[field]
                data = data.encode() if isinstance(data, str) else data
                info = tarfile.TarInfo(f"{key}.{field}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    raw = buf.getvalue()
    path.write_bytes(gzip.compress(raw, mtime=0) if compress else raw)
    return path


def captioned_samples(start: int, n: int, fmt: str = "png"):
    return [
        {"__key__": f"{i:06d}", fmt: image_bytes(i, fmt), "txt": f"a photo of the cat {i}"}
        for i in range(start, start + n)
    ]


@pytest.fixture
def shards(tmp_path):
    """Three shards of 3, 2 and 2 samples in ``tmp_path/shards``."""
    folder = tmp_path / "shards"
    folder.mkdir()
    for s, (start, n) in enumerate([(0, 3), (3, 2), (5, 2)]):
        write_tar(folder / f"{s:06d}.tar", captioned_samples(start, n))
    return folder


def embed(*args):
    return main(["embed", *map(str, args), "--no-progress"])


def assert_one_line_error(capsys, *parts):
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for part in parts:
        assert part in lines[0], lines[0]
    return lines[0]


# ----------------------------------------------------------------- acceptance: real photos --
@pytest.fixture(scope="module")
def photos():
    pytest.importorskip("skimage", reason="scikit-image (modgap[encoders]) gives the photos")
    from modgap.datasets.photos import load_photos

    images, captions, text_to_image, names = load_photos()
    return images[:6], captions, text_to_image, names[:6]


def test_shards_embed_like_the_same_images_in_a_folder(photos, tmp_path, capsys):
    """The acceptance test: pocket on real photos, tar vs folder + captions file."""
    require(*POCKET_MODULES)
    images, captions, text_to_image, names = photos
    folder = tmp_path / "images"
    folder.mkdir()
    rows, samples = [["image", "caption"]], []
    for i, (im, name) in enumerate(zip(images, names, strict=True)):
        fmt, ext = ("JPEG", "jpg") if i % 2 == 0 else ("PNG", "png")
        buf = io.BytesIO()
        im.save(buf, format=fmt)
        (folder / f"{name}.{ext}").write_bytes(buf.getvalue())
        caps = [c for c, j in zip(captions, text_to_image, strict=True) if j == i]
        rows += [[f"{name}.{ext}", c] for c in caps]
        samples.append({"__key__": name, ext: buf.getvalue(), "txt": "\n".join(caps)})
    with (tmp_path / "captions.csv").open("w", newline="") as f:
        csv.writer(f).writerows(rows)
    write_tar(tmp_path / "photos.tar", samples)

    start = time.perf_counter()
    assert embed(folder, tmp_path / "captions.csv", "-o", tmp_path / "from_folder") == 0
    assert embed(tmp_path / "photos.tar", "-o", tmp_path / "from_tar") == 0
    seconds = time.perf_counter() - start
    capsys.readouterr()
    a, b = read_embeddings(tmp_path / "from_folder"), read_embeddings(tmp_path / "from_tar")
    assert a.image_emb.shape == (6, 256) and a.text_emb.shape == (12, 256)
    np.testing.assert_array_equal(b.image_emb, a.image_emb)
    np.testing.assert_array_equal(b.text_emb, a.text_emb)
    np.testing.assert_array_equal(b.text_to_image, a.text_to_image)
    assert list(b.texts) == list(a.texts)
    assert list(b.image_ids) == [f"photos.tar/{i}" for i in a.image_ids]
    assert seconds < 60, f"acceptance run took {seconds:.1f}s"


# ------------------------------------------------------------------------------- the reader --
def test_reader_several_shards_in_order(shards):
    index = read_webdataset(shards)
    assert index.n_images == 7 and index.shard_sizes == [3, 2, 2]
    assert index.image_ids[:4] == [
        "000000.tar/000000.png",
        "000000.tar/000001.png",
        "000000.tar/000002.png",
        "000001.tar/000003.png",
    ]
    assert index.captions == [f"a photo of the cat {i}" for i in range(7)]
    np.testing.assert_array_equal(index.text_to_image, np.arange(7))
    assert index.labels is None
    images = list(index.images())
    for i, im in enumerate(images):
        written = Image.open(io.BytesIO(image_bytes(i)))
        assert im.mode == written.mode
        np.testing.assert_array_equal(np.asarray(im), np.asarray(written))


def test_images_keep_their_stored_mode_as_a_file_read_does(tmp_path):
    """Each encoder converts at its own step (load_image(path, None) keeps the mode), so a
    shard must hand over greyscale, palette and RGBA images unconverted, as a folder does."""
    from modgap.encoders import load_image

    rng = np.random.default_rng(0)
    rgba = Image.fromarray(rng.integers(0, 256, (20, 24, 4), dtype=np.uint8), "RGBA")
    grey = Image.fromarray(rng.integers(0, 256, (20, 24), dtype=np.uint8), "L")
    samples = []
    for i, im in enumerate((rgba, grey, rgba.convert("P"))):
        (tmp_path / f"{i}.png").write_bytes(_png(im))
        samples.append({"__key__": f"s{i}", "png": _png(im), "txt": f"image {i}"})
    write_tar(tmp_path / "000000.tar", samples)
    got = list(read_webdataset(tmp_path / "000000.tar").images())
    for i, im in enumerate(got):
        ref = load_image(tmp_path / f"{i}.png", None)
        assert im.mode == ref.mode
        np.testing.assert_array_equal(np.asarray(im), np.asarray(ref))


def _png(im) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="png")
    return buf.getvalue()


def test_find_shards_folder_pattern_and_list(tmp_path, shards):
    names = [p.name for p in find_shards(shards)]
    assert names == ["000000.tar", "000001.tar", "000002.tar"]
    assert find_shards(str(shards / "{000000..000002}.tar")) == find_shards(shards)
    assert [p.name for p in find_shards([shards / "000002.tar", shards / "000000.tar"])] == [
        "000002.tar",
        "000000.tar",
    ]
    # natural order (CLIP_benchmark numbers shards 0.tar ... 10.tar without padding)
    unpadded = tmp_path / "unpadded"
    unpadded.mkdir()
    for i in (0, 1, 2, 10):
        write_tar(unpadded / f"{i}.tar", captioned_samples(i, 1))
    (unpadded / "000.parquet").write_bytes(b"not a shard")  # img2dataset's side files
    (unpadded / "_stats.json").write_text("{}")
    assert [p.name for p in find_shards(unpadded)] == ["0.tar", "1.tar", "2.tar", "10.tar"]


@pytest.mark.parametrize(
    "pattern",
    ["s{000..010}.tar", "{0..10..3}", "x{a,b{1..2}}y", "{a}", "{3..1}", "{-01..1}", "a{,b}c"],
)
def test_brace_expansion(pattern):
    expected = {
        "s{000..010}.tar": [f"s{i:03d}.tar" for i in range(11)],
        "{0..10..3}": ["0", "3", "6", "9"],
        "x{a,b{1..2}}y": ["xay", "xb1y", "xb2y"],
        "{a}": ["{a}"],
        "{3..1}": ["3", "2", "1"],
        "{-01..1}": ["-01", "000", "001"],
        "a{,b}c": ["ac", "abc"],
    }[pattern]
    assert expand_braces(pattern) == expected
    braceexpand = pytest.importorskip("braceexpand", reason="cross-check needs braceexpand")
    assert list(braceexpand.braceexpand(pattern)) == expected


@pytest.mark.parametrize(
    "pattern", ["s{000..010}.tar", "{0..10..3}", "x{a,b{1..2}}y{3..1}", "{a}", "a{,b}c{x,{y,z}}"]
)
def test_brace_count_without_listing(pattern):
    from modgap.datasets.shards import count_braces, iter_braces

    assert count_braces(pattern) == len(expand_braces(pattern)) == len(list(iter_braces(pattern)))
    assert count_braces("wds/{0..99999999}/{a,b}.tar") == 2 * 10**8


def test_huge_pattern_with_few_shards_fails_at_the_first_missing_one(shards, capsys):
    import shutil
    import time

    seq = shards.parent / "seq"
    seq.mkdir()
    for i in range(3):
        shutil.copy(shards / f"{i:06d}.tar", seq / f"{i}.tar")
    pattern = str(seq / "{0..99999999}.tar")
    t0 = time.monotonic()
    with pytest.raises(InputError) as e:
        find_shards(pattern)
    assert str(e.value) == (
        f"{seq / '3.tar'}: shard not found (shard 4 of the 100,000,000 that {pattern} names; "
        "the 3 before it exist)"
    )
    assert embed(pattern, "--model", "pocket", "--out", shards.parent / "o") == 2
    assert time.monotonic() - t0 < 5  # the 10^8 names are never listed
    assert_one_line_error(capsys, "3.tar: shard not found (shard 4 of the 100,000,000")
    assert not (shards.parent / "o").exists()


def test_brace_expansion_unbalanced():
    with pytest.raises(InputError, match="unbalanced braces"):
        expand_braces("shards/{0..3.tar")


def test_captions_labels_and_json(tmp_path):
    samples = [
        # CLIP_benchmark retrieval sets: one caption per line of the .txt
        {"__key__": "s0000000", "webp": image_bytes(0, "webp"), "txt": "one\ntwo\n\nthree\n",
         "cls": "4"},
        # img2dataset: .txt and a .json with the same caption (plus its download metadata)
        {"__key__": "s0000001", "jpg": image_bytes(1, "jpeg"), "txt": "a dog",
         "json": json.dumps({"caption": "a dog", "url": "http://x", "status": "success"}),
         "cls": "0"},
        # only a .json caption; a list of captions
        {"__key__": "s0000002", "png": image_bytes(2), "json": json.dumps({"captions": ["x", "y"]}),
         "cls": "2"},
        # an empty .txt falls back to the .json caption
        {"__key__": "s0000003", "jpeg": image_bytes(3, "jpeg"), "txt": "",
         "json": json.dumps({"caption": "from json"}), "cls": " 1\n"},
    ]  # fmt: skip
    write_tar(tmp_path / "a.tar", samples)
    index = read_webdataset(tmp_path / "a.tar")
    assert index.captions == ["one", "two", "three", "a dog", "x", "y", "from json"]
    np.testing.assert_array_equal(index.text_to_image, [0, 0, 0, 1, 2, 2, 3])
    np.testing.assert_array_equal(index.labels, [4, 0, 2, 1])
    assert index.image_ids == ["a.tar/s0000000.webp", "a.tar/s0000001.jpg", "a.tar/s0000002.png",
                               "a.tar/s0000003.jpeg"]  # fmt: skip
    assert len(list(index.images())) == 4
    whole = read_webdataset(tmp_path / "a.tar", txt_captions="file")
    assert whole.captions[0] == "one\ntwo\n\nthree"


def test_other_members_are_skipped_and_never_unpickled(tmp_path):
    marker = tmp_path / "unpickled"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    bomb = pickle.dumps(Payload())
    samples = [
        {"__key__": "k0", "jpg": image_bytes(0, "jpeg"), "txt": "a cat", "pyd": bomb,
         "pickle": bomb, "npy": b"\x93NUMPY garbage", "seg.png": b"not even an image"},
    ]  # fmt: skip
    path = write_tar(tmp_path / "a.tar", samples)
    with tarfile.open(path, "a") as tar:  # webdataset's meta files and files without a field
        for name in ("__index__", "README"):
            info = tarfile.TarInfo(name)
            info.size = 3
            tar.addfile(info, io.BytesIO(b"abc"))
    index = read_webdataset(path)
    assert index.captions == ["a cat"] and index.image_ids == ["a.tar/k0.jpg"]
    assert len(list(index.images())) == 1
    assert not marker.exists()


def test_compressed_shard(tmp_path):
    write_tar(tmp_path / "a.tar.gz", captioned_samples(0, 3), compress=True)
    index = read_webdataset(tmp_path)
    assert index.image_ids[0] == "a.tar.gz/000000.png" and len(list(index.images())) == 3


def test_shard_names_unique_across_folders(tmp_path):
    for split in ("train", "test"):
        (tmp_path / split).mkdir()
        write_tar(tmp_path / split / "0.tar", captioned_samples(0, 1))
    index = read_webdataset([tmp_path / "train", tmp_path / "test"])
    assert index.image_ids == ["train/0.tar/000000.png", "test/0.tar/000000.png"]


# ------------------------------------------------------------------------------ modgap embed --
def test_embed_several_shards_and_a_pattern(hf_clip_dir, shards, tmp_path, capsys):
    import pyarrow.parquet as pq

    out = tmp_path / "out"
    pattern = str(shards / "{000000..000002}.tar")
    args = ("-m", f"hf:{hf_clip_dir}", "-o", out, "--batch-size", "2", "--dtype", "float32")
    assert embed(pattern, *args) == 0
    assert "wrote" in capsys.readouterr().out
    img = np.load(out / "img_emb" / "img_emb_0.npy")
    txt = np.load(out / "text_emb" / "text_emb_0.npy")
    enc = load_encoder(f"hf:{hf_clip_dir}", device="cpu")
    direct = [Image.open(io.BytesIO(image_bytes(i))) for i in range(7)]
    np.testing.assert_allclose(img, enc.encode_images(direct, batch_size=2), atol=1e-6)
    captions = [f"a photo of the cat {i}" for i in range(7)]
    np.testing.assert_allclose(txt, enc.encode_texts(captions), atol=1e-6)
    meta = pq.read_table(out / "metadata" / "metadata_0.parquet").to_pydict()
    assert meta["image_path"][3] == "000001.tar/000003.png"
    assert meta["caption"] == captions
    # the folder of shards and the shard list give the same folder
    same = ["-m", f"hf:{hf_clip_dir}", "--batch-size", "2", "--dtype", "float32"]
    assert embed(shards, *same, "-o", tmp_path / "b") == 0
    assert embed(*sorted(shards.glob("*.tar")), *same, "-o", tmp_path / "c") == 0
    for other in ("b", "c"):
        np.testing.assert_array_equal(np.load(tmp_path / other / "img_emb" / "img_emb_0.npy"), img)


def test_embed_keeps_several_captions_and_labels(hf_clip_dir, tmp_path):
    samples = [
        {"__key__": f"s{i:07d}", "png": image_bytes(i), "txt": f"the cat\nthe dog {i}",
         "cls": str(i % 2)}
        for i in range(3)
    ]  # fmt: skip
    write_tar(tmp_path / "0.tar", samples)
    out = tmp_path / "out"
    assert embed(tmp_path / "0.tar", "-m", f"hf:{hf_clip_dir}", "-o", out) == 0
    emb = read_embeddings(out)
    assert emb.n_images == 3 and emb.n_texts == 6
    np.testing.assert_array_equal(emb.text_to_image, [0, 0, 1, 1, 2, 2])
    np.testing.assert_array_equal(emb.labels, [0, 1, 0])
    assert list(emb.texts)[:2] == ["the cat", "the dog 0"]
    assert list(emb.image_ids) == [f"0.tar/s{i:07d}.png" for i in range(3)]


def test_embed_keeps_json_fields_as_metadata_columns(hf_clip_dir, tmp_path):
    """img2dataset's per-sample .json (url, key, status, nested exif...) becomes metadata
    columns, flattened as clip-retrieval's --enable_metadata flattens them; float16 shards."""
    import pyarrow.parquet as pq

    samples = [
        {"__key__": f"{i:06d}", "png": image_bytes(i),
         "json": json.dumps({"caption": f"the cat {i}", "url": f"http://x/{i}.png", "width": 28,
                             "exif": {"make": "cam"}, **({"status": "ok"} if i else {})})}
        for i in range(3)
    ]  # fmt: skip
    write_tar(tmp_path / "0.tar", samples)
    out = tmp_path / "out"
    assert embed(tmp_path / "0.tar", "-m", f"hf:{hf_clip_dir}", "-o", out) == 0
    assert np.load(out / "img_emb" / "img_emb_0.npy").dtype == np.float16
    meta = pq.read_table(out / "metadata" / "metadata_0.parquet").to_pydict()
    assert list(meta) == ["image_path", "caption", "url", "width", "exif.make", "status"]
    assert meta["caption"] == [f"the cat {i}" for i in range(3)]  # the caption column once
    assert meta["url"] == [f"http://x/{i}.png" for i in range(3)]
    assert meta["width"] == [28, 28, 28] and meta["exif.make"] == ["cam"] * 3
    assert meta["status"] == [None, "ok", "ok"]  # a field some samples lack: null there
    emb = read_embeddings(out)
    assert list(emb.image_ids) == [f"0.tar/{i:06d}.png" for i in range(3)]


def test_embed_bad_json_beside_a_txt_caption_is_one_line(tmp_path, capsys):
    samples = [{"__key__": "000000", "png": image_bytes(0), "txt": "a cat", "json": "{oops"}]
    write_tar(tmp_path / "0.tar", samples)
    assert embed(tmp_path / "0.tar", "-o", tmp_path / "out") == 2
    assert_one_line_error(capsys, "0.tar", "'000000'", "not JSON")


def _truncate(path, where):
    raw = path.read_bytes()
    with tarfile.open(path) as tar:
        members = tar.getmembers()
    last = members[-1]
    cut = {
        "in_data": last.offset_data + last.size // 2,  # the last image is cut off
        "at_member": last.offset,  # a whole sample's file is missing, no end blocks
        "in_header": last.offset + 100,  # the last header is cut off
    }[where]
    path.write_bytes(raw[:cut])


@pytest.mark.parametrize(
    ("setup", "parts"),
    [
        ("empty_tar", ["000001.tar", "no samples in this shard (an empty tar)"]),
        ("empty_file", ["000001.tar", "empty file, not a tar shard"]),
        ("not_a_tar", ["000001.tar", "not a readable tar file"]),
        ("no_caption", ["000001.tar", "sample '000004' has no caption (no .txt)"]),
        ("empty_caption", ["000001.tar", "sample '000004' has no caption (its .txt is empty"]),
        ("no_image", ["000001.tar", "sample '000004' has no image"]),
        ("two_images", ["000001.tar", "sample '000004' has several images (.jpg, .png)"]),
        ("split_sample", ["000001.tar", "sample '000003' appears twice"]),
        ("bad_label", ["000001.tar", "sample '000004': its .cls is not an integer label"]),
        ("some_labels", ["000000.tar", "sample '000000' has no .cls label but other"]),
        ("bad_json", ["000001.tar", "sample '000004': its .json is not JSON"]),
        ("truncated_in_data", ["000001.tar", "truncated or damaged tar"]),
        ("truncated_at_member", ["000001.tar", "truncated or damaged tar"]),
        ("truncated_in_header", ["000001.tar", "truncated or damaged tar"]),
        ("truncated_gzip", ["000001.tar.gz", "truncated or damaged tar"]),
        ("missing_shard", ["000003.tar", "shard not found (shard 4 of the 4 that"]),
        ("captions_first", ["captions.csv", "a captions file comes second"]),
        ("image_folder", ["no .tar shards in this folder", "needs its captions file"]),
    ],
)
def test_embed_input_errors_before_the_model_loads(shards, tmp_path, capsys, setup, parts):
    """Every bad shard is one line naming it (and the sample key), exit 2, nothing written.

    The model spec names no model: an error about the data proves it came first."""
    bad = shards / "000001.tar"
    inputs = [str(shards / "{000000..000002}.tar")]
    if setup == "empty_tar":
        write_tar(bad, [])
    elif setup == "empty_file":
        bad.write_bytes(b"")
    elif setup == "not_a_tar":
        bad.write_bytes(b"hello, I am a text file\n" * 40)
    elif setup == "no_caption":
        write_tar(bad, [{"__key__": "000003", "png": image_bytes(3), "txt": "x"},
                        {"__key__": "000004", "png": image_bytes(4)}])  # fmt: skip
    elif setup == "empty_caption":
        write_tar(bad, [{"__key__": "000004", "png": image_bytes(4), "txt": "\n \n"}])
    elif setup == "no_image":
        write_tar(bad, [{"__key__": "000004", "txt": "x"}])
    elif setup == "two_images":
        write_tar(bad, [{"__key__": "000004", "png": image_bytes(4), "txt": "x",
                         "jpg": image_bytes(4, "jpeg")}])  # fmt: skip
    elif setup == "split_sample":
        write_tar(bad, [{"__key__": "000003", "png": image_bytes(3), "txt": "x"},
                        {"__key__": "000004", "png": image_bytes(4), "txt": "x"},
                        {"__key__": "000003", "txt": "x"}])  # fmt: skip
    elif setup == "bad_label":
        write_tar(bad, [{"__key__": "000004", "png": image_bytes(4), "txt": "x", "cls": "cat"}])
    elif setup == "some_labels":
        write_tar(bad, [{"__key__": "000004", "png": image_bytes(4), "txt": "x", "cls": "1"}])
    elif setup == "bad_json":
        write_tar(bad, [{"__key__": "000004", "png": image_bytes(4), "json": "{nope"}])
    elif setup.startswith("truncated_in") or setup == "truncated_at_member":
        _truncate(bad, setup.removeprefix("truncated_"))
    elif setup == "truncated_gzip":
        bad.unlink()
        gz = write_tar(shards / "000001.tar.gz", captioned_samples(3, 2), compress=True)
        gz.write_bytes(gz.read_bytes()[:-40])
        inputs = [str(shards)]
    elif setup == "missing_shard":
        inputs = [str(shards / "{000000..000003}.tar")]
    elif setup == "captions_first":
        inputs = [str(tmp_path / "captions.csv"), str(shards)]
    elif setup == "image_folder":
        folder = tmp_path / "images"
        folder.mkdir()
        (folder / "a.png").write_bytes(image_bytes(0))
        inputs = [str(folder)]
    out = tmp_path / "out"
    assert embed(*inputs, "-m", f"hf:{tmp_path / 'no-model'}", "-o", out) == 2
    assert_one_line_error(capsys, *parts)
    assert not out.exists()


def test_embed_unreadable_image_names_shard_and_key(hf_clip_dir, shards, tmp_path, capsys):
    good = image_bytes(4)
    write_tar(shards / "000001.tar", [
        {"__key__": "000003", "png": image_bytes(3), "txt": "x"},
        {"__key__": "000004", "png": good[: len(good) // 2], "txt": "y"},  # cut-off image
    ])  # fmt: skip
    out = tmp_path / "out"
    assert embed(shards, "-m", f"hf:{hf_clip_dir}", "-o", out) == 2
    assert_one_line_error(capsys, "000001.tar: sample '000004': cannot read image 000004.png")
    assert not out.exists()
    write_tar(shards / "000001.tar", [{"__key__": "000004", "jpg": b"\xff\xd8garbage", "txt": "y"}])
    assert embed(shards, "-m", f"hf:{hf_clip_dir}", "-o", out) == 2
    assert_one_line_error(capsys, "sample '000004': cannot read image 000004.jpg")


def test_embed_txt_captions_option(hf_clip_dir, tmp_path, capsys):
    write_tar(tmp_path / "0.tar", [{"__key__": "a", "png": image_bytes(0), "txt": "l1\nl2"}])
    out = tmp_path / "out"
    assert embed(tmp_path / "0.tar", "-m", f"hf:{hf_clip_dir}", "-o", out,
                 "--txt-captions", "file") == 0  # fmt: skip
    assert read_embeddings(out).n_texts == 1
    capsys.readouterr()
    csv = tmp_path / "c.csv"
    csv.write_text("image,caption\na.png,x\n")
    assert embed(tmp_path, csv, "-o", tmp_path / "o2", "--txt-captions", "file") == 2
    assert_one_line_error(capsys, "--txt-captions applies to webdataset shards")


def test_embed_never_writes_over_the_shards(shards, capsys):
    assert embed(shards, "-m", "pocket", "-o", shards) == 2
    assert_one_line_error(capsys, "would write inside or replace the shard")
    assert embed(shards, "-m", "pocket", "-o", shards / "000001.tar") == 2
    assert_one_line_error(capsys, "would overwrite the shard")
    assert len(read_webdataset(shards).captions) == 7


# -------------------------------------------------- shards written by the webdataset package --
def test_reads_what_the_webdataset_package_writes(tmp_path):
    """CLIP_benchmark's ``convert_retrieval_dataset`` and img2dataset's writer, replayed."""
    wds = pytest.importorskip("webdataset", reason="pip install webdataset for this check")
    # CLIP_benchmark: ShardWriter("%d.tar"), key s%07d, lossless webp, captions joined by \n
    folder = tmp_path / "flickr" / "test"
    folder.mkdir(parents=True)
    captions = [[f"caption {i} {j}" for j in range(3)] for i in range(5)]
    with wds.ShardWriter(str(folder / "%d.tar"), maxcount=2, verbose=0) as sink:
        for i, caps in enumerate(captions):
            buf = io.BytesIO()
            Image.open(io.BytesIO(image_bytes(i))).save(buf, format="webp", lossless=True)
            sink.write({"__key__": f"s{i:07d}", "webp": buf.getvalue(),
                        "txt": "\n".join(c.replace("\n", r"\n") for c in caps)})  # fmt: skip
    index = read_webdataset(folder)
    assert index.shard_names == ["0.tar", "1.tar", "2.tar"]
    assert index.captions == [c for caps in captions for c in caps]
    ours = list(index.images())
    pattern = str(folder / "{0..2}.tar")
    theirs = list(
        wds.WebDataset(pattern, shardshuffle=False)
        .decode("pil")
        .to_tuple("__key__", "webp", "txt")
    )  # fmt: skip
    assert index.keys == [k for k, _, _ in theirs]
    assert index.captions == [c for _, _, t in theirs for c in t.splitlines()]
    for a, (_, b, _) in zip(ours, theirs, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b.convert("RGB")))
    # img2dataset: TarWriter, jpg + txt + json per sample
    with wds.TarWriter(str(tmp_path / "00000.tar")) as sink:
        for i in range(3):
            key = f"{i:09d}"
            meta = {"caption": f"photo {i}", "key": key, "status": "success", "width": 36}
            sink.write({"__key__": key, "jpg": image_bytes(i, "jpeg"), "txt": f"photo {i}",
                        "json": json.dumps(meta, indent=4)})  # fmt: skip
    index = read_webdataset(tmp_path / "00000.tar")
    assert index.captions == ["photo 0", "photo 1", "photo 2"]
    assert index.image_ids[0] == "00000.tar/000000000.jpg"
