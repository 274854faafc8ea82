"""The VSE/SCAN precomputed-feature layout (Faghri et al. 2018; Lee et al. 2018): a folder with
``{split}_ims.npy`` (``(n, d)`` or ``(n, regions, d)`` features) and ``{split}_caps.txt`` (one
caption a line, ``captions_per_image`` consecutive lines per image: image ``i`` has captions
``c·i … c·i + c − 1``). Captions become word ids through a :class:`Vocabulary`; the result is a
:class:`~modgap.embeddings.FeatureSet` for training."""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from ..embeddings import FeatureSet
from ..errors import InputError
from ..files import atomic_path
from ._errors import check_input_path, reading
from .npy import load_npy

__all__ = [
    "Vocabulary",
    "load_precomp",
    "tokenize",
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
    check_input_path(path)
    with reading(str(path), "captions file"), open(path, encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]


def load_precomp(
    root: str | os.PathLike,
    split: str,
    vocab: Vocabulary | None = None,
    captions_per_image: int = 5,
) -> FeatureSet:
    """Read one split of the VSE/SCAN layout; captions become word ids through ``vocab``.

    Without ``vocab`` a vocabulary is built from this split's captions (do that on the training
    split and pass it to the others). The returned data's ``metadata["vocab"]`` holds it.
    """
    root = Path(root)
    ims_path, caps_path = _precomp_files(root, split)
    ims = load_npy(ims_path)
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
    return FeatureSet(
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
