"""Webdataset tar shards: the reader (``modgap.datasets.webdataset``).

Shards are written here with the standard library's ``tarfile`` in the layout the webdataset
package writes (members of a sample consecutive, fields in sorted order); the compatibility
tests at the end write them with the webdataset package itself, as img2dataset and
CLIP_benchmark do, when it is installed.
"""

from __future__ import annotations

import gzip
import io
import json
import pickle
import tarfile

import numpy as np
import pytest
from PIL import Image

from modgap.datasets.webdataset import expand_braces, find_shards, read_webdataset
from modgap.errors import InputError


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
        assert im.mode == "RGB"
        written = Image.open(io.BytesIO(image_bytes(i)))
        np.testing.assert_array_equal(np.asarray(im), np.asarray(written))


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
