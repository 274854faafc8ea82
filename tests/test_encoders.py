"""Encoder adapters on tiny randomly initialised models (no downloads), and the pocket model."""

from __future__ import annotations

import enum
import importlib.util
import json
import sys
import types

import numpy as np
import pytest
import torch
from PIL import Image

from modgap.encoders import load_encoder, preprocess_images
from modgap.encoders.base import load_image
from modgap.errors import InputError, ModgapError

pytestmark = pytest.mark.usefixtures("offline_hub")


def _images(n: int, size: int = 32, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(n)
    ]


def _normalised(x: torch.Tensor) -> np.ndarray:
    x = x.detach().float()
    return (x / x.norm(dim=-1, keepdim=True)).numpy()


def _reference_pixels(images, mean, std) -> torch.Tensor:
    """Plain preprocessing for images already at the model size: /255, then (x - mean) / std."""
    arr = np.stack([np.asarray(im, dtype=np.float64) / 255.0 for im in images])
    arr = (arr - np.asarray(mean)) / np.asarray(std)
    return torch.tensor(arr, dtype=torch.float32).permute(0, 3, 1, 2)


# ---------------------------------------------------------------------------- preprocessing --
def test_preprocess_resizes_short_side_and_centre_crops():
    # a 40x20 image whose left/right quarters are black and centre white: after resizing the
    # short side to 10 and centre-cropping 10x10, only white remains
    arr = np.zeros((20, 40, 3), dtype=np.uint8)
    arr[:, 10:30] = 255
    x = preprocess_images(
        [Image.fromarray(arr)], 10, mean=(0, 0, 0), std=(1, 1, 1), resample=Image.Resampling.NEAREST
    )
    assert x.shape == (1, 3, 10, 10)
    assert x.dtype == torch.float32
    np.testing.assert_allclose(x.numpy(), 1.0, atol=1e-6)


def test_preprocess_matches_plain_normalisation():
    ims = _images(2, size=16)
    x = preprocess_images(ims, 16, mean=(0.1, 0.2, 0.3), std=(0.5, 0.6, 0.7))
    ref = _reference_pixels(ims, (0.1, 0.2, 0.3), (0.5, 0.6, 0.7))
    np.testing.assert_allclose(x.numpy(), ref.numpy(), atol=1e-6)


def test_load_image_errors(tmp_path):
    with pytest.raises(InputError, match="image file not found"):
        load_image(tmp_path / "missing.png")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(InputError, match=r"bad\.png: cannot read image"):
        load_image(bad)
    with pytest.raises(ModgapError, match="not numpy arrays"):
        load_image(np.zeros((4, 4, 3)))


def test_unknown_spec_and_device():
    with pytest.raises(ModgapError, match="unknown model spec 'foo'"):
        load_encoder("foo")
    with pytest.raises(ModgapError, match="unknown model family 'xyz'"):
        load_encoder("xyz:model")
    from modgap.compute import resolve_device

    with pytest.raises(ModgapError, match="unknown device"):
        resolve_device("not-a-device")


# ------------------------------------------------------------------------ Hugging Face CLIP --


def test_hf_clip_matches_direct_model(hf_clip_dir):
    from transformers import AutoTokenizer, CLIPModel

    enc = load_encoder(f"hf:{hf_clip_dir}", device="cpu")
    ims = _images(5)
    texts = ["a photo of the cat", "red car", "a blue shoe on the bag"]
    img = enc.encode_images(ims, batch_size=2)
    txt = enc.encode_texts(texts, batch_size=2)
    assert img.shape == (5, 16) and txt.shape == (3, 16)
    assert img.dtype == np.float32 and txt.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(img, axis=1), 1, atol=1e-5)

    model = CLIPModel.from_pretrained(hf_clip_dir).eval()
    tok = AutoTokenizer.from_pretrained(hf_clip_dir)
    with torch.no_grad():
        ref_img = model.get_image_features(
            pixel_values=_reference_pixels(ims, [0.4] * 3, [0.3] * 3)
        )
        t = tok(texts, padding=True, return_tensors="pt")
        ref_txt = model.get_text_features(
            input_ids=t["input_ids"], attention_mask=t["attention_mask"]
        )
    ref_img = getattr(ref_img, "pooler_output", ref_img)
    ref_txt = getattr(ref_txt, "pooler_output", ref_txt)
    np.testing.assert_allclose(img, _normalised(ref_img), atol=1e-5)
    np.testing.assert_allclose(txt, _normalised(ref_txt), atol=1e-5)


