"""Fashion-MNIST reader, caption generator, captioned photos, caption files."""

from __future__ import annotations

import gzip
import json
import re

import numpy as np
import pytest

from modgap.datasets.caption_file import read_caption_file
from modgap.datasets.captions import (
    CAPTION_TEMPLATES,
    CLASS_SYNONYMS,
    PROMPT_NAMES,
    TONE_WORDS,
    ZERO_SHOT_TEMPLATES,
    caption_vocabulary,
    class_prompts,
    image_tones,
    sample_captions,
)
from modgap.datasets.fashion_mnist import (
    CLASS_NAMES,
    DEFAULT_ROOT,
    find_fashion_mnist,
    load_fashion_mnist,
    read_idx,
)
from modgap.datasets.photos import PHOTO_CAPTIONS, load_photos
from modgap.errors import InputError, ModgapError


def _idx_bytes(array: np.ndarray) -> bytes:
    """Plain IDX writer: magic 0,0,type,ndim, big-endian uint32 sizes, big-endian data."""
    code = {np.uint8: 0x08, np.int32: 0x0C, np.float32: 0x0D}[array.dtype.type]
    header = bytes([0, 0, code, array.ndim]) + b"".join(
        int(s).to_bytes(4, "big") for s in array.shape
    )
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def _fake_root(folder, n_train=12, n_test=7, seed=0):
    rng = np.random.default_rng(seed)
    data = {}
    for split, n, prefix in (("train", n_train, "train"), ("test", n_test, "t10k")):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n).astype(np.uint8)
        (folder / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(_idx_bytes(images)))
        (folder / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(_idx_bytes(labels)))
        data[split] = (images, labels)
    return data


# --------------------------------------------------------------------------------- IDX files --
@pytest.mark.parametrize("dtype", [np.uint8, np.int32, np.float32])
@pytest.mark.parametrize("compressed", [True, False])
def test_read_idx_round_trip(tmp_path, dtype, compressed):
    array = (
        (np.arange(2 * 3 * 4) - 5).reshape(2, 3, 4).astype(dtype)
        if dtype != np.uint8
        else (np.arange(24, dtype=np.uint8).reshape(2, 3, 4))
    )
    raw = _idx_bytes(array)
    path = tmp_path / ("a.idx.gz" if compressed else "a.idx")
    path.write_bytes(gzip.compress(raw) if compressed else raw)
    out = read_idx(path)
    assert out.shape == array.shape and out.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(out, array)


def test_read_idx_errors(tmp_path):
    bad = tmp_path / "bad.idx"
    bad.write_bytes(b"\x01\x02\x03\x04rest")
    with pytest.raises(InputError, match=r"bad\.idx: not an IDX file"):
        read_idx(bad)
    short = tmp_path / "short.idx"
    short.write_bytes(_idx_bytes(np.zeros((3, 4), np.uint8))[:-2])
    with pytest.raises(InputError, match=r"short\.idx: IDX size mismatch"):
        read_idx(short)
    gz = tmp_path / "broken.gz"
    gz.write_bytes(b"not gzip at all")
    with pytest.raises(InputError, match=r"broken\.gz: cannot read IDX file"):
        read_idx(gz)


def test_load_fake_fashion_mnist(tmp_path):
    data = _fake_root(tmp_path)
    for split in ("train", "test"):
        images, labels = load_fashion_mnist(split, root=tmp_path)
        np.testing.assert_array_equal(images, data[split][0])
        np.testing.assert_array_equal(labels, data[split][1])
        assert labels.dtype == np.int64
    images, labels = load_fashion_mnist("train", root=tmp_path, limit=5)
    assert images.shape == (5, 28, 28) and labels.shape == (5,)


def test_fashion_mnist_env_variable(tmp_path, monkeypatch):
    _fake_root(tmp_path)
    monkeypatch.setenv("MODGAP_FASHION_MNIST", str(tmp_path))
    assert find_fashion_mnist() == tmp_path


def test_missing_fashion_mnist_says_how_to_install(tmp_path):
    with pytest.raises(ModgapError, match="apt-get install dataset-fashion-mnist") as info:
        load_fashion_mnist("test", root=tmp_path / "nowhere")
    assert "MODGAP_FASHION_MNIST" in str(info.value)
    with pytest.raises(ModgapError, match="unknown Fashion-MNIST split 'val'"):
        load_fashion_mnist("val", root=tmp_path)


