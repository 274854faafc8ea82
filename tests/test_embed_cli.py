"""``modgap embed``: captioned image folder -> clip-retrieval folder, with any adapter."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from conftest import needs
from modgap.cli import main
from modgap.encoders import load_encoder
from modgap.io import read_embeddings

pytestmark = pytest.mark.usefixtures("offline_hub")


@pytest.fixture
def captioned(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "images"
    (folder / "sub").mkdir(parents=True)
    names = ["a.png", "b.jpg", "sub/c.png"]
    for name in names:
        arr = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
        Image.fromarray(arr).save(folder / name)
    csv = tmp_path / "captions.csv"
    csv.write_text(
        "image,caption\n"
        "a.png,a photo of the cat\n"
        "b.jpg,a red car\n"
        "sub/c.png,a blue shoe\n"
        "a.png,the cat on the bag\n"
    )
    return folder, csv, names


def test_embed_writes_clip_retrieval_folder(hf_clip_dir, captioned, tmp_path, capsys):
    import pyarrow.parquet as pq

    folder, csv, names = captioned
    out = tmp_path / "out"
    code = main(["embed", str(folder), str(csv), "--model", f"hf:{hf_clip_dir}", "--out", str(out),
                 "--no-progress", "--dtype", "float32"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert "wrote" in capsys.readouterr().out
    img = np.load(out / "img_emb" / "img_emb_0.npy")
    txt = np.load(out / "text_emb" / "text_emb_0.npy")
    assert img.shape == (3, 16) and txt.shape == (4, 16)
    assert img.dtype == txt.dtype == np.float32
    # the same vectors as the adapter gives directly
    enc = load_encoder(f"hf:{hf_clip_dir}", device="cpu")
    np.testing.assert_allclose(img, enc.encode_images([folder / n for n in names]), atol=1e-5)
    captions = ["a photo of the cat", "a red car", "a blue shoe", "the cat on the bag"]
    np.testing.assert_allclose(txt, enc.encode_texts(captions), atol=1e-5)
    meta = pq.read_table(next((out / "metadata").glob("*.parquet"))).to_pydict()
    assert meta["image_path"] == names
    emb = read_embeddings(out)
    np.testing.assert_array_equal(emb.text_to_image, [0, 1, 2, 0])
    assert list(emb.texts) == captions


def test_embed_writes_float16_by_default_as_clip_retrieval_does(hf_clip_dir, captioned, tmp_path):
    folder, csv, names = captioned
    out = tmp_path / "out"
    assert main(["embed", str(folder), str(csv), "-m", f"hf:{hf_clip_dir}", "-o", str(out)]) == 0
    img = np.load(out / "img_emb" / "img_emb_0.npy")
    txt = np.load(out / "text_emb" / "text_emb_0.npy")
    assert img.dtype == txt.dtype == np.float16
    # the unit float32 rows rounded to float16, nothing else
    enc = load_encoder(f"hf:{hf_clip_dir}", device="cpu")
    want = enc.encode_images([folder / n for n in names]).astype(np.float16)
    np.testing.assert_array_equal(img, want)
    # every reader takes the float16 rows as stored, within 1e-3 of unit
    emb = read_embeddings(out)
    np.testing.assert_allclose(
        np.linalg.norm(emb.image_emb.astype(np.float64), axis=1), 1, atol=1e-3
    )
    np.testing.assert_allclose(
        np.linalg.norm(emb.text_emb.astype(np.float64), axis=1), 1, atol=1e-3
    )
    from modgap.io import open_source

    src = open_source(str(out))
    np.testing.assert_array_equal(src.read_all("image"), emb.image_emb)


def test_embed_keeps_the_url_column_and_embedding_reader_reads_it(hf_clip_dir, captioned, tmp_path):
    """A caption file's url column is kept per image (its first row's), and the float16 folder
    reads in embedding-reader (what autofaiss reads) as clip-retrieval's own output does."""
    import pyarrow.parquet as pq

    folder, _, names = captioned
    csv = tmp_path / "urls.csv"
    csv.write_text(
        "image,caption,url\n"
        "a.png,a photo of the cat,http://x/a\n"
        "b.jpg,a red car,\n"
        "sub/c.png,a blue shoe,http://x/c\n"
        "a.png,the cat on the bag,http://x/other\n"
    )
    out = tmp_path / "out"
    assert main(["embed", str(folder), str(csv), "-m", f"hf:{hf_clip_dir}", "-o", str(out)]) == 0
    meta = pq.read_table(out / "metadata" / "metadata_0.parquet").to_pydict()
    assert meta["image_path"] == names
    assert meta["url"] == ["http://x/a", None, "http://x/c"]
    er = pytest.importorskip("embedding_reader", reason="embedding-reader is in the dev extra")
    for sub in ("img_emb", "text_emb"):
        reader = er.EmbeddingReader(str(out / sub), file_format="npy")
        assert reader.dimension == 16
        got = np.concatenate([b for b, _ in reader(batch_size=2, show_progress=False)])
        stored = np.load(out / sub / f"{sub}_0.npy")
        assert stored.dtype == np.float16
        np.testing.assert_array_equal(got, stored.astype(np.float32))
    reader = er.EmbeddingReader(
        str(out / "img_emb"),
        file_format="parquet_npy",
        metadata_folder=str(out / "metadata"),
        meta_columns=["image_path", "url"],
    )
    _, got_meta = next(reader(batch_size=3, show_progress=False))
    assert list(got_meta["image_path"]) == names
    assert list(got_meta["url"]) == ["http://x/a", None, "http://x/c"]