def test_hf_image_paths_equal_pil(hf_clip_dir, tmp_path):
    enc = load_encoder(f"hf:{hf_clip_dir}", device="cpu")
    ims = _images(3, seed=1)
    paths = []
    for i, im in enumerate(ims):
        paths.append(tmp_path / f"{i}.png")
        im.save(paths[-1])
    np.testing.assert_allclose(enc.encode_images(paths), enc.encode_images(ims), atol=1e-6)


def test_hf_missing_and_corrupt_checkpoint(hf_clip_dir, tmp_path):
    with pytest.raises(ModgapError, match="cannot load Hugging Face CLIP model"):
        load_encoder(f"hf:{tmp_path / 'nothing-here'}")
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in hf_clip_dir.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    weights = next(broken.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:200])
    with pytest.raises(ModgapError, match="cannot load Hugging Face CLIP model"):
        load_encoder(f"hf:{broken}")


def test_empty_inputs_are_errors(hf_clip_dir):
    enc = load_encoder(f"hf:{hf_clip_dir}", device="cpu")
    with pytest.raises(ModgapError, match="no images"):
        enc.encode_images([])
    with pytest.raises(ModgapError, match="no texts"):
        enc.encode_texts([])
    with pytest.raises(ModgapError, match="list of strings"):
        enc.encode_texts("one string")
    with pytest.raises(ModgapError, match="batch_size must be >= 1"):
        enc.encode_texts(["a"], batch_size=0)


# --------------------------------------------------------------------- sentence-transformers --


def test_sentence_transformers_texts(st_dir):
    from sentence_transformers import SentenceTransformer

    enc = load_encoder(f"st:{st_dir}", device="cpu")
    texts = ["the cat on the car", "a red shoe", "blue bag with a dog"]
    out = enc.encode_texts(texts, batch_size=2)
    assert out.shape == (3, 24) and out.dtype == np.float32
    ref = SentenceTransformer(str(st_dir), device="cpu").encode(texts, convert_to_numpy=True)
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    np.testing.assert_allclose(out, ref, atol=1e-5)


def test_sentence_transformers_text_model_refuses_images(st_dir):
    enc = load_encoder(f"st:{st_dir}", device="cpu")
    with pytest.raises(ModgapError, match="text-only model and cannot embed images"):
        enc.encode_images(_images(1))


def test_sentence_transformers_missing_and_corrupt(st_dir, tmp_path):
    with pytest.raises(ModgapError, match="cannot load sentence-transformers model"):
        load_encoder(f"st:{tmp_path / 'absent-model'}")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "modules.json").write_text("{ this is not json")
    with pytest.raises(ModgapError, match="cannot load sentence-transformers model"):
        load_encoder(f"st:{broken}")


# --------------------------------------------------------------------------------- open_clip --
TINY_OPEN_CLIP = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def _torchvision_stand_in() -> dict[str, types.ModuleType]:
    """Just enough of torchvision's names for ``import open_clip`` (its transforms are not used:
    modgap preprocesses with PIL). Any use of a stand-in class fails loudly."""

    def unusable(name):
        def fail(*args, **kwargs):
            raise AssertionError(f"torchvision stand-in {name} used")

        return type(name, (), {"__init__": fail})

    tv = types.ModuleType("torchvision")
    transforms = types.ModuleType("torchvision.transforms")
    functional = types.ModuleType("torchvision.transforms.functional")
    ops = types.ModuleType("torchvision.ops")
    misc = types.ModuleType("torchvision.ops.misc")
    for name in (
        "Normalize",
        "Compose",
        "RandomResizedCrop",
        "ToTensor",
        "Resize",
        "CenterCrop",
        "ColorJitter",
        "Grayscale",
    ):
        setattr(transforms, name, unusable(name))
    # used as default argument values when open_clip.transform is imported
    transforms.InterpolationMode = enum.Enum(
        "InterpolationMode", {"NEAREST": "nearest", "BILINEAR": "bilinear", "BICUBIC": "bicubic"}
    )
    misc.FrozenBatchNorm2d = unusable("FrozenBatchNorm2d")
    tv.transforms, transforms.functional, tv.ops, ops.misc = transforms, functional, ops, misc
    return {
        "torchvision": tv,
        "torchvision.transforms": transforms,
        "torchvision.transforms.functional": functional,
        "torchvision.ops": ops,
        "torchvision.ops.misc": misc,
    }


