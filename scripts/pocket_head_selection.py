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

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "scripts"))

from train_pocket import info_nce, zero_shot_acc1  # noqa: E402

from modgap.datasets.captions import (  # noqa: E402
    caption_vocabulary,
    class_prompts,
    image_tones,
    sample_captions,
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
        fi = torch.from_numpy(f[tr])
        heads.image.set_standardisation(fi)
        heads.text.set_standardisation(f_vocab)
        opt = torch.optim.AdamW(heads.parameters(), lr=1e-3, weight_decay=0.05)
        steps = int(np.ceil(len(fi) / 1024))
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=1e-3, total_steps=epochs * steps, pct_start=0.1
        )
        rng = np.random.default_rng(0)
        for _ in range(epochs):
            order = rng.permutation(len(fi))
            caps = sample_captions(y[tr], tones[tr], vocab, rng)
            for s in range(0, len(order), 1024):
                rows = order[s : s + 1024]
                zi = F.normalize(heads.image(fi[rows]), dim=-1)
                zt = F.normalize(heads.text(f_vocab[caps[rows]]), dim=-1)
                loss = info_nce(zi, zt, heads.logit_scale)
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
                with torch.no_grad():
                    heads.logit_scale.clamp_(0, float(np.log(100)))
        with torch.no_grad():
            zi = F.normalize(heads.image(torch.from_numpy(f[va])), dim=-1).numpy()
            zp = F.normalize(heads.text(torch.from_numpy(f_prompts)), dim=-1).numpy()
            zv = F.normalize(heads.text(f_vocab), dim=-1).numpy()
        caps = sample_captions(y[va], tones[va], vocab, 0)
        gap = float(np.linalg.norm(zi.mean(0) - zv[caps].mean(0)))
        acc = zero_shot_acc1(zi, y[va], zp.reshape(len(prompts), -1, zp.shape[1]))
        print(
            f"image_hidden={image_hidden} text_hidden={text_hidden} epochs={epochs}: "
            f"val acc1 {acc:.4f}  centroid gap {gap:.3f}  ({time.time() - t0:.0f}s)",
            flush=True,
        )


if __name__ == "__main__":
    main()
