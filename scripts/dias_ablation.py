"""DIAS ablation: matching loss alone vs + L_dim vs + spatial constraints vs + sparse mask vs
full DIAS, several seeds, on the real data available offline. Writes JSON and a markdown table.

    nice -n 10 .venv/bin/python scripts/dias_ablation.py --dataset coco500
    nice -n 10 .venv/bin/python scripts/dias_ablation.py --dataset fmnist
    .venv/bin/python scripts/dias_ablation.py --dataset fmnist --features-only   # feature files

Datasets
--------
coco500, coco500-scratch
    Frozen CLIP ViT-B/16 embeddings of 500 COCO val2017 pairs (../shared/data/real), heads-only
    (linear heads started at the identity). 5-fold cross-validation by image: each fold tests
    on 100 images, validates (best epoch, weight selection) on 50 of the other 400 and trains
    on the remaining 350. Instance-level retrieval (one caption per image). ``coco500-scratch``
    trains new randomly initialised 256-d heads on the same folds instead.
fmnist
    The pocket model's frozen towers (EfficientNet-Lite0 1280-d, MiniLM 384-d) on Fashion-MNIST:
    new heads (image MLP, text linear) into 256-d. Features of the first 20000 training images;
    1000 of them (seeded) are held out for validation and the heads train on 10000 of the rest;
    report on the 10000 test images. Captions are
    generated from the class (and a tone), so retrieval uses class-level relevance; zero-shot
    accuracy uses the class prompts.

The loss weights of the DIAS rows are picked first by a small grid on validation rSum (seed 0,
fold 0 / the validation split), never on test numbers.
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import torch  # noqa: E402

from modgap.train import config_from_dict  # noqa: E402
from modgap.train.trainer import Trainer  # noqa: E402

COCO500 = ROOT.parent / "shared/data/real/coco500_clip_vitb16.npz"
FEATURES = ROOT / "out/features"

# the five rows of the ablation: (name, uses L_dim, uses spatial terms, mask rule)
VARIANTS = (
    ("baseline (matching only)", False, False, None),
    ("+ L_dim", True, False, None),
    ("+ spatial (dense)", False, True, "none"),
    ("+ spatial + sparse mask", False, True, "mean_std"),
    ("full DIAS", True, True, "mean_std"),
)


def base_config(dataset: str, seed: int, fold: int, epochs: int | None) -> dict:
    if dataset == "coco500-scratch":
        # the same frozen CLIP features, but new randomly initialised 256-d heads: a matching
        # model learnt from 350 pairs, where a regulariser has more room to matter
        cfg = base_config("coco500", seed, fold, epochs)
        cfg["name"] = dataset
        cfg["model"] = {"joint_dim": 256, "identity_init": False}
        cfg["loss"]["warmup_epochs"] = 2
        cfg["optim"].update({"epochs": epochs or 30, "lr": 5e-4, "warmup_steps": 10})
        return cfg
    if dataset == "coco500":
        return {
            "name": "coco500",
            "seed": seed,
            "threads": 1,
            "data": {
                "format": "embeddings",
                "path": str(COCO500),
                "folds": 5,
                "fold": fold,
                "val": 50,
                "split_seed": 0,
            },
            "model": {"joint_dim": 512, "identity_init": True},
            "loss": {"matching": "triplet", "margin": 0.2, "max_violation": True},
            "optim": {
                "epochs": epochs or 10,
                "batch_size": 64,
                "lr": 1e-4,
                "warmup_steps": 5,
                "schedule": "cosine",
            },
            "eval": {"relevance": "instance", "measures": ["centroid_gap", "rmg"]},
        }
    return {
        "name": "fmnist",
        "seed": seed,
        "threads": 1,
        "data": {
            "format": "features",
            "path": str(FEATURES / "fmnist_pocket_train.npz"),
            "test_path": str(FEATURES / "fmnist_pocket_test.npz"),
            "val": 1000,
            "split_seed": 0,
            "max_train_images": 10000,  # keeps the 22 runs of the ablation at ~20 CPU minutes
        },
        "model": {"joint_dim": 256, "image_head": "mlp", "text_head": "linear"},
        "loss": {"matching": "infonce", "temperature": 0.07},
        "optim": {
            "epochs": epochs or 8,
            "batch_size": 256,
            "lr": 1e-3,
            "weight_decay": 0.05,
            "warmup_steps": 20,
            "schedule": "cosine",
        },
        "eval": {"relevance": "class", "measures": ["centroid_gap", "rmg"]},
    }


def with_terms(cfg: dict, alpha: float, beta: float, gamma: float, rule: str | None) -> dict:
    cfg = json.loads(json.dumps(cfg))
    cfg["loss"].update({"alpha": alpha, "beta": beta, "gamma": gamma})
    if rule is not None:
        cfg["loss"]["mask_rule"] = rule
    return cfg


def run(cfg: dict, split: str = "test") -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="dias-ablation-"))
    try:
        res = Trainer(config_from_dict(cfg), out_dir=tmp, progress=False).fit()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"val": res["val"], "test": res["test"], "best_epoch": res["best_epoch"]}


# -- Fashion-MNIST tower features ---------------------------------------------------------------


def fmnist_features(train_limit: int = 20000, image_size: int = 64) -> None:
    """Write out/features/fmnist_pocket_{train,test}.npz from the pocket towers (cached: the
    same cache keys as scripts/train_pocket.py, so its features are reused)."""
    from modgap.datasets.captions import (
        caption_vocabulary,
        class_prompts,
        image_tones,
        sample_captions,
    )
    from modgap.datasets.fashion_mnist import CLASS_NAMES, load_fashion_mnist
    from modgap.encoders.cache import digest
    from modgap.encoders.pocket import PocketTowers
    from modgap.io.features import write_features

    towers = PocketTowers(image_size, torch.device("cpu"))
    vocab = caption_vocabulary()
    prompts = class_prompts()
    f_vocab = towers.text_features(vocab.texts, cache=True)
    f_prompts = towers.text_features([p for ps in prompts for p in ps], cache=True)
    f_prompts = f_prompts.reshape(len(prompts), len(prompts[0]), -1)
    for split, limit in (("train", train_limit), ("test", None)):
        x, y = load_fashion_mnist(split, limit=limit)
        feats = towers.image_features(x, cache_key=digest("fashion-mnist", x))
        # one caption per image, drawn once with a fixed seed (the split's captions are data)
        caps = sample_captions(y, image_tones(x), vocab, rng=0 if split == "train" else 1)
        write_features(
            FEATURES / f"fmnist_pocket_{split}.npz",
            image_features=feats,
            text_features=f_vocab[caps],
            labels=y,
            class_names=np.asarray(CLASS_NAMES),
            class_text_features=f_prompts,
        )
        print(f"wrote {FEATURES / f'fmnist_pocket_{split}.npz'} ({len(y)} images)", flush=True)


# -- the ablation -----------------------------------------------------------------------------


def grid(dataset: str, epochs: int | None) -> dict:
    """Pick alpha (L_dim) and beta = gamma (spatial, sparse mask) on validation rSum, seed 0
    (coco500: mean over the 5 folds' validation images, 250 in all; fmnist: its validation
    split). Ties go to the smaller weight."""
    coco = dataset.startswith("coco500")
    folds = range(5) if coco else range(1)
    alphas = (0.001, 0.01, 0.1) if coco else (0.0005, 0.005, 0.05)
    betas = (1.0, 10.0, 100.0, 1000.0) if coco else (1.0, 10.0, 100.0)

    def val(a: float, b: float) -> float:
        vals = []
        for fold in folds:
            cfg = with_terms(base_config(dataset, 0, fold, epochs), a, b, b, "mean_std")
            vals.append(run(cfg)["val"]["rsum"])
        return float(np.mean(vals))

    scores: dict = {"baseline": val(0, 0), "alpha": {}, "beta": {}}
    print(f"grid {dataset} baseline: val rSum {scores['baseline']:.2f}", flush=True)
    for a in alphas:
        scores["alpha"][a] = val(a, 0)
        print(f"grid {dataset} alpha={a}: val rSum {scores['alpha'][a]:.2f}", flush=True)
    for b in betas:
        scores["beta"][b] = val(0, b)
        print(f"grid {dataset} beta=gamma={b}: val rSum {scores['beta'][b]:.2f}", flush=True)
    best_a = max(alphas, key=lambda a: (scores["alpha"][a], -a))
    best_b = max(betas, key=lambda b: (scores["beta"][b], -b))
    return {"alpha": best_a, "beta": best_b, "gamma": best_b, "val_rsum": scores}


def interval_ratio(report: dict) -> float:
    """Evaluated / trained rows of one run, Nadeau & Bengio's correction for runs that share
    training data: the coco500 folds test 100 images and train on 350; fmnist is one split whose
    runs differ by seed only (0: a plain t interval over the seeds)."""
    return 100 / 350 if report["folds"] > 1 else 0.0


def mean_ci(values, ratio: float) -> tuple[float, float]:
    """``(mean, half-width of the 95% interval)``: the corrected resampled t of the bench
    (:func:`modgap.bench.stats.interval`), the one convention of every ± in the docs."""
    from modgap.bench.stats import interval

    mean, lo, hi = interval([float(v) for v in values], ratio)
    return mean, (hi - lo) / 2 if np.isfinite(lo) else float("nan")


def summarise(rows: list[dict], keys: list[str], ratio: float) -> dict:
    out = {}
    for k in keys:
        vals = [r[k] for r in rows if k in r and r[k] is not None]
        if vals:
            out[k] = mean_ci(vals, ratio)
    return out


def markdown(
    dataset: str, table: dict, keys: list[str], n_runs: int, second: str, ratio: float
) -> str:
    names = {
        "rsum": "rSum",
        "zeroshot_acc1": "zero-shot acc1",
        "class_map_t2i": "mAP t→i",
        "gap_centroid_gap": "centroid gap",
        "gap_rmg": "RMG",
        "delta_rsum": "ΔrSum vs baseline (paired)",
        "delta_second": f"Δ{ {'class_map_t2i': 'mAP t→i'}.get(second, 't→i R@1') } (paired)",
        "image_retrieval_recall@1": "t→i R@1",
        "text_retrieval_recall@1": "i→t R@1",
    }
    lines = [
        "| variant | " + " | ".join(names.get(k, k) for k in keys) + " |",
        "|---|" + "---:|" * len(keys),
    ]
    for variant, stats in table.items():
        cells = []
        for k in keys:
            if k in stats:
                m, s = stats[k]
                pct = "recall" in k or "acc" in k or "map" in k
                scale = 100.0 if pct or (k == "delta_second") else 1.0
                digits = 1 if k in ("rsum", "delta_rsum") or scale == 100.0 else 3
                cells.append(f"{m * scale:.{digits}f} ± {s * scale:.{digits}f}")
            else:
                cells.append("–")
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    how = (
        f"corrected resampled t over {n_runs} runs that share training images (Nadeau & Bengio "
        f"2003, evaluated / trained = {ratio:.3g})"
        if ratio
        else f"t interval over {n_runs} runs on one split (seeds only)"
    )
    lines.append(
        f"\nmean ± half-width of the 95% interval ({how}; {dataset}); test split; recalls, mAP "
        "and accuracy in %. Δ columns: the same for the per-run difference to the baseline run "
        "with the same seed and split."
    )
    wins = {v: s["wins"] for v, s in table.items() if "wins" in s}
    if wins:
        lines.append(
            "Runs better / worse than their baseline: "
            + "; ".join(f"{v}: {int(w[0])} / {int(w[1])}" for v, w in wins.items())
            + "."
        )
    return "\n".join(lines)


def table_keys(dataset: str) -> tuple[list[str], str]:
    """Columns of the table, and the second metric given as a paired difference."""
    if dataset == "fmnist":
        return ["rsum", "class_map_t2i", "zeroshot_acc1", "gap_centroid_gap", "gap_rmg"], (
            "class_map_t2i"
        )
    keys = ["rsum", "image_retrieval_recall@1", "text_retrieval_recall@1"]
    return [*keys, "gap_centroid_gap", "gap_rmg"], "image_retrieval_recall@1"


def render(report: dict) -> str:
    """The markdown table of a report (from its runs: re-rendering needs no training)."""
    dataset, runs, weights = report["dataset"], report["runs"], report["weights"]
    keys, second = table_keys(dataset)
    ratio = interval_ratio(report)
    table = {name: summarise(rows, keys, ratio) for name, rows in runs.items()}
    # paired differences to the baseline (same seed and fold): removes the split-to-split spread
    baseline = {(r["seed"], r["fold"]): r for r in runs[VARIANTS[0][0]]}
    for name, *_ in VARIANTS[1:]:
        for key, label in (("rsum", "delta_rsum"), (second, "delta_second")):
            diffs = np.array([r[key] - baseline[(r["seed"], r["fold"])][key] for r in runs[name]])
            table[name][label] = mean_ci(diffs, ratio)
            if key == "rsum":
                table[name]["wins"] = (float((diffs > 0).sum()), float((diffs < 0).sum()))
    cols = [keys[0], "delta_rsum", keys[1], "delta_second", *keys[2:]]
    n_runs = report["seeds"] * report["folds"]
    md = markdown(dataset, table, cols, n_runs, second, ratio)
    g = weights["val_rsum"]
    md += (
        f"\nWeight grid (validation rSum, seed 0): baseline {g['baseline']:.1f}; "
        + ", ".join(f"α={float(a):g}: {v:.1f}" for a, v in g["alpha"].items())
        + "; "
        + ", ".join(f"β=γ={float(b):g}: {v:.1f}" for b, v in g["beta"].items())
        + f". Chosen: α={weights['alpha']:g}, β=γ={weights['beta']:g}."
    )
    return md


def ablation(dataset: str, seeds: int, epochs: int | None, out: Path) -> dict:
    t0 = time.time()
    weights = grid(dataset, epochs)
    print(f"chosen weights {dataset}: {weights}", flush=True)
    folds = range(5) if dataset.startswith("coco500") else range(1)
    runs: dict = {}
    if dataset == "coco500":
        # reference row: the frozen CLIP space itself (identity heads, no training)
        frozen = []
        for fold in folds:
            cfg = config_from_dict(base_config(dataset, 0, fold, epochs))
            tr = Trainer(cfg, out_dir=Path(tempfile.mkdtemp(prefix="dias-frozen-")), progress=False)
            frozen.append({**tr.score(tr.test_data), "seed": 0, "fold": fold})
            shutil.rmtree(tr.out, ignore_errors=True)
        runs["frozen CLIP (no training)"] = frozen
    for name, dim, spatial, rule in VARIANTS:
        a = weights["alpha"] if dim else 0.0
        b = weights["beta"] if spatial else 0.0
        results = []
        for seed, fold in itertools.product(range(seeds), folds):
            cfg = with_terms(base_config(dataset, seed, fold, epochs), a, b, b, rule)
            r = run(cfg)
            results.append({**r["test"], "seed": seed, "fold": fold, "best_epoch": r["best_epoch"]})
            print(
                f"{dataset} | {name} | seed {seed} fold {fold}: rSum {r['test']['rsum']:.2f}",
                flush=True,
            )
        runs[name] = results
    report = {
        "dataset": dataset,
        "weights": weights,
        "seeds": seeds,
        "folds": len(folds),
        "runs": runs,
        "seconds": time.time() - t0,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "command": " ".join(["scripts/dias_ablation.py", *sys.argv[1:]]),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{dataset}.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    write_table(report, out)
    return report


def write_table(report: dict, out: Path) -> None:
    md = render(report)
    (out / f"{report['dataset']}.md").write_text(md + "\n", encoding="utf-8")
    print(md, flush=True)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--dataset", choices=["coco500", "coco500-scratch", "fmnist", "all"], default="all"
    )
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=None, help="override the epochs")
    p.add_argument("--out", type=Path, default=ROOT / "out/dias_ablation")
    p.add_argument("--features-only", action="store_true", help="only write the fmnist features")
    p.add_argument(
        "--render-only", action="store_true", help="rebuild the tables from the saved JSON"
    )
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    datasets = ["coco500", "coco500-scratch", "fmnist"] if args.dataset == "all" else [args.dataset]
    if args.render_only:
        for d in datasets:
            write_table(json.loads((args.out / f"{d}.json").read_text(encoding="utf-8")), args.out)
        return
    if "fmnist" in datasets and (
        args.features_only or not (FEATURES / "fmnist_pocket_test.npz").exists()
    ):
        fmnist_features()
        if args.features_only:
            return
    for d in datasets:
        ablation(d, args.seeds, args.epochs, args.out)


if __name__ == "__main__":
    main()