def test_embed_one_caption_per_image_has_caption_column(hf_clip_dir, captioned, tmp_path):
    import pyarrow.parquet as pq

    folder, _, names = captioned
    jsonl = tmp_path / "caps.jsonl"
    rows = [
        {"image": n, "caption": f"a photo of the {w}", "url": f"http://x/{w}"}
        for n, w in zip(names, "abc", strict=True)
    ]
    jsonl.write_text("\n".join(json.dumps(r) for r in rows))
    out = tmp_path / "out"
    assert main(["embed", str(folder), str(jsonl), "-m", f"hf:{hf_clip_dir}", "-o", str(out)]) == 0
    meta = pq.read_table(out / "metadata" / "metadata_0.parquet").to_pydict()
    assert meta["image_path"] == names
    assert meta["caption"] == [r["caption"] for r in rows]
    assert meta["url"] == [r["url"] for r in rows]  # a JSON lines url is kept too


def test_embed_rewrites_existing_folder_atomically(hf_clip_dir, captioned, tmp_path):
    folder, csv, _ = captioned
    out = tmp_path / "out"
    args = ["embed", str(folder), str(csv), "-m", f"hf:{hf_clip_dir}", "-o", str(out)]
    assert main(args) == 0
    first = np.load(out / "img_emb" / "img_emb_0.npy")
    assert main(args) == 0
    np.testing.assert_array_equal(np.load(out / "img_emb" / "img_emb_0.npy"), first)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("bad_model", "unknown model spec 'nonsense'"),
        pytest.param(
            "missing_model", "cannot load Hugging Face CLIP model", marks=needs("transformers")
        ),
        ("missing_image", "line 2: image 'zz.png' not found"),
        ("no_column", "no caption column"),
    ],
)
def test_embed_errors(captioned, tmp_path, capsys, setup, message):
    folder, csv, _ = captioned
    model = "hf:" + str(tmp_path / "no-model")
    if setup == "bad_model":
        model = "nonsense"
    elif setup == "missing_image":
        csv.write_text("image,caption\nzz.png,x\n")
    elif setup == "no_column":
        csv.write_text("image,words\na.png,x\n")
    out = tmp_path / "out"
    code = main(["embed", str(folder), str(csv), "--model", model, "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and err.startswith("error: ")
    assert not out.exists()


def test_metadata_columns_only_for_clip_retrieval_and_one_value_per_image(tmp_path):
    from modgap.embeddings import EmbeddingSet
    from modgap.errors import ModgapError
    from modgap.io import write_embeddings

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(2, 3, 4))
    emb = EmbeddingSet(
        x / np.linalg.norm(x, axis=1, keepdims=True), y / np.linalg.norm(y, axis=1, keepdims=True)
    )
    with pytest.raises(ModgapError, match="only to a clip-retrieval folder"):
        write_embeddings(emb, tmp_path / "x.npz", columns={"url": ["a", "b", "c"]})
    with pytest.raises(ModgapError, match="has 2 rows, not 3"):
        write_embeddings(emb, tmp_path / "out", columns={"url": ["a", "b"]})
    # values arrow cannot type together are kept as JSON text
    write_embeddings(emb, tmp_path / "out", columns={"tags": [["a"], {"b": 1}, None]})
    import pyarrow.parquet as pq

    meta = pq.read_table(tmp_path / "out" / "metadata" / "metadata_0.parquet").to_pydict()
    assert meta["tags"] == ['["a"]', '{"b": 1}', None]
