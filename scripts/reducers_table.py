"""Regenerate the reducer tables of docs/reducers.md from the shared COCO-500 CLIP file.

For every registered reducer (default parameters, plus a few documented variants) it reports the
centroid gap, the relative modality gap (RMG), the mixed-neighbour ratios ITR / TIR and paired
image->text / text->image R@1:

- **transductive**: fit on all 500 pairs and transform the same points (as Fill the Gap does);
- **held-out**: fit on 250 images (split by image, seed 0) and transform the other 250, which
  only an out-of-sample map can do and which exposes over-fitting (Procrustes with d = 512 > n).

Usage::

    python scripts/reducers_table.py [--data PATH]      # prints the JSON

``python scripts/docs_tables.py produce reducers-coco500`` stores it in ``docs/data`` and renders
the tables of docs/reducers.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = (
    Path(os.environ.get("MODGAP_SHARED_DATA", ROOT.parent / "shared/data/real"))
    / "coco500_clip_vitb16.npz"
)

# (label, registry name, parameters); defaults first, then variants the docs discuss
ROWS = [
    ("none (raw CLIP)", None, {}),
    ("center", "center", {}),
    ("shift (λ=1)", "shift", {}),
    ("gaussian", "gaussian", {}),
    ("gaussian, barycenter", "gaussian", {"direction": "barycenter"}),
    ("gaussian, ridge=0.01", "gaussian", {"ridge": 0.01}),
    ("procrustes", "procrustes", {}),
    ("spectral", "spectral", {}),
    ("spectral, 120 components", "spectral", {"n_components": 120}),
    ("spectral, 100 neighbours", "spectral", {"n_neighbors": 100}),
    ("spectral, dense graph", "spectral", {"n_neighbors": None}),
    ("ot-laplace", "ot-laplace", {}),
    ("ot-laplace, barycenter", "ot-laplace", {"direction": "barycenter"}),
    ("ot-sinkhorn", "ot-sinkhorn", {}),
    ("ot-sinkhorn, images->texts", "ot-sinkhorn", {"direction": "images->texts"}),
]


def metrics(X: np.ndarray, Y: np.ndarray) -> dict:
    from modgap.measures import centroid_gap, mixed_neighbour_diagnostics, relative_modality_gap
    from modgap.tasks.retrieval import retrieval_metrics

    mix = mixed_neighbour_diagnostics(X, Y)
    ret = retrieval_metrics(X, Y, ks=(1,))
    return {
        "centroid_gap": centroid_gap(X, Y)["centroid_gap"],
        "rmg": relative_modality_gap(X, Y),
        "itr": mix["itr"],
        "tir": mix["tir"],
        "i2t_r1": ret["text_retrieval_recall@1"],
        "t2i_r1": ret["image_retrieval_recall@1"],
    }


def run_row(name, params, X, Y, Xte=None, Yte=None) -> tuple[dict, float]:
    from modgap._array import l2_normalize
    from modgap.reducers import get_reducer

    if name is None:
        A, B = (X, Y) if Xte is None else (Xte, Yte)
        return metrics(A, B), 0.0
    t0 = time.perf_counter()
    r = get_reducer(name, **params)
    if Xte is None:
        A, B = r.fit_transform(X, Y)
    else:
        r.fit(X, Y)
        A, B = r.transform_images(Xte), r.transform_texts(Yte)
    seconds = time.perf_counter() - t0
    # measures work on unit rows; reducers with normalize=False would be re-normalised there too
    return metrics(l2_normalize(A), l2_normalize(B)), seconds


def build_data(data: Path) -> dict:
    """Both protocols for every row of :data:`ROWS`, as JSON-able data, on one torch and BLAS
    thread (500 points: thread pools cost more than they give; the caller's come back)."""
    from modgap.compute import limit_threads

    with limit_threads(1):
        return _build_data(data)


def _build_data(data: Path) -> dict:
    import torch

    from modgap.embeddings import EmbeddingSet

    torch.manual_seed(0)
    z = np.load(data, allow_pickle=False)
    emb = EmbeddingSet(z["image_emb"], z["text_emb"])
    fit_set, test_set = emb.split(0.5, seed=0)
    trans, held = [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for label, name, params in ROWS:
            m, s = run_row(name, params, emb.image_emb, emb.text_emb)
            trans.append({"label": label, "reducer": name, "params": params, **m, "seconds": s})
            m, s = run_row(
                name,
                params,
                fit_set.image_emb,
                fit_set.text_emb,
                test_set.image_emb,
                test_set.text_emb,
            )
            held.append({"label": label, "reducer": name, "params": params, **m, "seconds": s})
            print(f"done: {label}", file=sys.stderr, flush=True)
    return {
        "data": data.name,
        "n_pairs": emb.n_images,
        "dim": emb.dim,
        "fit_images": fit_set.n_images,
        "test_images": test_set.n_images,
        "split_seed": 0,
        "transductive": trans,
        "heldout": held,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = ap.parse_args(argv)
    if not args.data.exists():
        print(f"error: {args.data}: not found (set MODGAP_SHARED_DATA)", file=sys.stderr)
        return 2
    from modgap.provenance import jsonable

    print(json.dumps(jsonable(build_data(args.data)), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
