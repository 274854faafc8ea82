"""Image preprocessing pixel for pixel: open_clip's eval transform and Hugging Face processors.

open_clip: modgap's PIL/numpy transform against a plain transcription of torchvision's semantics
(``_preprocess_reference.py``) on real photos, and against open_clip's own transform where
torchvision imports. Hugging Face: the adapter's ``pixel_values`` and embeddings against
``CLIPImageProcessor`` (its PIL variant) built from the same config.
"""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import torch
from PIL import Image

from _preprocess_reference import OPENAI_MEAN, OPENAI_STD, open_clip_eval_reference, photos
from modgap.encoders import load_encoder, preprocess_images
from modgap.encoders._preprocess import (
    ImageTransform,
    center_crop_or_pad,
    resize_keep_ratio,
    resize_shortest_edge,
)
from modgap.encoders.openclip import open_clip_transform
from modgap.errors import ModgapError, ModgapNotice

pytestmark = pytest.mark.usefixtures("offline_hub")


@pytest.fixture(scope="module")
def images() -> dict[str, Image.Image]:
    return photos()


def _reference_batch(images, **cfg) -> torch.Tensor:
    return torch.stack([open_clip_eval_reference(im, **cfg) for im in images])


def _assert_same_pixels(actual: torch.Tensor, expected: torch.Tensor, names) -> None:
    assert actual.shape == expected.shape and actual.dtype == torch.float32
    for i, name in enumerate(names):
        np.testing.assert_array_equal(actual[i].numpy(), expected[i].numpy(), err_msg=name)


# ----------------------------------------------------- torchvision semantics, derived by hand --
def _column_ramp(width: int, height: int = 3) -> Image.Image:
    """An L image whose pixel value is its column index: a crop shows where it started."""
    return Image.fromarray(np.tile(np.arange(width, dtype=np.uint8), (height, 1)))


@pytest.mark.parametrize(("width", "left"), [(225, 0), (226, 1), (227, 2), (229, 2), (231, 4)])
def test_centre_crop_rounds_half_to_even(width, left):
    # torchvision: left = int(round((W - 224) / 2)): 0.5 -> 0, 1.5 -> 2, 2.5 -> 2, 3.5 -> 4
    out = np.asarray(center_crop_or_pad(_column_ramp(width), (3, 224)))
    assert out.shape == (3, 224)
    assert out[0, 0] == left and out[0, -1] == left + 223


@pytest.mark.parametrize(("width", "before", "after"), [(220, 2, 2), (221, 1, 2)])
def test_pad_puts_the_odd_pixel_after(width, before, after):
    out = np.asarray(center_crop_or_pad(_column_ramp(width), (3, 224), fill=255))
    assert (out[:, :before] == 255).all() and (out[:, 224 - after :] == 255).all()
    np.testing.assert_array_equal(out[0, before : 224 - after], np.arange(width))


def test_resize_sizes_follow_torchvision():
    # Resize(224): long side int(224 * 301 / 200) = int(337.12) = 337, truncated
    assert resize_shortest_edge(Image.new("RGB", (301, 200)), 224).size == (337, 224)
    assert resize_shortest_edge(Image.new("RGB", (200, 301)), 224).size == (224, 337)
    # 224 * 451 / 300 = 336.75: truncation gives 336 where rounding would give 337
    assert resize_shortest_edge(Image.new("RGB", (451, 300)), 224).size == (336, 224)
    # ResizeKeepRatio(longest=1): ratio 451/224, height round(300 / ratio) = round(149.0) = 149
    assert resize_keep_ratio(Image.new("RGB", (451, 300)), (224, 224), 1.0).size == (224, 149)
    im = Image.new("RGB", (224, 224))
    assert resize_shortest_edge(im, 224) is im  # already at size: not resampled


