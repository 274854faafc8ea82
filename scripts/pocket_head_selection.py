"""Choose the pocket model's head shape on a validation split of the training images.

Trains heads on the first 16,000 Fashion-MNIST training images and scores zero-shot accuracy on
images 16,000-20,000 (never on the test split). Needs the tower features that
``scripts/train_pocket.py`` caches (run it first). Prints one line per configuration.

    .venv/bin/python scripts/pocket_head_selection.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "scripts"))

from train_pocket import fit_heads, score_heads  # noqa: E402

from modgap.datasets.captions import (  # noqa: E402
    caption_vocabulary,
    class_prompts,
    image_tones,
)
from modgap.datasets.fashion_mnist import load_fashion_mnist  # noqa: E402
from modgap.encoders.cache import digest  # noqa: E402
from modgap.encoders.pocket import PocketHeads, PocketTowers  # noqa: E402

# (image hidden width or None for linear, text hidden width or None, epochs)
CONFIGS = [(None, None, 12), (512, None, 12), (512, 256, 12), (512, None, 24)]


def main() -> None:
    torch.set_num_threads(2)
    towers = PocketTowers(64, torch.device("cpu"))
    x, y = load_fashion_mnist("train", limit=20000)
    f = towers.image_features(x, cache_key=digest("fashion-mnist", x))
    vocab, prompts = caption_vocabulary(), class_prompts()
    f_vocab = torch.from_numpy(towers.text_features(vocab.texts, cache=True))
    f_prompts = towers.text_features([p for ps in prompts for p in ps], cache=True)
    tones = image_tones(x)
    tr, va = slice(0, 16000), slice(16000, 20000)
    for image_hidden, text_hidden, epochs in CONFIGS:
        t0 = time.time()
        torch.manual_seed(0)
        heads = PocketHeads(image_hidden=image_hidden, text_hidden=text_hidden)
        fit_heads(
            heads,
            torch.from_numpy(f[tr]),
            f_vocab,
            y[tr],
            tones[tr],
            vocab,
            epochs=epochs,
            batch_size=1024,
            lr=1e-3,
            weight_decay=0.05,
            seed=0,
        )
        scores = score_heads(heads, f[va], y[va], tones[va], f_vocab, f_prompts, vocab, 0)
        print(
            f"image_hidden={image_hidden} text_hidden={text_hidden} epochs={epochs}: "
            f"val acc1 {scores['zero_shot_acc1']:.4f}  "
            f"centroid gap {scores['centroid_gap']:.3f}  ({time.time() - t0:.0f}s)",
            flush=True,
        )


if __name__ == "__main__":
    main()
