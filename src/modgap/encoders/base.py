"""The encoder interface shared by every adapter, and the image helpers they use.

An encoder turns images and texts into L2-normalised float32 vectors of one joint space.
Adapters implement two batch methods (``_encode_image_batch`` / ``_encode_text_batch``, torch
tensors out); :class:`Encoder` does the batching, the progress bar, the normalisation and the
conversion to numpy, so every adapter behaves the same.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .._progress import progress
from ..errors import InputError, ModgapError
from ._preprocess import ImageTransform

__all__ = [
    "Encoder",
    "ImageLike",
    "load_image",
    "preprocess_images",
    "progress_bar",
    "quiet_hf_loading",
]

ImageLike = Image.Image | str | os.PathLike

# a progress bar only for work that is long enough to be worth one
_MIN_ITEMS_FOR_BAR = 256


def load_image(image: ImageLike, mode: str | None = "RGB") -> Image.Image:
    """A PIL image from a PIL image or a file path (:class:`InputError` if unreadable).

    Parameters
    ----------
    image : PIL image or path
    mode : str or None
        PIL mode to convert to; ``None`` keeps the image as stored (palette, greyscale, RGBA),
        for adapters whose own pipeline converts it at its own step.
    """
    if isinstance(image, Image.Image):
        return image if mode is None or image.mode == mode else image.convert(mode)
    if isinstance(image, np.ndarray):
        raise ModgapError("images must be PIL images or file paths, not numpy arrays")
    path = Path(image)
    try:
        with Image.open(path) as im:
            # copy() reads the pixels now: the file is closed when this block ends
            return im.copy() if mode is None else im.convert(mode)
    except FileNotFoundError:
        raise InputError("image file not found", str(path)) from None
    except Image.DecompressionBombError as e:
        # PIL's guard against decompression bombs; an encoder resizes to a few hundred pixels,
        # so shrinking the file loses nothing
        raise InputError(
            f"image too large to open ({e}); resize it below "
            f"{2 * Image.MAX_IMAGE_PIXELS:,} pixels first",
            str(path),
        ) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as e:
        # PIL's decoders raise all of these on damaged files
        raise InputError(f"cannot read image ({e})", str(path)) from None


def preprocess_images(
    images: Sequence[Image.Image],
    size: int,
    mean: Sequence[float] = (0.5, 0.5, 0.5),
    std: Sequence[float] = (0.5, 0.5, 0.5),
    resample: int = Image.Resampling.BICUBIC,
) -> torch.Tensor:
    """Resize the short side to ``size``, centre-crop a square, scale to [0, 1], normalise.

    CLIP's evaluation recipe exactly as torchvision runs it on PIL images
    (``Resize(size)``, ``CenterCrop(size)``, ``ToTensor()``, ``Normalize(mean, std)``), done
    with PIL and numpy (:class:`~modgap.encoders._preprocess.ImageTransform` in ``shortest``
    mode). The default mean/std map [0, 1] to [-1, 1]. Returns a float32 tensor of shape
    (n, 3, size, size).
    """
    transform = ImageTransform(size=size, resample=resample, mean=tuple(mean), std=tuple(std))
    return transform(images)


@contextmanager
def progress_bar(total: int, description: str, enabled: bool = True) -> Iterator:
    """The one progress display (:func:`modgap._progress.progress`), kept on screen; yields
    ``advance(n)``. Silent for small jobs, when disabled, or off a terminal."""
    with progress(
        description, total, enabled=enabled and total >= _MIN_ITEMS_FOR_BAR, transient=False
    ) as bar:
        yield bar.advance


@contextmanager
def quiet_hf_loading() -> Iterator[None]:
    """Hide transformers' "Loading weights" bar while a model loads (restored afterwards)."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:
        yield
        return
    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def _normalise(x: torch.Tensor) -> np.ndarray:
    x = x.detach().float()
    x = x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return x.cpu().numpy().astype(np.float32, copy=False)


class Encoder(ABC):
    """An image-text dual encoder.

    Subclasses set ``name`` and ``device`` and implement :meth:`_encode_image_batch` and
    :meth:`_encode_text_batch` (a batch in, a torch tensor of shape (batch, dim) out).
    """

    name: str = "encoder"
    device: torch.device = torch.device("cpu")
    # the PIL mode images are converted to before ``_encode_image_batch``; None hands them over
    # as stored, for adapters whose model pipeline converts them itself (and where the order
    # matters: transformers composites transparency on white, open_clip resizes first)
    image_mode: str | None = "RGB"
    default_image_batch: int = 64
    default_text_batch: int = 256

    @abstractmethod
    def _encode_image_batch(self, images: list[Image.Image]) -> torch.Tensor: ...

    @abstractmethod
    def _encode_text_batch(self, texts: list[str]) -> torch.Tensor: ...

    def _batched(
        self, items: list, batch_size: int, what: str, progress: bool, encode: Any
    ) -> np.ndarray:
        """``encode`` each batch without gradients, L2-normalise, concatenate; one bar."""
        parts = []
        with progress_bar(len(items), f"{self.name}: {what}", progress) as advance:
            for start in range(0, len(items), batch_size):
                batch = items[start : start + batch_size]
                with torch.inference_mode():
                    parts.append(_normalise(encode(batch)))
                advance(len(batch))
        return np.concatenate(parts)

    def encode_images(
        self, images: Sequence[ImageLike], batch_size: int | None = None, progress: bool = True
    ) -> np.ndarray:
        """Embed images (PIL images or file paths) -> (n, d) L2-normalised float32."""
        images = list(images)
        if not images:
            raise ModgapError("no images to encode")
        batch_size = _check_batch(self.default_image_batch if batch_size is None else batch_size)

        def encode(batch: list) -> torch.Tensor:
            return self._encode_image_batch([load_image(im, self.image_mode) for im in batch])

        return self._batched(images, batch_size, "images", progress, encode)

    def encode_texts(
        self, texts: Sequence[str], batch_size: int | None = None, progress: bool = True
    ) -> np.ndarray:
        """Embed texts -> (n, d) L2-normalised float32."""
        if isinstance(texts, str):
            raise ModgapError("encode_texts expects a list of strings, not one string")
        texts = [str(t) for t in texts]
        if not texts:
            raise ModgapError("no texts to encode")
        batch_size = _check_batch(self.default_text_batch if batch_size is None else batch_size)
        return self._batched(texts, batch_size, "texts", progress, self._encode_text_batch)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, device={str(self.device)!r})"


def _check_batch(batch_size: int) -> int:
    if int(batch_size) < 1:
        raise ModgapError(f"batch_size must be >= 1, got {batch_size}")
    return int(batch_size)
