"""Hugging Face transformers CLIP models (``hf:openai/clip-vit-base-patch32`` or a local folder)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from PIL import Image

from ..compute import resolve_device
from ..errors import ModgapError
from .base import Encoder, preprocess_images, quiet_hf_loading

__all__ = ["HFClipEncoder"]

# OpenAI CLIP's pixel statistics (the CLIPImageProcessor defaults)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _features(output) -> torch.Tensor:
    """transformers 5 may return a model output instead of a tensor: take the pooled features."""
    if isinstance(output, torch.Tensor):
        return output
    for name in ("image_embeds", "text_embeds", "pooler_output"):
        value = getattr(output, name, None)
        if isinstance(value, torch.Tensor):
            return value
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise ModgapError(f"cannot find features in model output of type {type(output).__name__}")


class HFClipEncoder(Encoder):
    """A ``transformers`` CLIP model with its tokenizer; images preprocessed with PIL/numpy.

    Parameters
    ----------
    name_or_path : str
        Hub model id or a local folder saved with ``save_pretrained``.
    device : str, optional
    local_files_only : bool
        Never reach the network (also implied by ``HF_HUB_OFFLINE=1``).
    """

    def __init__(
        self,
        name_or_path: str,
        device: str | torch.device | None = None,
        local_files_only: bool | None = None,
    ):
        try:
            from transformers import AutoTokenizer, CLIPModel
        except ImportError:
            raise ModgapError(
                "hf: encoders need transformers: pip install 'modgap[encoders]'"
            ) from None
        self.name = f"hf:{name_or_path}"
        self.device = resolve_device(device)
        if local_files_only is None:
            local_files_only = os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0")
        local = Path(name_or_path).is_dir()
        if not local and (Path(name_or_path).exists() or name_or_path.startswith((".", "/"))):
            raise ModgapError(
                f"cannot load Hugging Face CLIP model {name_or_path!r}: no model folder there"
            )
        try:
            with quiet_hf_loading():
                self.model = CLIPModel.from_pretrained(
                    name_or_path, local_files_only=local_files_only
                )
            self.tokenizer = AutoTokenizer.from_pretrained(
                name_or_path, local_files_only=local_files_only
            )
        except Exception as e:  # transformers raises many types for a missing or damaged model
            raise ModgapError(
                f"cannot load Hugging Face CLIP model {name_or_path!r}: {type(e).__name__}: {e}"
            ) from None
        self.model.eval().requires_grad_(False).to(self.device)
        vision = self.model.config.vision_config
        self.image_size = int(vision.image_size)
        self.mean, self.std = CLIP_MEAN, CLIP_STD
        if local:
            self._read_preprocessor(Path(name_or_path) / "preprocessor_config.json")
        self.max_length = int(
            min(
                self.model.config.text_config.max_position_embeddings,
                self.tokenizer.model_max_length,
            )
        )

    def _read_preprocessor(self, path: Path) -> None:
        if not path.is_file():
            return
        try:
            cfg = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise ModgapError(f"cannot read {path}: {e}") from None
        self.mean = tuple(cfg.get("image_mean", self.mean))
        self.std = tuple(cfg.get("image_std", self.std))
        crop = cfg.get("crop_size", self.image_size)
        self.image_size = int(crop["height"] if isinstance(crop, dict) else crop)

    @property
    def dim(self) -> int:
        return int(self.model.config.projection_dim)

    def _encode_image_batch(self, images: list[Image.Image]) -> torch.Tensor:
        pixels = preprocess_images(images, self.image_size, self.mean, self.std).to(self.device)
        return _features(self.model.get_image_features(pixel_values=pixels))

    def _encode_text_batch(self, texts: list[str]) -> torch.Tensor:
        tokens = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        ).to(self.device)
        return _features(
            self.model.get_text_features(
                input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]
            )
        )