@pytest.fixture
def open_clip_module(monkeypatch):
    """open_clip imported for this test only; a torchvision stand-in if torchvision is absent."""
    if importlib.util.find_spec("open_clip") is None:
        pytest.skip("open_clip_torch not installed (pip install --no-deps open_clip_torch ftfy)")
    if importlib.util.find_spec("ftfy") is None:
        pytest.skip("open_clip's tokenizer needs ftfy (pip install ftfy)")
    if importlib.util.find_spec("torchvision") is None:
        # transformers (imported by open_clip) probes for torchvision with find_spec, which
        # fails on a stand-in: let it probe the real environment first (the answer is cached)
        import transformers

        transformers.utils.import_utils.is_torchvision_available()
        for name, module in _torchvision_stand_in().items():
            monkeypatch.setitem(sys.modules, name, module)
    before = {k for k in sys.modules if k.startswith("open_clip")}
    import open_clip

    yield open_clip
    # drop the modules imported against the stand-in so nothing else sees them
    for name in [k for k in sys.modules if k.startswith("open_clip") and k not in before]:
        del sys.modules[name]


def _tiny_open_clip_dir(open_clip, folder, preprocess: dict | None = None):
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = open_clip.model.CLIP(**TINY_OPEN_CLIP)
    folder.mkdir(parents=True, exist_ok=True)
    preprocess = preprocess or {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "size": 32}
    (folder / "open_clip_config.json").write_text(
        json.dumps({"model_cfg": TINY_OPEN_CLIP, "preprocess_cfg": preprocess})
    )
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()},
        str(folder / "open_clip_model.safetensors"),
    )
    return model.eval()


def test_open_clip_local_folder_matches_direct_model(open_clip_module, tmp_path):
    model = _tiny_open_clip_dir(open_clip_module, tmp_path / "tiny")
    enc = load_encoder(f"open_clip:{tmp_path / 'tiny'}", device="cpu")
    ims, texts = _images(3), ["a photo of a cat", "a red car"]
    img, txt = enc.encode_images(ims), enc.encode_texts(texts)
    assert img.shape == (3, 16) and txt.shape == (2, 16)
    tokenizer = open_clip_module.SimpleTokenizer(context_length=16)
    with torch.no_grad():
        ref_img = model.encode_image(_reference_pixels(ims, [0.5] * 3, [0.25] * 3))
        ref_txt = model.encode_text(tokenizer(texts))
    np.testing.assert_allclose(img, _normalised(ref_img), atol=1e-5)
    np.testing.assert_allclose(txt, _normalised(ref_txt), atol=1e-5)


@pytest.mark.parametrize(
    "preprocess",
    [
        {"size": 32, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]},
        {"size": 32, "resize_mode": "longest", "fill_color": 200, "interpolation": "bilinear"},
        {"size": 32, "resize_mode": "squash", "mean": [0.4, 0.45, 0.5], "std": [0.3, 0.3, 0.3]},
    ],
    ids=["shortest", "longest-fill-bilinear", "squash"],
)
def test_open_clip_uses_the_model_preprocess_cfg(open_clip_module, tmp_path, preprocess):
    """Real photos (any mode) through the folder's preprocess_cfg, against the plain reference
    of open_clip's eval transform; the embeddings against the model on those pixels."""
    from _preprocess_reference import open_clip_eval_reference, photos

    model = _tiny_open_clip_dir(open_clip_module, tmp_path / "tiny", preprocess)
    enc = load_encoder(f"open_clip:{tmp_path / 'tiny'}", device="cpu")
    ims = list(photos().values())
    ref = torch.stack([open_clip_eval_reference(im, **preprocess) for im in ims])
    np.testing.assert_array_equal(enc.preprocess(ims).numpy(), ref.numpy())
    with torch.no_grad():
        expected = _normalised(model.encode_image(ref))
    np.testing.assert_allclose(enc.encode_images(ims, batch_size=4), expected, atol=1e-5)


