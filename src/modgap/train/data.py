"""Training data for matching models: VSE/SCAN precomputed features and modgap EmbeddingSets.

:class:`MatchingData` holds one split: image inputs ``(n_i, d)`` (global) or ``(n_i, r, d)``
(regions / grid), text inputs as features ``(n_t, d)``, token vectors ``(n_t, L, d)`` with
lengths, or word ids ``(n_t, L)`` with lengths, and ``text_to_image`` ``(n_t,)``. An epoch visits
every caption once (the VSE convention), each with its image.

The VSE/SCAN precomputed layout (Faghri et al. 2018; Lee et al. 2018) is a folder with
``{split}_ims.npy`` and ``{split}_caps.txt`` (one caption a line, ``captions_per_image``
consecutive lines per image: image ``i`` has captions ``c·i … c·i + c − 1``).
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError, ModgapError

__all__ = [
    "MatchingData",
    "Vocabulary",
    "epoch_order",
    "from_embedding_set",
    "load_features",
    "load_precomp",
    "precomp_shapes",
    "tokenize",
    "write_features",
    "write_toy_precomp",
]

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def tokenize(caption: str) -> list[str]:
    """Lower-case word tokens (letters/digits, with an optional ``'s``-style suffix)."""
    return _WORD.findall(caption.lower())


class Vocabulary:
    """Word ↔ id map built from training captions. Id 0 is padding, 1 the unknown word."""

    PAD, UNK = "<pad>", "<unk>"

    def __init__(self, words: Sequence[str]):
        self.words = [self.PAD, self.UNK, *[w for w in words if w not in (self.PAD, self.UNK)]]
        self.index = {w: i for i, w in enumerate(self.words)}

    @classmethod
    def build(cls, captions: Iterable[str], min_count: int = 1) -> Vocabulary:
        """Words seen at least ``min_count`` times, most frequent first (ties alphabetical)."""
        counts = Counter(w for c in captions for w in tokenize(c))
        kept = sorted(
            (w for w, n in counts.items() if n >= min_count), key=lambda w: (-counts[w], w)
        )
        return cls(kept)

    def __len__(self) -> int:
        return len(self.words)

    def encode(self, captions: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Padded ids ``(n, L_max)`` int64 and lengths ``(n,)`` (empty captions get one UNK)."""
        seqs = [[self.index.get(w, 1) for w in tokenize(c)] or [1] for c in captions]
        lengths = np.array([len(s) for s in seqs], dtype=np.int64)
        ids = np.zeros((len(seqs), int(lengths.max()) if len(seqs) else 1), dtype=np.int64)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = s
        return ids, lengths

    def to_json(self) -> str:
        return json.dumps({"words": self.words})

    @classmethod
    def from_json(cls, text: str) -> Vocabulary:
        return cls(json.loads(text)["words"])


@dataclass
class MatchingData:
    """One split of paired training/evaluation data (see module docstring for the shapes)."""

    images: np.ndarray
    texts: np.ndarray
    text_to_image: np.ndarray
    text_lengths: np.ndarray | None = None
    labels: np.ndarray | None = None
    class_texts: np.ndarray | None = None
    class_names: list[str] | None = None
    captions: list[str] | None = None
    source: str | None = None
    metadata: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        src = self.source
        if self.images.ndim not in (2, 3):
            raise InputError(
                f"image features must be (n, d) or (n, regions, d), got {self.images.shape}", src
            )
        n_i, n_t = self.images.shape[0], self.texts.shape[0]
        self.text_to_image = np.asarray(self.text_to_image, dtype=np.int64)
        if self.text_to_image.shape != (n_t,):
            raise InputError(
                f"text_to_image has shape {self.text_to_image.shape}, expected ({n_t},)", src
            )
        if n_t and (self.text_to_image.min() < 0 or self.text_to_image.max() >= n_i):
            raise InputError(f"text_to_image points outside the {n_i} images", src)
        if self.text_kind in ("tokens", "ids") and self.text_lengths is None:
            raise InputError("token or word-id texts need their lengths", src)
        if self.labels is not None and self.labels.shape != (n_i,):
            raise InputError(f"labels must have shape ({n_i},), got {self.labels.shape}", src)

    @property
    def n_images(self) -> int:
        return int(self.images.shape[0])

    @property
    def n_texts(self) -> int:
        return int(self.texts.shape[0])

    @property
    def image_dim(self) -> int:
        return int(self.images.shape[-1])

    @property
    def text_kind(self) -> str:
        """``"features"`` (n, d), ``"tokens"`` (n, L, d) or ``"ids"`` (n, L) int."""
        if np.issubdtype(self.texts.dtype, np.integer):
            return "ids"
        return "tokens" if self.texts.ndim == 3 else "features"

    @property
    def text_dim(self) -> int | None:
        return None if self.text_kind == "ids" else int(self.texts.shape[-1])

    def subset(self, image_index: Sequence[int]) -> MatchingData:
        """The given images (in that order) with exactly their captions."""
        idx = np.asarray(image_index, dtype=np.int64)
        new_pos = np.full(self.n_images, -1, dtype=np.int64)
        new_pos[idx] = np.arange(idx.size)
        keep = np.flatnonzero(new_pos[self.text_to_image] >= 0)
        keep = keep[np.argsort(new_pos[self.text_to_image[keep]], kind="stable")]
        return MatchingData(
            images=np.asarray(self.images[idx]),
            texts=np.asarray(self.texts[keep]),
            text_to_image=new_pos[self.text_to_image[keep]],
            text_lengths=None if self.text_lengths is None else self.text_lengths[keep],
            labels=None if self.labels is None else self.labels[idx],
            class_texts=self.class_texts,
            class_names=self.class_names,
            captions=None if self.captions is None else [self.captions[i] for i in keep],
            source=self.source,
            metadata=dict(self.metadata),
        )

    def text_batch(self, index: np.ndarray, device=None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(texts, lengths)`` tensors of the captions ``index``; lengths are None-safe."""
        x = torch.from_numpy(np.ascontiguousarray(self.texts[index]))
        if self.text_lengths is None:
            lengths = torch.full((len(index),), 1, dtype=torch.long)
        else:
            lengths = torch.from_numpy(self.text_lengths[index])
            if self.text_kind == "ids":
                x = x[:, : int(lengths.max())]  # trim the padding this batch does not need
        return x.to(device, non_blocking=True), lengths.to(device)

    def image_batch(self, index: np.ndarray, device=None) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(self.images[index], dtype=np.float32))
        return x.to(device, non_blocking=True)


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The caption order of one epoch: a permutation that depends only on ``(seed, epoch)``,
    so a resumed run replays exactly the order of an uninterrupted one."""
    rng = np.random.default_rng([int(seed), int(epoch), 0x5EED])
    return rng.permutation(n)


# -- VSE / SCAN precomputed layout ------------------------------------------------------------


def _precomp_files(root: Path, split: str) -> tuple[Path, Path]:
    ims, caps = root / f"{split}_ims.npy", root / f"{split}_caps.txt"
    if not root.is_dir():
        raise InputError(
            "precomputed-feature folder not found (a small synthetic one for trying things: "
            f'python -c "from modgap.train import write_toy_precomp; '
            f"write_toy_precomp('{root}')\")",
            str(root),
        )
    for p in (ims, caps):
        if not p.exists():
            raise InputError(
                f"missing file for split '{split}' (the VSE precomp layout needs "
                f"{split}_ims.npy and {split}_caps.txt)",
                str(p),
            )
    return ims, caps


def _read_captions(path: Path) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]


def precomp_shapes(root: str | os.PathLike, split: str) -> tuple[tuple[int, ...], int]:
    """``(image array shape, caption count)`` without loading the features (for validation)."""
    ims, caps = _precomp_files(Path(root), split)
    try:
        shape = np.load(ims, mmap_mode="r", allow_pickle=False).shape
    except ValueError as e:
        raise InputError(f"cannot read image features ({e})", str(ims)) from None
    return tuple(shape), len(_read_captions(caps))


def load_precomp(
    root: str | os.PathLike,
    split: str,
    vocab: Vocabulary | None = None,
    captions_per_image: int = 5,
) -> MatchingData:
    """Read one split of the VSE/SCAN layout; captions become word ids through ``vocab``.

    Without ``vocab`` a vocabulary is built from this split's captions (do that on the training
    split and pass it to the others). The returned data's ``metadata["vocab"]`` holds it.
    """
    root = Path(root)
    ims_path, caps_path = _precomp_files(root, split)
    try:
        ims = np.load(ims_path, mmap_mode="r", allow_pickle=False)
    except ValueError as e:
        raise InputError(f"cannot read image features ({e})", str(ims_path)) from None
    if ims.ndim not in (2, 3) or not np.issubdtype(ims.dtype, np.floating):
        raise InputError(
            f"image features must be float (n, d) or (n, regions, d), got {ims.dtype} "
            f"{tuple(ims.shape)}",
            str(ims_path),
        )
    caps = _read_captions(caps_path)
    n_i, n_t = ims.shape[0], len(caps)
    if n_t != n_i * captions_per_image:
        raise InputError(
            f"{n_t} captions for {n_i} images in {ims_path.name}; the layout needs exactly "
            f"{captions_per_image} per image ({n_i * captions_per_image})",
            str(caps_path),
        )
    if vocab is None:
        vocab = Vocabulary.build(caps)
    ids, lengths = vocab.encode(caps)
    return MatchingData(
        images=ims,
        texts=ids,
        text_to_image=np.arange(n_t, dtype=np.int64) // captions_per_image,
        text_lengths=lengths,
        captions=caps,
        source=str(root / split),
        metadata={"vocab": vocab},
    )


def write_toy_precomp(
    root: str | os.PathLike,
    n_images: dict[str, int] | None = None,
    regions: int = 6,
    dim: int = 32,
    captions_per_image: int = 5,
    seed: int = 0,
) -> Path:
    """Write a small synthetic dataset in the VSE precomp layout (tests and the example config).

    Each image draws 3 of 12 "concepts"; its region features are noisy concept vectors, and its
    captions name those concepts (in shuffled order, with filler words). Retrieval is learnable
    but not trivial.
    """
    from ..files import atomic_path

    n_images = n_images or {"train": 200, "dev": 40, "test": 40}
    rng = np.random.default_rng(seed)
    words = "dog cat car tree boat horse pizza clock chair bench kite train".split()
    fillers = "a the with and near on of some".split()
    proto = rng.standard_normal((len(words), dim)).astype(np.float32)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for split, n in n_images.items():
        ims = np.empty((n, regions, dim), dtype=np.float32)
        caps = []
        for i in range(n):
            concepts = rng.choice(len(words), size=3, replace=False)
            which = rng.integers(0, 3, size=regions)
            ims[i] = proto[concepts[which]] + 0.5 * rng.standard_normal((regions, dim))
            for _ in range(captions_per_image):
                named = rng.permutation(concepts)[: rng.integers(2, 4)]
                toks = [w for c in named for w in (rng.choice(fillers), words[c])]
                caps.append(" ".join(toks))
        with atomic_path(root / f"{split}_ims.npy", ".npy") as tmp:
            np.save(tmp, ims)
        with atomic_path(root / f"{split}_caps.txt") as tmp:
            tmp.write_text("\n".join(caps) + "\n", encoding="utf-8")
    return root


# -- feature files (two towers, unequal widths) ---------------------------------------------

FEATURE_KEYS = ("image_features", "text_features")


def load_features(path: str | os.PathLike) -> MatchingData:
    """Read a ``.npz`` of frozen-tower features whose widths may differ (LiT-style heads).

    Keys: ``image_features`` (n_i, d_i) or (n_i, r, d_i), ``text_features`` (n_t, d_t) or
    (n_t, L, d_t) with ``text_lengths`` (n_t,); optional ``text_to_image`` (n_t,) (row i ↔ row i
    when absent), ``labels`` (n_i,), ``class_names`` (c,), ``class_text_features`` (c, d_t) or
    (c, templates, d_t). Written by :func:`write_features`.
    """
    path = Path(path)
    if not path.exists():
        raise InputError("no such file", str(path))
    try:
        z = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as e:
        raise InputError(f"cannot read features .npz ({e})", str(path)) from None
    with z:
        missing = [k for k in FEATURE_KEYS if k not in z.files]
        if missing:
            raise InputError(
                f"missing key(s) {', '.join(missing)} (found: {', '.join(z.files) or 'none'})",
                str(path),
            )
        f = {k: z[k] for k in z.files}
    for k in ("image_features", "text_features", "class_text_features"):
        if k in f and (not np.issubdtype(f[k].dtype, np.floating) or not np.isfinite(f[k]).all()):
            raise InputError(f"'{k}' must be finite floats", str(path))
    n_i, n_t = f["image_features"].shape[0], f["text_features"].shape[0]
    t2i = f.get("text_to_image")
    if t2i is None:
        if n_i != n_t:
            raise InputError(
                f"{n_i} images but {n_t} texts and no 'text_to_image' to pair them", str(path)
            )
        t2i = np.arange(n_t)
    cte = f.get("class_text_features")
    d_t = f["text_features"].shape[-1]
    if cte is not None and cte.shape[-1] != d_t:
        raise InputError(
            f"'class_text_features' have width {cte.shape[-1]} but 'text_features' {d_t}",
            str(path),
        )
    names = f.get("class_names")
    return MatchingData(
        images=f["image_features"].astype(np.float32, copy=False),
        texts=f["text_features"].astype(np.float32, copy=False),
        text_to_image=t2i,
        text_lengths=f.get("text_lengths"),
        labels=None if f.get("labels") is None else f["labels"].astype(np.int64),
        class_texts=cte,
        class_names=None if names is None else [str(x) for x in names],
        source=str(path),
    )


def write_features(path: str | os.PathLike, **arrays: np.ndarray) -> Path:
    """Write a features ``.npz`` (keys as in :func:`load_features`) atomically."""
    from ..files import atomic_path

    unknown = set(arrays) - {
        *FEATURE_KEYS,
        "text_lengths",
        "text_to_image",
        "labels",
        "class_names",
        "class_text_features",
    }
    if unknown:
        raise ModgapError(f"unknown feature keys: {', '.join(sorted(unknown))}")
    path = Path(path)
    with atomic_path(path, ".npz") as tmp:
        np.savez(tmp, **{k: np.asarray(v) for k, v in arrays.items()})
    return path


# -- EmbeddingSets ----------------------------------------------------------------------------


def from_embedding_set(emb) -> MatchingData:
    """:class:`~modgap.embeddings.EmbeddingSet` -> :class:`MatchingData` (global features both
    sides; class prompts kept for zero-shot evaluation)."""
    if not emb.has_pairs:
        raise InputError(
            "training needs image-text pairs; the embedding set has none (give text_to_image)",
            emb.source,
        )
    return MatchingData(
        images=emb.image_emb,
        texts=emb.text_emb,
        text_to_image=emb.text_to_image,
        labels=emb.labels,
        class_texts=emb.class_text_emb,
        class_names=emb.class_names,
        captions=emb.texts,
        source=emb.source,
    )


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
