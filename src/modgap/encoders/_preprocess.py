"""CLIP-style evaluation preprocessing with PIL and numpy: resize, crop or pad, normalise.

The operations reproduce torchvision's transforms on PIL images, which is what open_clip's eval
transform (``open_clip.transform.image_transform(..., is_train=False)``, open_clip 3.3.0) runs:

* ``Resize(s)`` with one number: the short side becomes ``s`` and the long side
  ``int(s * long / short)`` (truncated, not rounded); ``Resize((h, w))`` gives exactly (h, w).
  An image already at the output size is returned unchanged. The resampling itself is PIL's
  ``Image.resize``, which antialiases when it shrinks.
* ``ResizeKeepRatio`` (open_clip, from timm): one scale ``r = max(h/th, w/tw)`` ("longest") or
  ``min(h/th, w/tw)`` ("shortest") for both sides, new size ``round(h / r), round(w / r)``.
* ``CenterCrop`` / open_clip's ``CenterCropOrPad``: pad a side that is too short to the target
  (the extra pixel, if odd, on the right/bottom) with a constant fill, then crop at
  ``top = int(round((H - th) / 2))``, ``left = int(round((W - tw) / 2))`` -- Python's round, so
  half-way cases go to the even offset.
* ``ToTensor`` + ``Normalize``: float32 ``x / 255``, then ``(x - mean) / std`` per channel.

Geometry runs on the image in its own PIL mode and the RGB conversion comes after it, as in
open_clip's transform: PIL resizes palette images with nearest-neighbour and RGBA images with
premultiplied alpha, and the result differs from converting first.

torchvision is not needed. References: torchvision ``transforms/functional.py`` (``resize``,
``_compute_resized_output_size``, ``center_crop``, ``to_tensor``, ``normalize``) and open_clip
``transform.py`` (``ResizeKeepRatio``, ``center_crop_or_pad``, ``image_transform``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageOps

from ..errors import ModgapError

__all__ = [
    "RESAMPLE",
    "RESIZE_MODES",
    "ImageTransform",
    "center_crop_or_pad",
    "resize_exact",
    "resize_keep_ratio",
    "resize_shortest_edge",
    "to_normalised_tensor",
]

RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
}
RESIZE_MODES = ("shortest", "longest", "squash")


def resize_shortest_edge(
    image: Image.Image, size: int, resample: int = Image.Resampling.BICUBIC
) -> Image.Image:
    """Resize so the short side is ``size``; the long side is ``int(size * long / short)``.

    torchvision's ``Resize(size)`` for one number: the long side is truncated, not rounded,
    so a 301x200 image resized to 224 becomes 337x224 (224 * 301 / 200 = 337.12).
    """
    w, h = image.size
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = int(size), int(size * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    return resize_exact(image, (new_h, new_w), resample)


def resize_exact(
    image: Image.Image, size: tuple[int, int], resample: int = Image.Resampling.BICUBIC
) -> Image.Image:
    """Resize to exactly ``size = (height, width)``; an image of that size is left as it is."""
    h, w = int(size[0]), int(size[1])
    if image.size == (w, h):
        return image
    return image.resize((w, h), resample)


def resize_keep_ratio(
    image: Image.Image,
    size: tuple[int, int],
    longest: float,
    resample: int = Image.Resampling.BICUBIC,
) -> Image.Image:
    """open_clip's ``ResizeKeepRatio`` without its random parts.

    With ``r_h = h / t_h`` and ``r_w = w / t_w``, one ratio
    ``r = longest * max(r_h, r_w) + (1 - longest) * min(r_h, r_w)`` scales both sides:
    ``(round(h / r), round(w / r))``. ``longest = 1`` fits the long side into the target
    (the rest is padded later), ``longest = 0`` covers the target (the rest is cropped).
    """
    w, h = image.size
    target_h, target_w = size
    ratio_h, ratio_w = h / target_h, w / target_w
    # the same float expression as open_clip, so the rounding lands on the same pixel
    ratio = max(ratio_h, ratio_w) * longest + min(ratio_h, ratio_w) * (1.0 - longest)
    return resize_exact(image, (round(h / ratio), round(w / ratio)), resample)


def _pad(image: Image.Image, ltrb: tuple[int, int, int, int], fill: float) -> Image.Image:
    """Constant padding, torchvision's ``pad`` on PIL: the fill repeated per band (an int
    except for float images); palette images keep their palette and pad with index ``fill``."""
    bands = len(image.getbands())
    value: float | tuple = fill if image.mode == "F" else int(fill)
    if bands > 1:
        value = (value,) * bands
    palette = image.getpalette() if image.mode == "P" else None
    out = ImageOps.expand(image, border=ltrb, fill=value)
    if palette is not None:
        out.putpalette(palette)
    return out


def center_crop_or_pad(image: Image.Image, size: tuple[int, int], fill: float = 0) -> Image.Image:
    """Crop the centre ``size = (height, width)``; pad first where the image is smaller.

    torchvision's ``center_crop`` (fill 0) and open_clip's ``center_crop_or_pad`` (any fill):
    a short side gets ``(t - s) // 2`` pixels before and ``(t - s + 1) // 2`` after, then the
    crop starts at ``int(round((S - t) / 2))`` on each axis.
    """
    crop_h, crop_w = int(size[0]), int(size[1])
    w, h = image.size
    if crop_w > w or crop_h > h:
        pad_w, pad_h = max(crop_w - w, 0), max(crop_h - h, 0)
        image = _pad(image, (pad_w // 2, pad_h // 2, (pad_w + 1) // 2, (pad_h + 1) // 2), fill)
        w, h = image.size
        if (w, h) == (crop_w, crop_h):
            return image
    # torchvision's int(round(.)): Python's round, half-way offsets go to the even number
    top = round((h - crop_h) / 2.0)
    left = round((w - crop_w) / 2.0)
    return image.crop((left, top, left + crop_w, top + crop_h))


def to_normalised_tensor(
    images: Sequence[Image.Image], mean: Sequence[float], std: Sequence[float]
) -> torch.Tensor:
    """RGB images of one size -> float32 (n, 3, h, w): ``(x / 255 - mean) / std``.

    The same float32 operations, in the same order, as torchvision's ``to_tensor`` and
    ``normalize``, so the values match bit for bit.
    """
    pixels = torch.from_numpy(np.stack([np.asarray(im, dtype=np.uint8) for im in images]))
    x = pixels.permute(0, 3, 1, 2).to(torch.float32).div(255)
    m = torch.as_tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return x.sub_(m).div_(s).contiguous()


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)):
        return int(size), int(size)
    size = tuple(int(s) for s in size)
    if len(size) == 1:
        return size[0], size[0]
    if len(size) != 2:
        raise ModgapError(f"image size must be one number or (height, width), got {size}")
    return size[0], size[1]


@dataclass(frozen=True)
class ImageTransform:
    """The CLIP / open_clip evaluation transform: geometry, RGB, scale to [0, 1], normalise.

    Parameters
    ----------
    size : int or (height, width)
        Output size.
    resize_mode : {"shortest", "longest", "squash"}
        ``shortest``: resize the short side to the target, centre-crop (a square target uses
        torchvision's ``Resize(s)``, a non-square one ``ResizeKeepRatio(longest=0)``, as
        open_clip does). ``longest``: fit the long side, pad the rest with ``fill_color`` to the
        target. ``squash``: resize to exactly the target, aspect ratio not kept.
    resample : int
        PIL resampling filter (``RESAMPLE[name]``).
    mean, std : sequence of float
        Per-channel statistics for ``(x - mean) / std``, x in [0, 1].
    fill_color : int
        Padding value of ``longest`` (``shortest`` pads with 0, as torchvision's crop does, in
        the rare case a side comes out short).
    """

    size: int | tuple[int, int] = 224
    resize_mode: str = "shortest"
    resample: int = Image.Resampling.BICUBIC
    mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    std: tuple[float, ...] = (0.5, 0.5, 0.5)
    fill_color: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "size", _pair(self.size))
        if self.resize_mode not in RESIZE_MODES:
            raise ModgapError(
                f"unknown resize_mode {self.resize_mode!r} (known: {', '.join(RESIZE_MODES)})"
            )
        object.__setattr__(self, "mean", _channels(self.mean, "mean"))
        object.__setattr__(self, "std", _channels(self.std, "std"))
        if any(s == 0 for s in self.std):
            raise ModgapError(f"image std must not be 0, got {self.std}")

    def geometry(self, image: Image.Image) -> Image.Image:
        """Resize and crop/pad one image to ``size``, in its own PIL mode."""
        h, w = self.size
        if self.resize_mode == "squash":
            return resize_exact(image, (h, w), self.resample)
        if self.resize_mode == "longest":
            image = resize_keep_ratio(image, (h, w), 1.0, self.resample)
            return center_crop_or_pad(image, (h, w), self.fill_color)
        if h == w:
            image = resize_shortest_edge(image, h, self.resample)
        else:
            image = resize_keep_ratio(image, (h, w), 0.0, self.resample)
        return center_crop_or_pad(image, (h, w), 0)

    def __call__(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """PIL images (any mode) -> float32 tensor (n, 3, height, width)."""
        rgb = [self.geometry(im).convert("RGB") for im in images]
        return to_normalised_tensor(rgb, self.mean, self.std)


def _channels(values: float | Sequence[float], name: str) -> tuple[float, ...]:
    """One value per RGB channel (a single number is used for all three)."""
    if isinstance(values, (int, float, np.floating)):
        return (float(values),) * 3
    values = tuple(float(v) for v in values)
    if len(values) == 1:
        return values * 3
    if len(values) != 3:
        raise ModgapError(f"image {name} needs 1 or 3 values, got {len(values)}")
    return values
