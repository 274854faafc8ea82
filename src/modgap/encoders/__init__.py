"""Image-text encoders behind one interface, and :func:`load_encoder` to pick one by spec.

Specs: ``pocket`` (the bundled offline model), ``open_clip:ARCH/PRETRAINED`` (or a checkpoint
path / model folder), ``hf:NAME_OR_DIR`` (transformers CLIP), ``st:NAME_OR_DIR``
(sentence-transformers). Every encoder has ``encode_images(images, batch_size=...)`` and
``encode_texts(texts, batch_size=...)`` returning L2-normalised float32 numpy arrays.
"""

from __future__ import annotations

import torch

from ..errors import ModgapError
from .base import Encoder, load_image, preprocess_images
from .pocket import PocketEncoder

__all__ = [
    "ENCODER_FAMILIES",
    "Encoder",
    "load_encoder",
    "load_image",
    "preprocess_images",
]

ENCODER_FAMILIES = ("pocket", "open_clip", "hf", "st")


def load_encoder(spec: str, device: str | torch.device | None = None) -> Encoder:
    """Build the encoder named by ``spec``.

    Parameters
    ----------
    spec : str
        ``pocket``, ``open_clip:ARCH/PRETRAINED``, ``hf:NAME_OR_DIR`` or ``st:NAME_OR_DIR``.
    device : str, optional
        Torch device; default CUDA when available, else CPU.
    """
    spec = str(spec).strip()
    family, sep, rest = spec.partition(":")
    if spec == "pocket" or (family == "pocket" and not rest):
        return PocketEncoder(device=device)
    if family == "pocket":
        return PocketEncoder(device=device, heads=rest)
    if not sep or not rest:
        raise ModgapError(
            f"unknown model spec {spec!r}; expected pocket, open_clip:ARCH/PRETRAINED, "
            "hf:NAME_OR_DIR or st:NAME_OR_DIR"
        )
    # the adapters below import their optional packages (open_clip, transformers,
    # sentence-transformers) when loaded, so each is imported only when asked for
    if family in ("open_clip", "openclip"):
        from .openclip import OpenClipEncoder

        return OpenClipEncoder(rest, device=device)
    if family == "hf":
        from .hf import HFClipEncoder

        return HFClipEncoder(rest, device=device)
    if family in ("st", "sentence-transformers"):
        from .sentence import SentenceTransformerEncoder

        return SentenceTransformerEncoder(rest, device=device)
    raise ModgapError(
        f"unknown model family {family!r} in {spec!r} (known: {', '.join(ENCODER_FAMILIES)})"
    )
