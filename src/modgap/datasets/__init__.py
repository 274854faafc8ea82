"""Evaluation data: Fashion-MNIST (with generated captions), a few captioned photos, caption
files and webdataset tar shards."""

from __future__ import annotations

from .captions import caption_vocabulary, class_prompts, image_tones, sample_captions
from .fashion_mnist import CLASS_NAMES, find_fashion_mnist, load_fashion_mnist, read_idx
from .photos import PHOTO_CAPTIONS, load_photos
from .webdataset import WebDatasetIndex, expand_braces, find_shards, read_webdataset

__all__ = [
    "CLASS_NAMES",
    "PHOTO_CAPTIONS",
    "WebDatasetIndex",
    "caption_vocabulary",
    "class_prompts",
    "expand_braces",
    "find_fashion_mnist",
    "find_shards",
    "image_tones",
    "load_fashion_mnist",
    "load_photos",
    "read_idx",
    "read_webdataset",
    "sample_captions",
]
