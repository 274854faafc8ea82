"""Training configuration: YAML in, validated dataclasses out.

Configs are data (``configs/*.yaml``). Every key is checked: unknown keys, wrong types, unknown
choices and out-of-range values raise :class:`ConfigError` naming the key, before any data is
loaded; :func:`check_inputs` then checks files and feature widths, before any training starts.
Relative data paths in a config file are resolved against the folder holding that file;
the output folder ``out`` is relative to the working directory.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..compute import MAX_SEED, MAX_THREADS
from ..errors import ModgapError
from .losses import DEFAULT_WEIGHTS, MASK_RULES, MATCHING_LOSSES, LossConfig
from .model import POOLINGS

__all__ = [
    "CheckpointConfig",
    "ConfigError",
    "DataConfig",
    "EvalConfig",
    "LossConfig",
    "ModelConfig",
    "OptimConfig",
    "TrainConfig",
    "config_from_dict",
    "load_config",
]

PROTOCOLS = {"all": None, "coco5k": None, "flickr1k": None, "coco1k": 5}


class ConfigError(ModgapError):
    """A bad training configuration."""


@dataclass
class DataConfig:
    """Where the pairs come from and how they are split.

    ``format: embeddings`` reads any file :func:`modgap.io.read_embeddings` reads (global
    features both sides, e.g. frozen CLIP embeddings: the heads-only mode); ``features`` reads
    a ``.npz`` of frozen-tower features of unequal widths
    (:func:`modgap.io.features.load_features`). Both are split by image (``val``/``test``
    counts or fractions, or k-fold with ``folds``/``fold``), unless ``val_path``/``test_path``
    give separate files. ``format: precomp`` reads the VSE/SCAN
    folder layout at ``path`` (splits ``train_split``/``val_split``/``test_split``).
    """

    format: str = "embeddings"
    path: str = ""
    val_path: str | None = None
    test_path: str | None = None
    val: float = 0.1
    test: float = 0.2
    folds: int = 0
    fold: int = 0
    split_seed: int = 0
    train_split: str = "train"
    val_split: str | None = "dev"
    test_split: str | None = "test"
    captions_per_image: int = 5
    vocab_min_count: int = 1
    max_train_images: int | None = None


@dataclass
class ModelConfig:
    """Matching model; see :mod:`modgap.train.model`."""

    joint_dim: int = 512
    image_head: str = "linear"
    text_head: str = "linear"
    image_pooling: str = "gpo"
    text_pooling: str = "gpo"
    identity_init: bool = False
    freeze_image: bool = False
    freeze_text: bool = False
    word_dim: int = 300
    gru_layers: int = 1
    image_dim: int | None = None
    text_dim: int | None = None


@dataclass
class OptimConfig:
    """AdamW with linear warm-up then a cosine, step or constant schedule."""

    epochs: int = 10
    batch_size: int = 128
    lr: float = 2e-4
    weight_decay: float = 1e-4
    warmup_steps: int = 0
    schedule: str = "cosine"
    step_epochs: int = 10
    step_gamma: float = 0.1
    min_lr_ratio: float = 0.0
    grad_clip: float = 2.0
    amp: bool = True


@dataclass
class EvalConfig:
    """Evaluation each epoch (validation) and at the end (test).

    ``relevance: instance`` is the VSE protocol (a caption's own image is the one positive);
    ``class`` counts any item of the same class as relevant (for class-level captions).
    ``protocol``: ``coco1k`` averages over 5 folds of images (COCO 5-fold 1K), ``coco5k`` /
    ``flickr1k`` / ``all`` evaluate on the whole split at once; ``folds`` overrides the count.
    """

    relevance: str = "instance"
    protocol: str = "all"
    folds: int | None = None
    measures: list[str] = field(default_factory=lambda: ["centroid_gap", "rmg"])
    zero_shot: bool = True
    every_epochs: int = 1
    batch_size: int = 1024


@dataclass
class CheckpointConfig:
    """Checkpoints every epoch and every ``every_steps`` optimiser steps (0: epochs only)."""

    every_steps: int = 0
    keep_best: bool = True


@dataclass
class TrainConfig:
    """A whole training run.

    ``threads``: CPU threads for torch (0 keeps torch's default). Small models on a busy
    machine train much faster with 1 (OpenMP threads spin while they wait for a core), and a
    bitwise-exact resume needs the same thread count as the interrupted run.
    """

    name: str = "run"
    seed: int = 0
    device: str = "auto"
    deterministic: bool = True
    threads: int = 0
    out: str = "runs/run"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    source: str | None = None

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.pop("source")
        return d


# -- building from dicts ------------------------------------------------------------------


def _fail(where: str, msg: str) -> typing.NoReturn:
    raise ConfigError(f"{where}: {msg}")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            _fail(where, "must not be empty")
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, where)
            except ConfigError:
                continue
        names = " or ".join(getattr(a, "__name__", str(a)) for a in args if a is not type(None))
        _fail(where, f"expected {names}, got {value!r}")
    if origin is list:
        (inner,) = typing.get_args(tp)
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            _fail(where, f"expected a list, got {value!r}")
        return [_coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if isinstance(value, bool):
            return value
        _fail(where, f"expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        _fail(where, f"expected an integer, got {value!r}")
    if tp is float:
        # YAML 1.1 reads "2e-4" (no dot) as a string; accept it as a number
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                _fail(where, f"expected a number, got {value!r}")
        if isinstance(value, int | float) and not isinstance(value, bool):
            if not math.isfinite(value):
                _fail(where, f"must be finite, got {value!r}")
            return float(value) if not isinstance(value, int) else value
        _fail(where, f"expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        _fail(where, f"expected a string, got {value!r}")
    raise AssertionError(tp)  # pragma: no cover


def _build(cls: type, raw: Any, where: str):
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        _fail(where, f"expected a mapping of options, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.name != "source"]
    kwargs = {}
    for key, value in raw.items():
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else f" (known: {', '.join(names)})"
            _fail(f"{where}.{key}" if where else str(key), f"unknown option{hint}")
        sub = f"{where}.{key}" if where else key
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            kwargs[key] = _build(tp, value, sub)
        else:
            kwargs[key] = _coerce(value, tp, sub)
    return cls(**kwargs)


def _choice(where: str, value: Any, choices) -> None:
    if value not in choices:
        _fail(where, f"unknown value {value!r} (choose from {', '.join(map(str, choices))})")


def _validate(cfg: TrainConfig) -> None:
    d, m, lo, o, e, c = cfg.data, cfg.model, cfg.loss, cfg.optim, cfg.eval, cfg.checkpoint
    _choice("data.format", d.format, ("embeddings", "features", "precomp"))
    if not d.path:
        _fail("data.path", "is required (a file for 'embeddings', a folder for 'precomp')")
    for name in ("val", "test"):
        v = getattr(d, name)
        if v < 0:
            _fail(f"data.{name}", f"must be >= 0, got {v}")
    if d.folds < 0 or d.folds == 1:
        _fail("data.folds", f"must be 0 (no k-fold) or >= 2, got {d.folds}")
    if d.folds and not 0 <= d.fold < d.folds:
        _fail("data.fold", f"must be in [0, {d.folds}), got {d.fold}")
    if d.captions_per_image < 1:
        _fail("data.captions_per_image", f"must be >= 1, got {d.captions_per_image}")
    if m.joint_dim < 1:
        _fail("model.joint_dim", f"must be >= 1, got {m.joint_dim}")
    _choice("model.image_head", m.image_head, ("linear", "mlp"))
    _choice("model.text_head", m.text_head, ("linear", "mlp"))
    _choice("model.image_pooling", m.image_pooling, POOLINGS)
    _choice("model.text_pooling", m.text_pooling, POOLINGS)
    if m.freeze_image and m.freeze_text:
        _fail("model", "freeze_image and freeze_text together leave nothing to train")
    _choice("loss.matching", lo.matching, MATCHING_LOSSES)
    _choice("loss.mask_rule", lo.mask_rule, MASK_RULES)
    _choice("loss.reduction", lo.reduction, ("sum", "mean"))
    for name, default in zip(("alpha", "beta", "gamma"), DEFAULT_WEIGHTS[lo.matching], strict=True):
        if getattr(lo, name) is None:
            setattr(lo, name, default)
    for name in ("alpha", "beta", "gamma", "lambda_off", "margin", "mask_std_scale"):
        if getattr(lo, name) < 0:
            _fail(f"loss.{name}", f"weights must be >= 0, got {getattr(lo, name)}")
    if lo.temperature <= 0:
        _fail("loss.temperature", f"must be > 0, got {lo.temperature}")
    if lo.mask_k < 1:
        _fail("loss.mask_k", f"must be >= 1, got {lo.mask_k}")
    if o.epochs < 1:
        _fail("optim.epochs", f"must be >= 1, got {o.epochs}")
    if o.batch_size < 2:
        _fail(
            "optim.batch_size", f"must be >= 2 (negatives come from the batch), got {o.batch_size}"
        )
    if o.lr <= 0:
        _fail("optim.lr", f"must be > 0, got {o.lr}")
    for name in ("weight_decay", "warmup_steps", "grad_clip", "min_lr_ratio"):
        if getattr(o, name) < 0:
            _fail(f"optim.{name}", f"must be >= 0, got {getattr(o, name)}")
    _choice("optim.schedule", o.schedule, ("cosine", "step", "constant"))
    if o.step_epochs < 1:
        _fail("optim.step_epochs", f"must be >= 1, got {o.step_epochs}")
    _choice("eval.relevance", e.relevance, ("instance", "class"))
    _choice("eval.protocol", e.protocol, tuple(PROTOCOLS))
    if e.folds is not None and e.folds < 1:
        _fail("eval.folds", f"must be >= 1, got {e.folds}")
    if e.every_epochs < 1:
        _fail("eval.every_epochs", f"must be >= 1, got {e.every_epochs}")
    if c.every_steps < 0:
        _fail("checkpoint.every_steps", f"must be >= 0, got {c.every_steps}")
    _choice("device", cfg.device.split(":")[0], ("auto", "cpu", "cuda"))
    if not 0 <= cfg.threads <= MAX_THREADS:
        _fail("threads", f"must be 0 to {MAX_THREADS} (0: torch's default), got {cfg.threads}")
    if not 0 <= cfg.seed <= MAX_SEED:  # the seeds numpy and torch take, as --seed
        _fail("seed", f"must be 0 to {MAX_SEED}, got {cfg.seed}")


def config_from_dict(raw: dict, base_dir: str | os.PathLike | None = None) -> TrainConfig:
    """Build and validate a :class:`TrainConfig`; relative paths are resolved in ``base_dir``."""
    cfg = _build(TrainConfig, raw, "")
    _validate(cfg)
    if base_dir is not None:
        base = Path(base_dir)

        def resolve(p: str | None) -> str | None:
            if p is None:
                return None
            p = os.path.expandvars(os.path.expanduser(p))
            return str(p if os.path.isabs(p) else (base / p).resolve())

        for name in ("path", "val_path", "test_path"):
            setattr(cfg.data, name, resolve(getattr(cfg.data, name)))
    return cfg


def load_config(path: str | os.PathLike, overrides: dict | None = None) -> TrainConfig:
    """Read a YAML config; errors name the file and the key."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: config file not found")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of options at the top level")
    for key, value in (overrides or {}).items():
        raw[key] = value
    try:
        cfg = config_from_dict(raw, path.parent)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    cfg.source = str(path)
    return cfg
