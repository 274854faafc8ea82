"""Design choices of the pocket model, measured on training images only (never the test split).

* **Resolution**: a logistic-regression probe on image-tower features (2,000 training images to
  fit, the next 1,000 to score) at 64 px, 64 px with grey levels inverted, and 96 px, with the
  tower time of each relative to 64 px.
* **Head shape**: heads trained on the first 16,000 Fashion-MNIST training images and scored by
  zero-shot accuracy on images 16,000-20,000.

Prints JSON; ``python scripts/docs_tables.py produce pocket-design`` stores it in ``docs/data`` and
renders the tables of docs/pocket.md.

    .venv/bin/python scripts/pocket_head_selection.py [--skip-probe]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
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
# (label, image size, invert the grey levels)
PROBES = [("64 px", 64, False), ("64 px, grey levels inverted", 64, True), ("96 px", 96, False)]


def probe(x: np.ndarray, y: np.ndarray) -> list[dict]:
    """Held-out accuracy of a logistic-regression probe on tower features per input variant."""
    from sklearn.linear_model import LogisticRegression

    rows = []
    for label, size, invert in PROBES:
        towers = PocketTowers(size, torch.device("cpu"), cache=False)
        images = 255 - x if invert else x
        towers.image_features(images[:8], progress=False)  # load the tower before timing
        t0 = time.perf_counter()
        f = towers.image_features(images, progress=False)
        seconds = time.perf_counter() - t0
        clf = LogisticRegression(max_iter=2000).fit(f[:2000], y[:2000])
        acc = float(np.mean(clf.predict(f[2000:3000]) == y[2000:3000]))
        rows.append({"input": label, "accuracy": acc, "tower_seconds": seconds})
        print(f"probe {label}: {acc:.3f} ({seconds:.0f} s)", file=sys.stderr, flush=True)
    base = rows[0]["tower_seconds"]
    for r in rows:
        r["relative_cost"] = r["tower_seconds"] / base
    return rows


def heads(x: np.ndarray, y: np.ndarray) -> list[dict]:
    towers = PocketTowers(64, torch.device("cpu"))
    f = towers.image_features(x, cache_key=digest("fashion-mnist", x), progress=False)
    vocab, prompts = caption_vocabulary(), class_prompts()
    f_vocab = torch.from_numpy(towers.text_features(vocab.texts, cache=True))
    f_prompts = towers.text_features([p for ps in prompts for p in ps], cache=True)
    tones = image_tones(x)
    tr, va = slice(0, 16000), slice(16000, 20000)
    rows = []
    for image_hidden, text_hidden, epochs in CONFIGS:
        t0 = time.time()
        torch.manual_seed(0)
        h = PocketHeads(image_hidden=image_hidden, text_hidden=text_hidden)
        fit_heads(
            h,
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
        scores = score_heads(h, f[va], y[va], tones[va], f_vocab, f_prompts, vocab, 0)
        rows.append(
            {
                "image_hidden": image_hidden,
                "text_hidden": text_hidden,
                "epochs": epochs,
                "val_zero_shot_acc1": float(scores["zero_shot_acc1"]),
                "centroid_gap": float(scores["centroid_gap"]),
                "seconds": time.time() - t0,
            }
        )
        print(f"heads {rows[-1]}", file=sys.stderr, flush=True)
    return rows


def _shipped() -> dict:
    """The head shape of the bundled pocket model, from its own record."""
    from importlib.resources import files

    meta = json.loads(files("modgap.data").joinpath("pocket_heads.json").read_text("utf-8"))
    return {k: meta[k] for k in ("image_hidden", "text_hidden")} | {
        "epochs": meta["training"]["epochs"]
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skip-probe", action="store_true", help="only the head shapes")
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    x, y = load_fashion_mnist("train", limit=20000)
    out = {
        "probe": None if args.skip_probe else probe(x[:3000], y[:3000]),
        "heads": heads(x, y),
        "shipped": _shipped(),
    }
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
