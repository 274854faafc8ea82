"""open_clip models (``open_clip:ARCH/PRETRAINED``, a checkpoint file, or a local model folder).

Spec forms, after the ``open_clip:`` prefix:

* ``ViT-B-32/laion2b_s34b_b79k`` -- a built-in architecture and a pretrained tag (downloaded by
  open_clip on first use);
* ``ViT-B-32/path/to/checkpoint.safetensors`` -- a built-in architecture and a local checkpoint
  (``.safetensors``, or a torch file read with ``weights_only=True``);
* ``path/to/folder`` -- a folder with ``open_clip_config.json`` (``model_cfg``, optional
  ``preprocess_cfg``) and ``open_clip_model.safetensors``, the layout open_clip itself saves;
* ``hf-hub:org/repo`` -- passed through to open_clip.

Images go through open_clip's own evaluation transform, reproduced with PIL and numpy from the
model's preprocessing configuration (``open_clip.get_model_preprocess_cfg``: size, resize_mode,
interpolation, mean, std, fill_color), so torchvision is not used; see
:func:`open_clip_transform` and :mod:`modgap.encoders._preprocess`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from .._optional import require
from ..compute import resolve_device
from ..errors import ModgapError
from ._preprocess import RESAMPLE, ImageTransform
from .base import Encoder

__all__ = ["OpenClipEncoder", "open_clip_transform", "parse_open_clip_spec"]

# open_clip's defaults (``open_clip.transform.PreprocessCfg``, OpenAI's pixel statistics)
_DEFAULT_CFG: dict[str, Any] = {
    "size": 224,
    "mean": (0.48145466, 0.4578275, 0.40821073),
    "std": (0.26862954, 0.26130258, 0.27577711),
    "interpolation": "bicubic",
    "resize_mode": "shortest",
    "fill_color": 0,
}


def open_clip_transform(cfg: Mapping[str, Any]) -> ImageTransform:
    """open_clip's evaluation transform for a model's ``preprocess_cfg``, without torchvision.

    Follows ``open_clip.transform.image_transform(..., is_train=False)`` (open_clip 3.3.0):
    missing or empty entries take open_clip's defaults; ``interpolation`` ``"random"`` means
    bicubic at evaluation. Two of its details are kept on purpose: ``shortest`` with a
    non-square size resizes with ``ResizeKeepRatio``'s default filter (bicubic) whatever the
    interpolation, and the image is converted to RGB only after resizing and cropping.
    ``"nearest"`` is accepted too (open_clip itself refuses it).

    Parameters
    ----------
    cfg : mapping
        ``size`` (int or (h, w)), ``mode`` ("RGB"), ``mean``, ``std``, ``interpolation``
        ("bicubic", "bilinear", "random", "nearest"), ``resize_mode`` ("shortest", "longest",
        "squash"), ``fill_color`` (int).
    """
    merged = dict(_DEFAULT_CFG)
    merged.update({k: v for k, v in cfg.items() if k in _DEFAULT_CFG and v is not None})
    for key in ("mean", "std", "interpolation", "resize_mode"):
        # image_transform's ``value or default``: an empty value means the default
        if not _given(merged[key]):
            merged[key] = _DEFAULT_CFG[key]
    mode = cfg.get("mode", "RGB") or "RGB"
    if mode != "RGB":
        raise ModgapError(f"open_clip preprocess mode {mode!r} is not supported (only 'RGB')")
    interpolation = str(merged["interpolation"])
    if interpolation == "random":
        interpolation = "bicubic"
    if interpolation not in RESAMPLE:
        raise ModgapError(
            f"unknown open_clip interpolation {interpolation!r} (known: bicubic, bilinear, "
            "nearest, random)"
        )
    size = merged["size"]
    square = isinstance(size, int) or len(size) == 1 or size[0] == size[1]
    if merged["resize_mode"] == "shortest" and not square:
        interpolation = "bicubic"
    return ImageTransform(
        size=size,
        resize_mode=str(merged["resize_mode"]),
        resample=RESAMPLE[interpolation],
        mean=merged["mean"],
        std=merged["std"],
        fill_color=int(merged["fill_color"]),
    )


def parse_open_clip_spec(spec: str) -> tuple[str, str | None]:
    """``ARCH/PRETRAINED`` -> (model_name, pretrained) in open_clip's terms."""
    if not spec:
        raise ModgapError("empty open_clip spec; expected open_clip:ARCH/PRETRAINED")
    if spec.startswith(("hf-hub:", "local-dir:")):
        return spec, None
    if Path(spec).is_dir():
        return f"local-dir:{spec}", None
    arch, _, pretrained = spec.partition("/")
    return arch, (pretrained or None)


def _import_open_clip():
    return require("open_clip", "openclip", "an open_clip: encoder", "open_clip_torch")


def _given(value: Any) -> bool:
    try:
        return len(value) > 0
    except TypeError:  # a number
        return bool(value)


class OpenClipEncoder(Encoder):
    """An open_clip CLIP model with its tokenizer and its own evaluation preprocessing.

    Parameters
    ----------
    spec : str
        See the module docstring.
    device : str, optional
    """

    # open_clip's transform resizes and crops in the image's own mode, then converts to RGB
    image_mode = None

    def __init__(self, spec: str, device: str | torch.device | None = None):
        open_clip = _import_open_clip()
        self.name = f"open_clip:{spec}"
        self.device = resolve_device(device)
        model_name, pretrained = parse_open_clip_spec(spec)
        if pretrained is not None and ("/" in pretrained or "." in Path(pretrained).name):
            if not Path(pretrained).is_file():
                raise ModgapError(f"open_clip checkpoint not found: {pretrained}")
        if model_name.startswith("local-dir:"):
            folder = Path(model_name.removeprefix("local-dir:"))
            if not (folder / "open_clip_config.json").is_file():
                raise ModgapError(
                    f"{folder} has no open_clip_config.json: not an open_clip model folder"
                )
        try:
            self.model = open_clip.create_model(
                model_name,
                pretrained=pretrained,
                device=self.device,
                weights_only=True,
                require_pretrained=pretrained is not None or model_name.startswith("local-dir:"),
            )
            self.tokenizer = open_clip.get_tokenizer(model_name)
        except (
            Exception
        ) as e:  # open_clip raises RuntimeError/ValueError/OSError/... for bad models
            raise ModgapError(
                f"cannot load open_clip model {spec!r}: {type(e).__name__}: {e}"
            ) from None
        self.model.eval().requires_grad_(False)
        self.transform = open_clip_transform(open_clip.get_model_preprocess_cfg(self.model))

    def preprocess(self, images: list[Image.Image]) -> torch.Tensor:
        """The model's input for PIL images (any mode): float32 (n, 3, height, width)."""
        return self.transform(images)

    def _encode_image_batch(self, images: list[Image.Image]) -> torch.Tensor:
        return self.model.encode_image(self.preprocess(images).to(self.device))

    def _encode_text_batch(self, texts: list[str]) -> torch.Tensor:
        return self.model.encode_text(self.tokenizer(texts).to(self.device))
