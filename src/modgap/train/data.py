"""Training data: the train / validation / test sets a config names (checked against the model
config), the caption order of an epoch, image splits, and torch batches of a
:class:`~modgap.embeddings.FeatureSet` (the training view of paired data; its readers live in
:mod:`modgap.io.precomp` and :mod:`modgap.io.features`)."""

from __future__ import annotations

import numpy as np
import torch

from ..embeddings import FeatureSet
from ..errors import InputError, ModgapError
from ..io import read_embeddings
from ..io.features import load_features
from ..io.precomp import Vocabulary, load_precomp
from ..measures import resolve_measures
from .config import PROTOCOLS, ConfigError, TrainConfig

__all__ = [
    "build_data",
    "epoch_order",
    "eval_folds",
    "image_batch",
    "split_images",
    "text_batch",
]


def text_batch(
    data: FeatureSet, index: np.ndarray, device=None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(texts, lengths)`` tensors of the captions ``index``; lengths are None-safe."""
    x = torch.from_numpy(np.ascontiguousarray(data.texts[index]))
    if data.text_lengths is None:
        lengths = torch.full((len(index),), 1, dtype=torch.long)
    else:
        lengths = torch.from_numpy(data.text_lengths[index])
        if data.text_kind == "ids":
            x = x[:, : int(lengths.max())]  # trim the padding this batch does not need
    return x.to(device, non_blocking=True), lengths.to(device)


def image_batch(data: FeatureSet, index: np.ndarray, device=None) -> torch.Tensor:
    x = torch.from_numpy(np.ascontiguousarray(data.images[index], dtype=np.float32))
    return x.to(device, non_blocking=True)


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The caption order of one epoch: a permutation that depends only on ``(seed, epoch)``,
    so a resumed run replays exactly the order of an uninterrupted one."""
    rng = np.random.default_rng([int(seed), int(epoch), 0x5EED])
    return rng.permutation(n)


def split_images(
    n_images: int,
    val: int | float,
    test: int | float,
    seed: int = 0,
    folds: int = 0,
    fold: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(train, val, test)`` image indices (each sorted).

    A seeded permutation of the images; with ``folds > 0`` the test part is fold ``fold`` of
    ``folds`` (k-fold cross-validation), otherwise its first ``test`` images. ``val`` images
    then come from the rest; counts may be given as fractions of ``n_images``.
    """

    def count(x: int | float) -> int:
        return round(x * n_images) if isinstance(x, float) and x < 1 else int(x)

    perm = np.random.default_rng([int(seed), 0xF01D]).permutation(n_images)
    if folds:
        if not 0 <= fold < folds:
            raise ModgapError(f"fold must be in [0, {folds}), got {fold}")
        parts = np.array_split(perm, folds)
        test_idx = parts[fold]
        rest = np.concatenate([p for i, p in enumerate(parts) if i != fold])
    else:
        n_test = count(test)
        test_idx, rest = perm[:n_test], perm[n_test:]
    n_val = count(val)
    if n_val >= rest.size:
        raise ModgapError(
            f"cannot carve {n_val} validation images out of the {rest.size} left after the "
            "test split"
        )
    return np.sort(rest[n_val:]), np.sort(rest[:n_val]), np.sort(test_idx)


def _read_set(path: str, fmt: str = "embeddings") -> FeatureSet:
    if fmt == "features":
        return load_features(path)

    return FeatureSet.from_embeddings(read_embeddings(path))


def build_data(cfg: TrainConfig) -> tuple[FeatureSet, FeatureSet | None, FeatureSet | None]:
    """``(train, val, test)`` from the config (val/test None when not configured)."""
    d = cfg.data
    if d.format == "precomp":
        train = load_precomp(d.path, d.train_split, captions_per_image=d.captions_per_image)
        vocab = train.metadata["vocab"]
        if d.vocab_min_count > 1:
            vocab = Vocabulary.build(train.captions, d.vocab_min_count)
            train = load_precomp(d.path, d.train_split, vocab, d.captions_per_image)
        val = test = None
        if d.val_split:
            val = load_precomp(d.path, d.val_split, vocab, d.captions_per_image)
        if d.test_split:
            test = load_precomp(d.path, d.test_split, vocab, d.captions_per_image)
    else:
        full = _read_set(d.path, d.format)
        val = _read_set(d.val_path, d.format) if d.val_path else None
        test = _read_set(d.test_path, d.format) if d.test_path else None
        n_val = 0 if val is not None else d.val
        n_test = 0 if test is not None or d.folds else d.test
        if n_val == 0 and n_test == 0 and not d.folds:
            train = full
        else:
            tr, va, te = split_images(
                full.n_images, n_val, n_test, d.split_seed, d.folds if test is None else 0, d.fold
            )
            train = full.subset(tr)
            if val is None and va.size:
                val = full.subset(va)
            if test is None and te.size:
                test = full.subset(te)
    if d.max_train_images is not None and train.n_images > d.max_train_images:
        train = train.subset(np.arange(d.max_train_images))
    _check_data(cfg, train, val, test)
    return train, val, test


def _check_data(cfg, train, val, test) -> None:
    m = cfg.model
    for name, part in (("validation", val), ("test", test)):
        if part is None:
            continue
        if part.image_dim != train.image_dim:
            raise InputError(
                f"{name} image features have width {part.image_dim} but training features "
                f"have {train.image_dim}",
                part.source,
            )
        if part.text_kind != train.text_kind or part.text_dim != train.text_dim:
            raise InputError(
                f"{name} text inputs ({part.text_kind}, width {part.text_dim}) differ from the "
                f"training ones ({train.text_kind}, width {train.text_dim})",
                part.source,
            )
    if m.image_dim is not None and m.image_dim != train.image_dim:
        raise ConfigError(
            f"model.image_dim: config says {m.image_dim} but the image features have width "
            f"{train.image_dim} ({train.source})"
        )
    if m.text_dim is not None and train.text_dim is not None and m.text_dim != train.text_dim:
        raise ConfigError(
            f"model.text_dim: config says {m.text_dim} but the text features have width "
            f"{train.text_dim} ({train.source})"
        )
    if m.identity_init:
        for side, w in (("image", train.image_dim), ("text", train.text_dim)):
            if w is not None and w != m.joint_dim:
                raise ConfigError(
                    f"model.identity_init: the {side} features have width {w} but "
                    f"joint_dim is {m.joint_dim}; identity initialisation needs them equal"
                )
    if train.n_texts < 2:
        raise ConfigError(f"data: only {train.n_texts} training caption(s); need at least 2")
    if cfg.eval.relevance == "class":
        for name, part in (("training", train), ("validation", val), ("test", test)):
            if part is not None and part.labels is None:
                raise ConfigError(
                    f"eval.relevance: 'class' needs image labels, and the {name} data has none"
                )
    folds = eval_folds(cfg)
    for name, part in (("validation", val), ("test", test)):
        if part is not None and folds and part.n_images < folds:
            raise ConfigError(
                f"eval: {folds} folds but the {name} split has only {part.n_images} images"
            )
    if cfg.eval.measures:
        _check_measures(cfg.eval.measures)


def _check_measures(names: list[str]) -> None:
    try:
        resolve_measures(list(names))
    except ModgapError as e:
        raise ConfigError(f"eval.measures: {e}") from None


def eval_folds(cfg: TrainConfig) -> int | None:
    """Folds of the evaluation protocol (``eval.folds``, else the protocol's own)."""
    return cfg.eval.folds if cfg.eval.folds is not None else PROTOCOLS[cfg.eval.protocol]
