"""Training data helpers: the caption order of an epoch, image splits, and torch batches of a
:class:`~modgap.embeddings.FeatureSet` (the training view of paired data; its readers live in
:mod:`modgap.io.precomp` and :mod:`modgap.io.features`)."""

from __future__ import annotations

import numpy as np
import torch

from ..embeddings import FeatureSet
from ..errors import ModgapError

__all__ = ["epoch_order", "image_batch", "split_images", "text_batch"]


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
