"""sentence-transformers models (``st:NAME_OR_DIR``): text models, and CLIP ones for images."""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image

from .._optional import require
from ..compute import resolve_device
from ..errors import ModgapError
from .base import Encoder, quiet_hf_loading

__all__ = ["SentenceTransformerEncoder"]


class SentenceTransformerEncoder(Encoder):
    """A ``sentence_transformers.SentenceTransformer``.

    Text models (MiniLM, MPNet, ...) embed texts only; :meth:`encode_images` then raises a
    clear error. Multimodal ones (e.g. ``clip-ViT-B-32``) embed images too.
    """

    def __init__(self, name_or_path: str, device: str | torch.device | None = None):
        SentenceTransformer = require(
            "sentence_transformers", "encoders", "the st: encoders"
        ).SentenceTransformer
        self.name = f"st:{name_or_path}"
        self.device = resolve_device(device)
        path = Path(name_or_path)
        if not path.is_dir() and (path.exists() or name_or_path.startswith((".", "/", "~"))):
            raise ModgapError(
                f"cannot load sentence-transformers model {name_or_path!r}: no model folder there"
            )
        try:
            with quiet_hf_loading():
                self.model = SentenceTransformer(name_or_path, device=str(self.device))
        except Exception as e:  # missing files, bad JSON, damaged weights: many exception types
            raise ModgapError(
                f"cannot load sentence-transformers model {name_or_path!r}: {type(e).__name__}: {e}"
            ) from None
        self.model.eval()
        first = self.model[0] if len(self.model) else None
        # sentence-transformers' CLIP module accepts PIL images in encode()
        self.supports_images = type(first).__name__ == "CLIPModel"

    @property
    def dim(self) -> int:
        return int(self.model.get_sentence_embedding_dimension())

    def _encode_image_batch(self, images: list[Image.Image]) -> torch.Tensor:
        if not self.supports_images:
            raise ModgapError(
                f"{self.name} is a text-only model and cannot embed images; use it for texts, "
                "or pick an image-text model (pocket, open_clip:..., hf:...)"
            )
        return self.model.encode(
            images, batch_size=len(images), convert_to_tensor=True, show_progress_bar=False
        )

    def _encode_text_batch(self, texts: list[str]) -> torch.Tensor:
        return self.model.encode(
            texts, batch_size=len(texts), convert_to_tensor=True, show_progress_bar=False
        )