def test_real_fashion_mnist_test_split():
    if not (DEFAULT_ROOT / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip("Debian package dataset-fashion-mnist not installed")
    images, labels = load_fashion_mnist("test")
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    np.testing.assert_array_equal(np.bincount(labels), np.full(10, 1000))


# ---------------------------------------------------------------------------------- captions --
def test_vocabulary_size_and_content():
    vocab = caption_vocabulary()
    n_adjective_options = sum(max(len(words), 1) for words in TONE_WORDS)
    expected = sum(
        len(nouns) * n_adjective_options * len(CAPTION_TEMPLATES)
        for nouns, _ in CLASS_SYNONYMS.values()
    )
    assert len(vocab) == expected == len(set(vocab.texts))
    for text, label, tone in zip(vocab.texts, vocab.labels, vocab.tones, strict=True):
        nouns, _ = CLASS_SYNONYMS[CLASS_NAMES[label]]
        assert any(noun in text for noun in nouns), text
        words = set(re.findall(r"[a-z]+", text.lower()))
        for other_tone, adjectives in enumerate(TONE_WORDS):
            # a tone's adjective appears exactly in the captions of that tone
            # ("black and white photo" is a template, not a tone word)
            hit = any(a in words for a in adjectives if a not in ("black", "white"))
            if adjectives and other_tone != tone:
                assert not hit, text
        assert text[0].isupper()


def test_articles():
    vocab = caption_vocabulary()
    assert "A photo of an ankle boot." in vocab.texts
    assert "A photo of a pair of dark jeans." in vocab.texts
    assert not any(" a ankle" in t or " a open" in t for t in vocab.texts)


def test_image_tones():
    images = np.zeros((4, 28, 28), np.uint8)
    images[0, 5:20, 5:20] = 250  # high stored value: a dark garment (negated intensities)
    images[1, 5:20, 5:20] = 90  # a light one
    images[2, 5:20, 5:20] = 160  # in between
    np.testing.assert_array_equal(image_tones(images), [1, 2, 0, 0])  # last one blank


def test_sample_captions_fit_their_image():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 300)
    tones = rng.integers(0, 3, 300)
    vocab = caption_vocabulary()
    ids = sample_captions(labels, tones, vocab, rng=3)
    np.testing.assert_array_equal(ids, sample_captions(labels, tones, vocab, rng=3))
    assert not np.array_equal(ids, sample_captions(labels, tones, vocab, rng=4))
    np.testing.assert_array_equal(vocab.labels[ids], labels)
    assert np.all((vocab.tones[ids] == 0) | (vocab.tones[ids] == tones))


def test_class_prompts():
    prompts = class_prompts()
    assert len(prompts) == len(CLASS_NAMES) == len(PROMPT_NAMES)
    assert all(len(p) == len(ZERO_SHOT_TEMPLATES) for p in prompts)
    assert prompts[1][0] == "a photo of a pair of trousers."


# ------------------------------------------------------------------------------------ photos --
def test_photos_load_with_captions():
    pytest.importorskip("skimage")
    images, captions, text_to_image, names = load_photos()
    assert names == list(PHOTO_CAPTIONS) and len(images) == len(names) >= 10
    assert len(captions) == 2 * len(images)
    np.testing.assert_array_equal(text_to_image, np.repeat(np.arange(len(images)), 2))
    assert all(im.mode == "RGB" and min(im.size) >= 100 for im in images)
    assert captions[0] == PHOTO_CAPTIONS[names[0]][0]
    with pytest.raises(ModgapError, match="unknown demo photo 'nope'"):
        load_photos(["nope"])


# ------------------------------------------------------------------------------ caption files --
def _images_dir(tmp_path, names=("a.png", "b.png", "c.png")):
    from PIL import Image

    folder = tmp_path / "images"
    folder.mkdir()
    for name in names:
        Image.new("RGB", (8, 8), "red").save(folder / name)
    return folder


def test_caption_csv_and_jsonl(tmp_path):
    folder = _images_dir(tmp_path)
    csv = tmp_path / "caps.csv"
    csv.write_text('image,caption\na.png,a red square\nb.png,"red, square"\na.png,again a\n')
    table = read_caption_file(csv, folder)
    assert table.image_ids == ["a.png", "b.png"]
    assert table.captions == ["a red square", "red, square", "again a"]
    np.testing.assert_array_equal(table.text_to_image, [0, 1, 0])
    jsonl = tmp_path / "caps.jsonl"
    rows = [{"file": "c.png", "text": "third"}, {"file": "a.png", "text": "first"}]
    jsonl.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    table = read_caption_file(jsonl, folder)
    assert table.image_paths == [folder / "c.png", folder / "a.png"]
    np.testing.assert_array_equal(table.text_to_image, [0, 1])


@pytest.mark.parametrize(
    ("content", "suffix", "message"),
    [
        ("name,caption\na.png,x\n", ".csv", r"no image column \(expected one of image"),
        ("image,words\na.png,x\n", ".csv", "no caption column"),
        ("image,caption\nzzz.png,x\n", ".csv", "line 2: image 'zzz.png' not found"),
        ("image,caption\na.png,  \n", ".csv", "line 2: empty caption"),
        ("image,caption\n", ".csv", "no captions in file"),
        ("", ".csv", "empty captions file"),
        ('{"image": "a.png", "caption": "x"}\n{oops\n', ".jsonl", "line 2: not JSON"),
        ("[1, 2]\n", ".jsonl", "line 1: expected a JSON object"),
        ("image caption\n", ".txt", r"must be a \.csv, \.tsv or \.jsonl file"),
    ],
)
def test_caption_file_errors(tmp_path, content, suffix, message):
    folder = _images_dir(tmp_path)
    path = tmp_path / f"caps{suffix}"
    path.write_text(content)
    with pytest.raises(InputError, match=message) as info:
        read_caption_file(path, folder)
    assert str(info.value).startswith(str(path))


def test_caption_file_missing_paths(tmp_path):
    folder = _images_dir(tmp_path)
    with pytest.raises(InputError, match="captions file not found"):
        read_caption_file(tmp_path / "none.csv", folder)
    (tmp_path / "c.csv").write_text("image,caption\na.png,x\n")
    with pytest.raises(InputError, match="images folder not found"):
        read_caption_file(tmp_path / "c.csv", tmp_path / "no-dir")