def test_open_clip_corrupt_and_missing_checkpoint(open_clip_module, tmp_path):
    _tiny_open_clip_dir(open_clip_module, tmp_path / "tiny")
    weights = tmp_path / "tiny" / "open_clip_model.safetensors"
    weights.write_bytes(b"\x00" * 64)
    with pytest.raises(ModgapError, match="cannot load open_clip model"):
        load_encoder(f"open_clip:{tmp_path / 'tiny'}", device="cpu")
    with pytest.raises(ModgapError, match="open_clip checkpoint not found"):
        load_encoder(f"open_clip:ViT-B-32/{tmp_path / 'absent.pt'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModgapError, match=r"no open_clip_config\.json"):
        load_encoder(f"open_clip:{tmp_path / 'empty'}")


def test_open_clip_spec_parsing(tmp_path):
    from modgap.encoders.openclip import parse_open_clip_spec

    assert parse_open_clip_spec("ViT-B-32/laion2b_s34b_b79k") == ("ViT-B-32", "laion2b_s34b_b79k")
    assert parse_open_clip_spec("ViT-B-32/dir/ckpt.pt") == ("ViT-B-32", "dir/ckpt.pt")
    assert parse_open_clip_spec("ViT-B-32") == ("ViT-B-32", None)
    assert parse_open_clip_spec("hf-hub:org/repo") == ("hf-hub:org/repo", None)
    assert parse_open_clip_spec(str(tmp_path)) == (f"local-dir:{tmp_path}", None)


# ------------------------------------------------------------------------------------ pocket --
def _fashion(n: int):
    from modgap.datasets.fashion_mnist import DEFAULT_ROOT, load_fashion_mnist

    if not (DEFAULT_ROOT / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip("Debian package dataset-fashion-mnist not installed")
    return load_fashion_mnist("test", limit=n)


@pytest.fixture(scope="module")
def pocket():
    from conftest import POCKET_MODULES, require

    require(*POCKET_MODULES)
    from modgap.encoders.pocket import PocketEncoder

    return PocketEncoder(device="cpu")


def test_shipped_heads_load():
    from modgap.encoders.pocket import load_heads

    heads, config = load_heads()
    assert config["embed_dim"] == heads.image.net[-1].out_features
    assert heads.image.net[0].in_features == config["image_dim"] == 1280
    assert heads.text.net[0].in_features == config["text_dim"] == 384
    assert 0 < heads.logit_scale.item() <= np.log(100) + 1e-6
    assert config["metrics"]["zero_shot_acc1_test"] > 0.5


def test_pocket_small_sample(pocket, tmp_path, monkeypatch):
    """16 real images: shapes, unit norms, batch path == cached-features path, cache reuse."""
    from modgap.encoders.pocket import fashion_to_pil

    monkeypatch.setenv("MODGAP_CACHE", str(tmp_path / "cache"))
    images, _ = _fashion(16)
    direct = pocket.encode_images(fashion_to_pil(images), batch_size=5)
    assert direct.shape == (16, pocket.dim) and direct.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(direct, axis=1), 1, atol=1e-5)

    feats = pocket.towers.image_features(images, batch_size=7, cache_key="sixteen")
    assert feats.shape == (16, 1280)
    np.testing.assert_allclose(pocket.project_images(feats), direct, atol=1e-4)
    cached = list((tmp_path / "cache").glob("pocket-image-*.npy"))
    assert len(cached) == 1
    np.testing.assert_array_equal(np.load(cached[0]), feats)
    # a damaged cache file is recomputed, not trusted
    cached[0].write_bytes(b"garbage")
    again = pocket.towers.image_features(images, cache_key="sixteen")
    # another batch size may take another convolution kernel: equal to float32 round-off
    np.testing.assert_allclose(again, feats, rtol=1e-4, atol=1e-5)

    texts = ["a photo of a sneaker.", "a pair of dark trousers for sale."]
    t = pocket.encode_texts(texts)
    assert t.shape == (2, pocket.dim)
    np.testing.assert_allclose(np.linalg.norm(t, axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(
        pocket.project_texts(pocket.towers.text_features(texts)), t, atol=1e-5
    )


def test_pocket_zero_shot_beats_chance(pocket):
    """The shipped heads classify 100 held-out test images far above chance (10%)."""
    from modgap.datasets.captions import class_prompts

    images, labels = _fashion(100)
    x = pocket.project_images(pocket.towers.image_features(images, progress=False))
    prompts = class_prompts()
    t = pocket.encode_texts([p for ps in prompts for p in ps]).reshape(len(prompts), -1, pocket.dim)
    proto = t.mean(1)
    acc = float(((x @ proto.T).argmax(1) == labels).mean())
    assert acc > 0.5


def test_pocket_heads_missing_or_corrupt(tmp_path):
    from modgap.encoders.pocket import CONFIG_FILE, HEADS_FILE, load_heads

    with pytest.raises(ModgapError, match="pocket model heads not found"):
        load_heads(tmp_path)
    (tmp_path / HEADS_FILE).write_bytes(b"\x00" * 32)
    (tmp_path / CONFIG_FILE).write_text(
        json.dumps({"image_dim": 1280, "text_dim": 384, "embed_dim": 8})
    )
    with pytest.raises(ModgapError, match="cannot load pocket model heads"):
        load_heads(tmp_path)
    with pytest.raises(ModgapError, match="pocket model heads not found"):
        load_encoder(f"pocket:{tmp_path / 'elsewhere'}")
