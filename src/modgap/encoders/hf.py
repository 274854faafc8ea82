"""Hugging Face transformers CLIP models (``hf:openai/clip-vit-base-patch32`` or a local folder).

Images go through the model's own image processor (``preprocessor_config.json``, or the image
part of ``processor_config.json``), loaded by ``AutoImageProcessor`` in its PIL/numpy variant
(``CLIPImageProcessorPil`` in transformers 5, ``CLIPImageProcessor`` with ``use_fast=False``
before): never the torchvision ("fast") one, whose resampling differs and which needs
torchvision. A model without any processor config gets the ``CLIPImageProcessor`` defaults at
its ``vision_config.image_size``.
"""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from PIL import Image

from .._optional import require
from ..compute import resolve_device
from ..errors import ModgapError, notice
from .base import Encoder, quiet_hf_loading

__all__ = ["HFClipEncoder", "load_image_processor"]

# the files transformers reads an image processor from (its IMAGE_PROCESSOR_NAME, PROCESSOR_NAME)
_PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")


def _pil_backend_kwargs() -> dict:
    """The ``from_pretrained`` argument that selects the PIL/numpy image processor."""
    # transformers 5 has image processing backends ("pil" / "torchvision"); 4.x has use_fast
    if importlib.util.find_spec("transformers.image_processing_backends") is not None:
        return {"backend": "pil"}
    return {"use_fast": False}


def _default_clip_processor(image_size: int):
    """``CLIPImageProcessor`` defaults (bicubic short side, centre crop) at ``image_size``."""
    import transformers

    # transformers 5 names the PIL variant CLIPImageProcessorPil; CLIPImageProcessor is then the
    # torchvision one. In 4.x CLIPImageProcessor is the PIL/numpy processor.
    cls = getattr(transformers, "CLIPImageProcessorPil", None) or transformers.CLIPImageProcessor
    return cls(
        size={"shortest_edge": int(image_size)},
        crop_size={"height": int(image_size), "width": int(image_size)},
    )


def _has_processor_config(name_or_path: str, local_files_only: bool) -> bool:
    from transformers.utils import cached_file

    for filename in _PROCESSOR_FILES:
        found = cached_file(
            name_or_path,
            filename,
            local_files_only=local_files_only,
            _raise_exceptions_for_missing_entries=False,
            _raise_exceptions_for_connection_errors=False,
        )
        if found is None:
            continue
        if filename != "processor_config.json":
            return True
        # a processor config holds the image processor's settings only in its nested form
        try:
            return "image_processor" in json.loads(Path(found).read_text())
        except (OSError, ValueError):
            return True  # damaged: let transformers report it
    return False


def _is_torchvision_processor(processor) -> bool:
    if getattr(processor, "backend", None) == "torchvision":  # transformers 5
        return True
    try:  # transformers 4.x
        from transformers.image_processing_utils_fast import BaseImageProcessorFast
    except ImportError:
        return False
    return isinstance(processor, BaseImageProcessorFast)


@contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Errors only from transformers' logger for a while.

    transformers 5 warns that ``CLIPImageProcessor`` "requires torchvision" while it resolves
    the processor class, even when the PIL backend is asked for and used.
    """
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)


def load_image_processor(name_or_path: str, image_size: int, local_files_only: bool = False):
    """The model's own image processor, PIL/numpy variant; CLIP defaults when it has none.

    Parameters
    ----------
    name_or_path : str
        Hub model id or local folder.
    image_size : int
        The vision tower's input size (``vision_config.image_size``), for the defaults.
    local_files_only : bool
        Never reach the network.
    """
    from transformers import AutoImageProcessor

    if not _has_processor_config(name_or_path, local_files_only):
        notice(
            f"{name_or_path} has no image processor config: using the CLIPImageProcessor "
            f"defaults at {image_size} pixels"
        )
        return _default_clip_processor(image_size)
    try:
        with _quiet_transformers():
            processor = AutoImageProcessor.from_pretrained(
                name_or_path, local_files_only=local_files_only, **_pil_backend_kwargs()
            )
    except Exception as e:  # bad JSON, unknown processor type, ...: many exception types
        raise ModgapError(
            f"cannot load the image processor of {name_or_path!r}: {type(e).__name__}: {e}"
        ) from None
    if _is_torchvision_processor(processor):
        raise ModgapError(
            f"{name_or_path!r} has only a torchvision image processor "
            f"({type(processor).__name__}); modgap needs its PIL/numpy variant"
        )
    return processor


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
    """A ``transformers`` CLIP model with its tokenizer and its own image processor.

    Parameters
    ----------
    name_or_path : str
        Hub model id or a local folder saved with ``save_pretrained``.
    device : str, optional
    local_files_only : bool
        Never reach the network (also implied by ``HF_HUB_OFFLINE=1``).
    """

    # the image processor converts to RGB itself (compositing transparency on white)
    image_mode = None

    def __init__(
        self,
        name_or_path: str,
        device: str | torch.device | None = None,
        local_files_only: bool | None = None,
    ):
        transformers = require("transformers", "encoders", "the hf: encoders")
        AutoTokenizer, CLIPModel = transformers.AutoTokenizer, transformers.CLIPModel
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
        self.image_processor = load_image_processor(
            name_or_path, int(self.model.config.vision_config.image_size), local_files_only
        )
        self.max_length = int(
            min(
                self.model.config.text_config.max_position_embeddings,
                self.tokenizer.model_max_length,
            )
        )

    @property
    def dim(self) -> int:
        return int(self.model.config.projection_dim)

    def preprocess(self, images: list[Image.Image]) -> torch.Tensor:
        """The model's ``pixel_values`` for PIL images (any mode), from its image processor."""
        if not getattr(self.image_processor, "do_convert_rgb", None):
            # a processor that does not convert would hand the model 1 or 4 channels
            images = [im if im.mode == "RGB" else im.convert("RGB") for im in images]
        try:
            out = self.image_processor(images=images, return_tensors="pt")
        except Exception as e:  # the processor raises ValueError/TypeError for odd images
            raise ModgapError(
                f"{self.name}: image processor failed: {type(e).__name__}: {e}"
            ) from None
        return out["pixel_values"].to(torch.float32)

    def _encode_image_batch(self, images: list[Image.Image]) -> torch.Tensor:
        pixels = self.preprocess(images).to(self.device)
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
