"""Time and peak memory of the gap measures, next to dense baselines measured in the same run.

Each case runs in a fresh subprocess so that its peak resident memory (``ru_maxrss``, which sees
torch allocations too) is its own. Prints one JSON document; ``--out FILE`` also writes it.

    nice .venv/bin/python benchmarks/bench_measures.py --out bench_measures.json

Cases (n pairs x d dims, random unit vectors shaped like CLIP's, see clip_like_pairs):
  measure_all            every measure through modgap.measures.measure_all, n = 50,000
  neighbours_blocked     ITR/TIR/TMR/IMR in blocks, n = 50,000 and n = 10,000
  neighbours_dense       the same from the full (2n)^2 similarity matrix, n = 10,000 only
                         (at 50,000 that matrix alone is 4e10 bytes in float32: skipped)
  rmg_sums / rmg_dense   RMG from sums vs from the n^2 Gram matrices, n = 10,000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

import numpy as np


def clip_like_pairs(n: int, d: int, seed: int = 0):
    """Paired unit vectors shaped like CLIP embeddings (compare COCO-500 ViT-B/16): each modality
    sits in its own cone around a mean direction (cosine 0.3 between the two directions), and a
    matched pair shares a semantic part. Before normalisation
    ``x = m_x + sqrt(0.28) s + sqrt(0.60) e_x`` (same ``s`` for its caption ``y``), with
    ``s, e ~ N(0, I/d)``: centroid norms ~0.73, centroid gap ~0.86, matched cosine ~0.31,
    unmatched ~0.16, and every nearest neighbour of its own modality (ITR = TIR = inf)."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((d, 2)))
    m_x = q[:, 0]
    m_y = 0.3 * q[:, 0] + np.sqrt(1 - 0.09) * q[:, 1]
    scale = np.float32(1 / np.sqrt(d))
    s = rng.standard_normal((n, d), dtype=np.float32) * scale * np.float32(np.sqrt(0.28))
    out = []
    for m in (m_x, m_y):
        e = rng.standard_normal((n, d), dtype=np.float32) * scale * np.float32(np.sqrt(0.60))
        e += s
        e += m.astype(np.float32)
        e /= np.linalg.norm(e, axis=1, keepdims=True)
        out.append(e)
    return out[0], out[1]


def dense_neighbours(X: np.ndarray, Y: np.ndarray) -> dict:
    """Baseline: materialise the full similarity matrix of Z = [X; Y] (float32) once."""
    import torch

    from modgap.measures.neighbours import ratio

    n, m = X.shape[0], Y.shape[0]
    Z = torch.from_numpy(np.vstack([X, Y]))
    S = Z @ Z.T
    S.fill_diagonal_(-torch.inf)
    out = {}
    for name, rows, same, other in (
        ("image", slice(0, n), slice(0, n), slice(n, n + m)),
        ("text", slice(n, n + m), slice(n, n + m), slice(0, n)),
    ):
        best_other = S[rows, other].max(dim=1).values
        best_same = S[rows, same].max(dim=1).values
        k = int((best_same > best_other).sum())
        ahead = (S[rows, same] > best_other[:, None]).sum(dim=1)
        out[name] = (k, rows.stop - rows.start - k, float((ahead + 1).double().mean()))
    return {
        "itr": ratio(*out["image"][:2]),
        "tir": ratio(*out["text"][:2]),
        "tmr": out["image"][2],
        "imr": out["text"][2],
    }


def dense_rmg(X: np.ndarray, Y: np.ndarray) -> float:
    """Baseline: RMG from the n x n Gram matrices."""
    X64, Y64 = X.astype(np.float64), Y.astype(np.float64)
    n = X.shape[0]
    off = ~np.eye(n, dtype=bool)
    d_i = ((1 - X64 @ X64.T)[off] / 2).mean()
    d_t = ((1 - Y64 @ Y64.T)[off] / 2).mean()
    d_m = ((1 - np.einsum("ij,ij->i", X64, Y64)) / 2).mean()
    return float(d_m / (d_m + (d_i + d_t) / 2))


def run_case(case: str, n: int, d: int) -> dict:
    """Inside the subprocess: build the data, run one case, report time and peak RSS."""
    import torch

    from modgap.embeddings import EmbeddingSet
    from modgap.measures import measure_all, mixed_neighbour_diagnostics, relative_modality_gap

    X, Y = clip_like_pairs(n, d)
    emb = EmbeddingSet(X, Y) if case == "measure_all" else None
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    if case == "measure_all":
        result = measure_all(emb)
        result = {k: result[k] for k in ("centroid_gap", "rmg", "itr", "tir", "tmr", "imr")}
    elif case == "neighbours_blocked":
        result = mixed_neighbour_diagnostics(X, Y)
    elif case == "neighbours_dense":
        result = dense_neighbours(X, Y)
    elif case == "rmg_sums":
        result = {"rmg": relative_modality_gap(X, Y)}
    elif case == "rmg_dense":
        result = {"rmg": dense_rmg(X, Y)}
    else:
        raise SystemExit(f"unknown case {case}")
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "case": case,
        "n_pairs": n,
        "dim": d,
        "time_s": round(seconds, 3),
        "peak_rss_mb": round(peak, 1),
        "rss_before_mb": round(rss_before, 1),
        "torch_threads": torch.get_num_threads(),
        "result": {k: (v if np.isfinite(v) else str(v)) for k, v in result.items()},
    }


CASES = [
    ("measure_all", 50_000),
    ("neighbours_blocked", 50_000),
    ("neighbours_blocked", 10_000),
    ("neighbours_dense", 10_000),
    ("rmg_sums", 10_000),
    ("rmg_dense", 10_000),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case")
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--d", type=int, default=512)
    parser.add_argument("--out")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every n (smoke runs)")
    args = parser.parse_args()
    if args.case:  # child
        print(json.dumps(run_case(args.case, args.n, args.d)))
        return
    rows = []
    for case, n in CASES:
        n = max(10, int(n * args.scale))
        proc = subprocess.run(
            [sys.executable, __file__, "--case", case, "--n", str(n), "--d", str(args.d)],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            rows.append({"case": case, "n_pairs": n, "error": proc.stderr.strip()[-500:]})
        else:
            rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), file=sys.stderr)
    rows.append(
        {
            "case": "neighbours_dense",
            "n_pairs": int(50_000 * args.scale),
            "dim": args.d,
            "skipped": "the dense route holds the (2n)^2 similarity matrix: "
            f"{(2 * 50_000 * args.scale) ** 2 * 4 / 1e9:.0f} GB in float32",
        }
    )
    doc = {
        "benchmark": "bench_measures",
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_avg_at_end": os.getloadavg(),
        },
        "note": "peak_rss_mb is the whole process (python, numpy, torch, the data); "
        "rss_before_mb is after imports and data generation",
        "cases": rows,
    }
    text = json.dumps(doc, indent=2)
    print(text)
    if args.out:
        from modgap.files import atomic_path

        with atomic_path(args.out, ".json") as tmp:
            tmp.write_text(text + "\n")


if __name__ == "__main__":
    main()
