"""What a training run is built from: the learning-rate schedule, the model for the data's
input shapes (with a size check before anything is allocated), the loss, and the provenance
record of ``results.json``."""

from __future__ import annotations

import math
import platform

import numpy as np
import torch

from .. import __version__
from ..compute import machine_memory
from ..embeddings import FeatureSet
from ..errors import ModgapError
from .config import ConfigError, TrainConfig
from .losses import DIASLoss
from .model import FeatureEncoder, MatchingModel, WordGRUEncoder

__all__ = ["build_loss", "build_model", "check_model_size", "lr_factor", "run_provenance"]


def lr_factor(step: int, cfg: TrainConfig, steps_per_epoch: int) -> float:
    """Learning-rate multiplier at optimiser step ``step`` (0-based).

    Linear warm-up over ``warmup_steps``; then ``cosine`` decays to ``min_lr_ratio`` at the last
    step, ``step`` multiplies by ``step_gamma`` every ``step_epochs`` epochs, ``constant`` keeps 1.
    """
    o = cfg.optim
    if o.warmup_steps and step < o.warmup_steps:
        return (step + 1) / o.warmup_steps
    if o.schedule == "constant":
        return 1.0
    if o.schedule == "step":
        return o.step_gamma ** ((step // max(steps_per_epoch, 1)) // o.step_epochs)
    total = max(o.epochs * steps_per_epoch - o.warmup_steps, 1)
    progress = min((step - o.warmup_steps) / total, 1.0)
    return o.min_lr_ratio + (1 - o.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def build_model(cfg: TrainConfig, data: FeatureSet) -> MatchingModel:
    """The matching model for ``data``'s input shapes (initialised from the torch RNG)."""
    m = cfg.model
    image = FeatureEncoder(
        data.image_dim, m.joint_dim, m.image_head, m.image_pooling, m.identity_init
    )
    if data.text_kind == "ids":
        vocab = data.metadata.get("vocab")
        if vocab is None:
            raise ModgapError("word-id texts need a vocabulary")
        text = WordGRUEncoder(len(vocab), m.joint_dim, m.word_dim, m.gru_layers, m.text_pooling)
    else:
        text = FeatureEncoder(
            data.text_dim, m.joint_dim, m.text_head, m.text_pooling, m.identity_init
        )
    return MatchingModel(image, text, m.freeze_image, m.freeze_text)


def check_model_size(cfg: TrainConfig, data: FeatureSet, device: torch.device) -> int:
    """Refuse, before allocating anything, a model whose training state (float32 weights,
    gradients and the two AdamW moments: 16 bytes a parameter) does not fit the device's
    memory. The model is built on torch's ``meta`` device, which holds no data. Returns the
    parameter count."""
    try:
        with torch.device("meta"):
            n = sum(p.numel() for p in build_model(cfg, data).parameters())
    except (RuntimeError, OverflowError):  # a tensor too large even to describe
        n = 2**62
    need = 16 * n
    if device.type == "cuda":
        have = torch.cuda.get_device_properties(device).total_memory
    else:
        have = machine_memory()
    if have and need > 0.8 * have:
        if n >= 2**62:
            raise ConfigError(
                f"model: joint_dim {cfg.model.joint_dim} makes tensors too large to allocate "
                "at all; lower model.joint_dim"
            )
        raise ConfigError(
            f"model: {n:,} parameters need about {need / 2**30:.3g} GiB to train (weights, "
            f"gradients, AdamW moments), more than this {device.type}'s "
            f"{have / 2**30:.1f} GiB; lower model.joint_dim (now {cfg.model.joint_dim})"
        )
    return n


def build_loss(cfg: TrainConfig) -> DIASLoss:
    """The configured objective (:class:`~modgap.train.losses.DIASLoss`)."""
    return DIASLoss(cfg.loss)


def run_provenance(cfg: TrainConfig, device: torch.device) -> dict:
    """Versions, device, seed and config source of a run (``results.json``)."""
    return {
        "modgap": __version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "device": str(device),
        "seed": cfg.seed,
        "config": cfg.source,
    }
