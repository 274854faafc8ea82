"""Plain references for image preprocessing tests, and real photos to run them on.

``open_clip_eval_reference`` is open_clip 3.3.0's evaluation transform
(``open_clip.transform.image_transform(..., is_train=False)``) transcribed step by step from
torchvision's documented semantics for PIL images, one image at a time: the output size of each
resize computed as ``torchvision.transforms.functional._compute_resized_output_size`` and
``ResizeKeepRatio.get_params`` do, the resampling left to PIL's ``Image.resize`` (what
torchvision calls), padding and cropping done on numpy arrays, then ``to_tensor`` and
``normalize`` as torch float32 operations. It shares no code with ``modgap.encoders``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)

_FILTERS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
}


def photos() -> dict[str, Image.Image]:
    """scikit-image's bundled photos in the shapes and PIL modes that preprocessing meets."""
    data = pytest.importorskip("skimage.data", reason="scikit-image not installed")
    chelsea = Image.fromarray(data.chelsea())
    # the astronaut in a soft-edged disc, transparent outside (the bundled logo is opaque)
    yy, xx = np.mgrid[:512, :512]
    alpha = np.clip((230 - np.hypot(yy - 256, xx - 256)) * 8, 0, 255).astype(np.uint8)
    cutout = np.dstack([data.astronaut(), alpha])
    return {
        "astronaut 512x512 RGB": Image.fromarray(data.astronaut()),
        "coffee 600x400 RGB": Image.fromarray(data.coffee()),
        "coffee portrait 400x600": Image.fromarray(data.coffee()).transpose(
            Image.Transpose.ROTATE_90
        ),
        "chelsea 451x300 RGB": chelsea,
        "rocket 640x427 RGB": Image.fromarray(data.rocket()),
        "camera 512x512 L": Image.fromarray(data.camera()),
        "coins 384x303 L": Image.fromarray(data.coins()),
        "coins small 96x75 L": Image.fromarray(data.coins()).reduce(4),
        "logo 500x500 RGBA": Image.fromarray(data.logo()),
        "astronaut cut-out 512x512 RGBA": Image.fromarray(cutout),
        "chelsea 451x300 P": chelsea.quantize(64),
    }


def _resized_size_one_number(h: int, w: int, size: int) -> tuple[int, int]:
    """torchvision ``_compute_resized_output_size`` for ``size=[s]``: (new_h, new_w)."""
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = size, int(size * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    return new_h, new_w


def _keep_ratio_size(h: int, w: int, target: tuple[int, int], longest: float) -> tuple[int, int]:
    """open_clip ``ResizeKeepRatio.get_params`` without randomness: (new_h, new_w)."""
    ratio_h, ratio_w = h / target[0], w / target[1]
    ratio = max(ratio_h, ratio_w) * longest + min(ratio_h, ratio_w) * (1.0 - longest)
    return round(h / ratio), round(w / ratio)


def _tv_resize(img: Image.Image, new_h: int, new_w: int, filt: int) -> Image.Image:
    """torchvision ``resize`` on a PIL image: unchanged when the size is already right."""
    if (img.height, img.width) == (new_h, new_w):
        return img
    return img.resize((new_w, new_h), filt)


def _crop_or_pad(img: Image.Image, th: int, tw: int, fill: int) -> Image.Image:
    """torchvision ``center_crop`` / open_clip ``center_crop_or_pad``, on the numpy array."""
    arr = np.asarray(img)
    h, w = arr.shape[:2]
    if tw > w or th > h:
        left, top = max(tw - w, 0) // 2, max(th - h, 0) // 2
        right, bottom = (max(tw - w, 0) + 1) // 2, (max(th - h, 0) + 1) // 2
        widths = ((top, bottom), (left, right)) + ((0, 0),) * (arr.ndim - 2)
        arr = np.pad(arr, widths, constant_values=fill)
        h, w = arr.shape[:2]
    top = round((h - th) / 2.0)  # torchvision: int(round(.)), Python round
    left = round((w - tw) / 2.0)
    arr = arr[top : top + th, left : left + tw]
    out = Image.fromarray(np.ascontiguousarray(arr), mode=img.mode)
    if img.mode == "P":
        out.putpalette(img.getpalette())
    return out


def open_clip_eval_reference(
    img: Image.Image,
    size: int | tuple[int, int] = 224,
    resize_mode: str = "shortest",
    interpolation: str = "bicubic",
    mean=OPENAI_MEAN,
    std=OPENAI_STD,
    fill_color: int = 0,
) -> torch.Tensor:
    """open_clip's eval transform for one PIL image -> float32 (3, h, w)."""
    th, tw = (size, size) if isinstance(size, int) else size
    # "random" is a training option; at evaluation open_clip uses bicubic
    filt = _FILTERS["bicubic" if interpolation == "random" else interpolation]
    if resize_mode == "longest":
        img = _tv_resize(img, *_keep_ratio_size(img.height, img.width, (th, tw), 1.0), filt)
        img = _crop_or_pad(img, th, tw, fill_color)
    elif resize_mode == "squash":
        img = _tv_resize(img, th, tw, filt)
    elif th == tw:
        img = _tv_resize(img, *_resized_size_one_number(img.height, img.width, th), filt)
        img = _crop_or_pad(img, th, tw, 0)
    else:
        # open_clip builds ResizeKeepRatio(image_size) here: its default filter, bicubic
        bicubic = _FILTERS["bicubic"]
        img = _tv_resize(img, *_keep_ratio_size(img.height, img.width, (th, tw), 0.0), bicubic)
        img = _crop_or_pad(img, th, tw, 0)
    img = img.convert("RGB")
    x = torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1).contiguous()
    x = x.to(torch.float32).div(255)
    m = torch.as_tensor(mean, dtype=torch.float32).view(-1, 1, 1)
    s = torch.as_tensor(std, dtype=torch.float32).view(-1, 1, 1)
    return x.sub_(m).div_(s)
