"""Evaluation data: Fashion-MNIST (with generated captions) and a few captioned photos."""

from __future__ import annotations

from .captions import caption_vocabulary, class_prompts, image_tones, sample_captions
from .fashion_mnist import CLASS_NAMES, find_fashion_mnist, load_fashion_mnist, read_idx
from .photos import PHOTO_CAPTIONS, load_photos

__all__ = [
    "CLASS_NAMES",
    "PHOTO_CAPTIONS",
    "caption_vocabulary",
    "class_prompts",
    "find_fashion_mnist",
    "image_tones",
    "load_fashion_mnist",
    "load_photos",
    "read_idx",
    "sample_captions",
]
