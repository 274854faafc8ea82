"""Time and peak memory of the gap measures, next to dense baselines measured in the same run.

Each case runs in a fresh subprocess so that its peak resident memory (``ru_maxrss``, which sees
torch allocations too) is its own. Prints one JSON document; ``--out FILE`` also writes it.

    nice .venv/bin/python benchmarks/bench_measures.py --out bench_measures.json

Cases (n pairs x d dims, random unit vectors shaped like CLIP's, see clip_like_pairs):
  measure_all            every measure through modgap.measures.measure_all, n = 50,000
  measure_all_floor      the matrix products measure_all needs, n = 50,000: the mixed
                         neighbours' (2n)^2 scores, hubness's n^2 both ways, uniformity's three
                         10,000^2 blocks, in 2048-row float32 blocks written into one buffer
  measure_all_interleaved  measure_all and its floor alternated in one process (A B A B ...,
                         --rounds times): medians and the median ratio measure_all / floor
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


def matmul_floor(X: np.ndarray, Y: np.ndarray, block: int = 2048) -> dict:
    """The float32 matrix products of measure_all, blocked into one reused output buffer:
    every row of [X; Y] against every row (neighbours), X against Y and Y against X (hubness),
    and the three uniformity blocks of at most DEFAULT_UNIFORMITY_SAMPLES rows."""
    import torch

    from modgap.measures.alignment import DEFAULT_UNIFORMITY_SAMPLES

    Xt, Yt = torch.from_numpy(X), torch.from_numpy(Y)
    Z = torch.cat([Xt, Yt])
    s = min(X.shape[0], DEFAULT_UNIFORMITY_SAMPLES)
    pairs = [(Z, Z), (Xt, Yt), (Yt, Xt), (Xt[:s], Xt[:s]), (Yt[:s], Yt[:s]), (Xt[:s], Yt[:s])]
    out = torch.empty(block * block)
    for Q, C in pairs:
        for a in range(0, Q.shape[0], block):
            q = Q[a : a + block]
            for c in range(0, C.shape[0], block):
                k = C[c : c + block]
                torch.mm(q, k.T, out=out[: q.shape[0] * k.shape[0]].view(q.shape[0], -1))
    return {}


def interleaved(emb, X: np.ndarray, Y: np.ndarray, rounds: int) -> dict:
    """measure_all and its matmul floor alternated in this process, ``rounds`` times each."""
    import statistics

    from modgap.measures import measure_all

    times: dict[str, list[float]] = {"measure_all": [], "floor": []}
    for _ in range(rounds):
        for name, fn in (("measure_all", lambda: measure_all(emb)), ("floor", None)):
            t0 = time.perf_counter()
            fn() if fn is not None else matmul_floor(X, Y)
            times[name].append(time.perf_counter() - t0)
    ratios = [a / b for a, b in zip(times["measure_all"], times["floor"], strict=True)]
    return {
        "times_s": times,
        "median_s": {k: statistics.median(v) for k, v in times.items()},
        "ours_over_floor_median": statistics.median(ratios),
    }


def run_case(case: str, n: int, d: int, rounds: int = 3) -> dict:
    """Inside the subprocess: build the data, run one case, report time and peak RSS."""
    import torch

    from modgap.embeddings import EmbeddingSet
    from modgap.measures import measure_all, mixed_neighbour_diagnostics, relative_modality_gap

    X, Y = clip_like_pairs(n, d)
    emb = EmbeddingSet(X, Y) if case.startswith("measure_all") else None
    extra = {}
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    if case == "measure_all":
        result = measure_all(emb)
        result = {k: result[k] for k in ("centroid_gap", "rmg", "itr", "tir", "tmr", "imr")}
    elif case == "measure_all_floor":
        result = matmul_floor(X, Y)
    elif case == "measure_all_interleaved":
        extra = interleaved(emb, X, Y, rounds)
        result = {}
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
        **extra,
    }


CASES = [
    ("measure_all", 50_000),
    ("measure_all_floor", 50_000),
    ("measure_all_interleaved", 50_000),
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
    parser.add_argument("--rounds", type=int, default=3, help="A B rounds of the interleaved case")
    parser.add_argument("--only", help="comma-separated cases to run (default: all)")
    args = parser.parse_args()
    if args.case:  # child
        print(json.dumps(run_case(args.case, args.n, args.d, args.rounds)))
        return
    rows = []
    only = None if args.only is None else set(args.only.split(","))
    for case, n in CASES:
        if only is not None and case not in only:
            continue
        n = max(10, int(n * args.scale))
        cmd = [sys.executable, __file__, "--case", case, "--n", str(n), "--d", str(args.d)]
        proc = subprocess.run(
            [*cmd, "--rounds", str(args.rounds)],
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