def test_geometry_runs_before_rgb_conversion(images):
    # PIL resizes palette images with nearest-neighbour: converting to RGB first would differ
    p = images["chelsea 451x300 P"]
    t = ImageTransform(size=64, mean=OPENAI_MEAN, std=OPENAI_STD)
    assert not torch.equal(t([p]), t([p.convert("RGB")]))
    _assert_same_pixels(t([p]), _reference_batch([p], size=64), ["P"])


# ------------------------------------------------------------------------------- open_clip --
OPEN_CLIP_CONFIGS = [
    {},  # the default: 224, shortest, bicubic, OpenAI mean/std
    {"interpolation": "bilinear"},
    {"interpolation": "random"},
    {"resize_mode": "longest"},
    {"resize_mode": "longest", "fill_color": 128, "interpolation": "bilinear"},
    {"resize_mode": "squash"},
    {"size": (224, 160)},  # shortest, non-square: ResizeKeepRatio then CenterCrop
    {"size": (64, 48), "interpolation": "bilinear"},  # ... which always resizes bicubic
    {"size": (160, 224), "resize_mode": "longest", "fill_color": 255},
    {"size": (96, 128), "resize_mode": "squash", "interpolation": "bilinear"},
    {"size": 64, "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)},
    {"size": 336, "mean": (0.48, 0.45, 0.4), "std": (0.27, 0.26, 0.28)},
]


def _cfg_id(cfg) -> str:
    return ",".join(f"{k}={v}" for k, v in cfg.items()) or "default"


def _reference_kwargs(cfg) -> dict:
    return {"mean": OPENAI_MEAN, "std": OPENAI_STD, **cfg}


@pytest.mark.parametrize("cfg", [*OPEN_CLIP_CONFIGS, {"interpolation": "nearest"}], ids=_cfg_id)
def test_open_clip_transform_matches_plain_reference(images, cfg):
    out = open_clip_transform(cfg)(list(images.values()))
    _assert_same_pixels(out, _reference_batch(images.values(), **_reference_kwargs(cfg)), images)


def _real_open_clip():
    """open_clip with real torchvision, or a skip that says why."""
    if importlib.util.find_spec("torchvision") is None:
        pytest.skip(
            "torchvision not installed (it is not a dependency; here it cannot be installed "
            "next to torch 2.13): open_clip's own transform cannot run; the plain-reference "
            "test checks the same configs"
        )
    try:
        import torchvision  # noqa: F401
    except Exception as e:  # a build for another torch fails at import with many error types
        pytest.skip(f"torchvision does not import ({type(e).__name__}: {e})")
    if importlib.util.find_spec("open_clip") is None:
        pytest.skip("open_clip_torch not installed")
    import open_clip

    return open_clip


@pytest.mark.parametrize("cfg", OPEN_CLIP_CONFIGS, ids=_cfg_id)
def test_open_clip_transform_matches_open_clip(images, cfg):
    open_clip = _real_open_clip()
    full = _reference_kwargs(cfg)
    theirs = open_clip.transform.image_transform(
        full.get("size", 224),
        is_train=False,
        mean=full["mean"],
        std=full["std"],
        resize_mode=full.get("resize_mode"),
        interpolation=full.get("interpolation"),
        fill_color=full.get("fill_color", 0),
    )
    expected = torch.stack([theirs(im) for im in images.values()])
    _assert_same_pixels(open_clip_transform(cfg)(list(images.values())), expected, images)


def test_open_clip_transform_defaults_and_errors():
    t = open_clip_transform({"size": 32, "mean": None, "std": (), "interpolation": None})
    assert t.size == (32, 32) and t.mean == OPENAI_MEAN and t.std == OPENAI_STD
    assert t.resize_mode == "shortest" and t.resample == Image.Resampling.BICUBIC
    assert open_clip_transform({"mean": 0.5}).mean == (0.5, 0.5, 0.5)
    with pytest.raises(ModgapError, match="unknown open_clip interpolation 'lanczos'"):
        open_clip_transform({"interpolation": "lanczos"})
    with pytest.raises(ModgapError, match="unknown resize_mode 'crop'"):
        open_clip_transform({"resize_mode": "crop"})
    with pytest.raises(ModgapError, match="mode 'RGBA' is not supported"):
        open_clip_transform({"mode": "RGBA"})
    with pytest.raises(ModgapError, match="std must not be 0"):
        open_clip_transform({"std": (0.5, 0.0, 0.5)})
    with pytest.raises(ModgapError, match="needs 1 or 3 values"):
        open_clip_transform({"mean": (0.5, 0.5)})


def test_preprocess_images_is_the_shortest_transform(images):
    ims = list(images.values())
    out = preprocess_images(ims, 48, mean=(0.1, 0.2, 0.3), std=(0.5, 0.6, 0.7))
    ref = _reference_batch(ims, size=48, mean=(0.1, 0.2, 0.3), std=(0.5, 0.6, 0.7))
    _assert_same_pixels(out, ref, images)


# ---------------------------------------------------------------------------- Hugging Face --
def _pil_clip_processor_class():
    """transformers' PIL/numpy CLIP processor: CLIPImageProcessorPil (5.x), else
    CLIPImageProcessor (4.x, where that name is the PIL one)."""
    transformers = pytest.importorskip("transformers")
    return getattr(transformers, "CLIPImageProcessorPil", None) or transformers.CLIPImageProcessor


def _reference_pixels(cfg: dict, images) -> torch.Tensor:
    kwargs = {k: v for k, v in cfg.items() if not k.endswith("_type")}
    out = _pil_clip_processor_class()(**kwargs)(images=list(images), return_tensors="np")
    return torch.from_numpy(np.asarray(out["pixel_values"], dtype=np.float32))


def _hf_folder(hf_clip_dir, folder, cfg: dict | None):
    """The tiny CLIP's files (linked) with another preprocessor config, or none."""
    folder.mkdir()
    for f in hf_clip_dir.iterdir():
        if f.name != "preprocessor_config.json":
            (folder / f.name).symlink_to(f)
    if cfg is not None:
        (folder / "preprocessor_config.json").write_text(json.dumps(cfg))
    return folder


HF_CONFIGS = {
    # openai/clip-vit-base-patch32's file: 224, bicubic short side, centre crop
    "openai-clip-224": {
        "crop_size": 224,
        "do_center_crop": True,
        "do_normalize": True,
        "do_resize": True,
        "feature_extractor_type": "CLIPFeatureExtractor",
        "image_mean": list(OPENAI_MEAN),
        "image_std": list(OPENAI_STD),
        "resample": 3,
        "size": 224,
    },
    "no-crop-height-width": {"do_center_crop": False, "size": {"height": 48, "width": 64}},
    "bilinear": {"resample": 2, "size": {"shortest_edge": 40}, "crop_size": 40},
    "rescale-mean-std": {
        "rescale_factor": 1 / 127.5,
        "image_mean": [0.9, 1.0, 1.1],
        "image_std": [0.7, 0.8, 0.9],
        "size": {"shortest_edge": 36},
        "crop_size": {"height": 32, "width": 32},
    },
    "no-normalize-rect-crop": {
        "do_normalize": False,
        "size": {"shortest_edge": 64},
        "crop_size": {"height": 48, "width": 64},
    },
    "no-resize": {"do_resize": False, "crop_size": 128},
}


@pytest.mark.parametrize("name", HF_CONFIGS)
def test_hf_pixels_match_clip_image_processor(hf_clip_dir, tmp_path, images, name):
    cfg = HF_CONFIGS[name]
    enc = load_encoder(f"hf:{_hf_folder(hf_clip_dir, tmp_path / name, cfg)}", device="cpu")
    _assert_same_pixels(
        enc.preprocess(list(images.values())), _reference_pixels(cfg, images.values()), images
    )


def test_hf_transparency_is_the_processors(hf_clip_dir, tmp_path, images):
    # transformers composites RGBA on white; a plain RGB conversion (black under the
    # transparent parts) would change the pixels: the adapter hands over the image as it is
    cfg = HF_CONFIGS["bilinear"]
    enc = load_encoder(f"hf:{_hf_folder(hf_clip_dir, tmp_path / 'm', cfg)}", device="cpu")
    cutout = images["astronaut cut-out 512x512 RGBA"]
    assert not torch.equal(
        _reference_pixels(cfg, [cutout]), _reference_pixels(cfg, [cutout.convert("RGB")])
    )
    _assert_same_pixels(enc.preprocess([cutout]), _reference_pixels(cfg, [cutout]), ["cut-out"])


# configs that fit the tiny model's 32x32 input
HF_32_CONFIGS = {
    "clip-defaults": {"size": {"shortest_edge": 32}, "crop_size": 32},
    "squash-no-crop": {
        "do_center_crop": False,
        "size": {"height": 32, "width": 32},
        "image_mean": [0.4, 0.4, 0.4],
        "image_std": [0.3, 0.3, 0.3],
    },
    "bilinear": {"resample": 2, "size": {"shortest_edge": 32}, "crop_size": 32},
    "rescale-mean-std": {
        "rescale_factor": 1 / 127.5,
        "image_mean": [1.0, 1.0, 1.0],
        "image_std": [1.0, 1.0, 1.0],
        "size": {"shortest_edge": 32},
        "crop_size": 32,
    },
}


def _unit(x) -> np.ndarray:
    x = getattr(x, "pooler_output", x).detach().float()
    return (x / x.norm(dim=-1, keepdim=True)).numpy()


@pytest.mark.parametrize("name", HF_32_CONFIGS)
def test_hf_embeddings_match_model_on_processor_pixels(hf_clip_dir, tmp_path, images, name):
    from transformers import CLIPModel

    cfg = HF_32_CONFIGS[name]
    folder = _hf_folder(hf_clip_dir, tmp_path / name, cfg)
    ims = list(images.values())
    got = load_encoder(f"hf:{folder}", device="cpu").encode_images(ims, batch_size=4)
    model = CLIPModel.from_pretrained(folder).eval()
    with torch.no_grad():
        ref = model.get_image_features(pixel_values=_reference_pixels(cfg, ims))
    np.testing.assert_allclose(got, _unit(ref), atol=1e-5)


def test_hf_without_processor_config_uses_clip_defaults(hf_clip_dir, tmp_path, images):
    folder = _hf_folder(hf_clip_dir, tmp_path / "bare", None)
    with pytest.warns(ModgapNotice, match="no image processor config"):
        enc = load_encoder(f"hf:{folder}", device="cpu")
    ims = list(images.values())
    cfg = {"size": {"shortest_edge": 32}, "crop_size": {"height": 32, "width": 32}}
    _assert_same_pixels(enc.preprocess(ims), _reference_pixels(cfg, ims), images)


def test_hf_damaged_processor_config(hf_clip_dir, tmp_path):
    folder = _hf_folder(hf_clip_dir, tmp_path / "bad", None)
    (folder / "preprocessor_config.json").write_text("{ not json")
    with pytest.raises(ModgapError, match="cannot load the image processor"):
        load_encoder(f"hf:{folder}", device="cpu")


def test_image_files_keep_their_mode(hf_clip_dir, tmp_path, images):
    # a path is read as stored (RGBA, palette, greyscale) and handed to the model's pipeline
    enc = load_encoder(f"hf:{hf_clip_dir}", device="cpu")
    names = ["astronaut cut-out 512x512 RGBA", "chelsea 451x300 P", "coins 384x303 L"]
    paths = []
    for i, name in enumerate(names):
        paths.append(tmp_path / f"{i}.png")
        images[name].save(paths[-1])
    from_files = enc.encode_images(paths)
    np.testing.assert_array_equal(from_files, enc.encode_images([images[n] for n in names]))
    # ... which differs from converting to RGB first, for the transparent cut-out
    rgb = enc.encode_images([images[names[0]].convert("RGB")])
    assert np.abs(from_files[0] - rgb[0]).max() > 1e-3
