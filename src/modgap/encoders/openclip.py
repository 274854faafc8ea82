"""open_clip models (``open_clip:ARCH/PRETRAINED``, a checkpoint file, or a local model folder).

Spec forms, after the ``open_clip:`` prefix:

* ``ViT-B-32/laion2b_s34b_b79k`` -- a built-in architecture and a pretrained tag (downloaded by
  open_clip on first use);
* ``ViT-B-32/path/to/checkpoint.safetensors`` -- a built-in architecture and a local checkpoint
  (``.safetensors``, or a torch file read with ``weights_only=True``);
* ``path/to/folder`` -- a folder with ``open_clip_config.json`` (``model_cfg``, optional
  ``preprocess_cfg``) and ``open_clip_model.safetensors``, the layout open_clip itself saves;
* ``hf-hub:org/repo`` -- passed through to open_clip.

Images are preprocessed with modgap's PIL/numpy recipe using the model's own preprocessing
configuration (size, mean, std), so torchvision transforms are not used.
"""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image

from ..compute import resolve_device
from ..errors import ModgapError
from .base import Encoder, preprocess_images

__all__ = ["OpenClipEncoder", "parse_open_clip_spec"]

_RESAMPLE = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
}


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
    try:
        import open_clip
    except ImportError as e:
        raise ModgapError(
            f"open_clip: encoders need the open_clip_torch package ({e}); "
            "pip install 'modgap[openclip]'"
        ) from None
    return open_clip


class OpenClipEncoder(Encoder):
    """An open_clip CLIP model with its tokenizer.

    Parameters
    ----------
    spec : str
        See the module docstring.
    device : str, optional
    """

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
        cfg = open_clip.get_model_preprocess_cfg(self.model)
        size = cfg.get("size", 224)
        self.image_size = int(size if isinstance(size, int) else size[0])
        self.mean = tuple(cfg.get("mean", (0.48145466, 0.4578275, 0.40821073)))
        self.std = tuple(cfg.get("std", (0.26862954, 0.26130258, 0.27577711)))
        self.resample = _RESAMPLE.get(cfg.get("interpolation", "bicubic"), Image.Resampling.BICUBIC)

    def _encode_image_batch(self, images: list[Image.Image]) -> torch.Tensor:
        pixels = preprocess_images(images, self.image_size, self.mean, self.std, self.resample)
        return self.model.encode_image(pixels.to(self.device))

    def _encode_text_batch(self, texts: list[str]) -> torch.Tensor:
        return self.model.encode_text(self.tokenizer(texts).to(self.device))
