"""Benchmark: blocked retrieval metrics vs the dense route, the floor and a blocked peer.

Data: 5,000 images × 25,000 captions (5 per image) × 512 dims, float32, random with a
signal so recalls are far from 0 and 1. ``--data benchmark`` (default): caption = image +
6 × noise per dimension, images of norm about √d; ``--data crowded``: captions far from their
images (the image a unit vector, caption = image + 1.2 × noise per dimension), so each
positive's score sits among the other scores and many comparisons fall inside the float32
error window of the exact tie rule (``n_window``: how many it recomputes in float64). Each
case runs in a fresh subprocess so its peak resident memory (``ru_maxrss``, the whole process:
torch runtime and data included) is its own:

* ``ours``: :func:`modgap.tasks.retrieval.retrieval_metrics` (K = 1, 5, 10, both ways).
* ``dense``: the CLIP_benchmark ``zeroshot_retrieval`` route: the full text × image score
  matrix, a dense boolean positive mask, and ``recall_at_k`` by top-k + one-hot in batches of
  64 queries, for each K and both directions (``--no-dense`` leaves it out).
* ``matmul``: one float32 ``Y @ Xᵀ`` of the same shape: the hardware floor for any exact method.
* ``floor``: one score matrix and ``torch.topk`` of 10 along both axes (what any top-10
  retrieval both ways needs at least).
* ``blocked``: the memory peer: images and texts query each other by blocked matmuls and row
  ``topk`` of 10 (16 MiB score blocks, as ``faiss.IndexFlatIP`` searches), and ``faiss`` itself
  when ``faiss`` is importable (an optional benchmark dependency, never a runtime one).

``interleaved`` times ours, the floor and the peers in one process, alternating A B A B …
``--repeat`` times, and reports each one's median and the median of the per-round ratios
ours / floor (the machine may be shared: single pairs vary). Times of the subprocess cases are
the best of ``--repeat`` runs. Prints one JSON object. Usage:
``python benchmarks/bench_retrieval.py [--n-images 5000] [--captions 5] [--dim 512]
[--repeat 5] [--data benchmark|crowded] [--no-dense] [--threads N]`` (one thread gives
steadier ratios on a shared machine).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time


def _data(n_images: int, captions: int, dim: int, data: str = "benchmark"):
    import numpy as np

    rng = np.random.default_rng(0)
    X = rng.standard_normal((n_images, dim), dtype=np.float32)
    t2i = np.repeat(np.arange(n_images), captions)
    if data == "crowded":  # unit images, noise 1.2 per dimension: positives among the rest
        X /= np.linalg.norm(X, axis=1, keepdims=True)
    # Y = X[t2i] + noise * N(0, 1), built in place: temporaries of Y's size would count in the
    # peak memory of every case
    Y = rng.standard_normal((t2i.size, dim), dtype=np.float32)
    Y *= np.float32(1.2 if data == "crowded" else 6.0)
    for c in range(captions):  # rows c, c + captions, ... are the captions of images 0, 1, ...
        Y[c::captions] += X
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    Y /= np.linalg.norm(Y, axis=1, keepdims=True)
    return X, Y, t2i


def _dense_clip_benchmark(X, Y, t2i, ks, batch_size=64):
    """CLIP_benchmark's route (zeroshot_retrieval.evaluate + recall_at_k), reproduced."""
    import torch

    def recall_at_k(scores, positive_pairs, k):
        nb_texts, nb_images = scores.shape
        topk_indices = torch.topk(scores, k, dim=1)[1]
        nb_positive = positive_pairs.sum(dim=1)
        onehot = torch.nn.functional.one_hot(topk_indices, num_classes=nb_images)
        nb_true_positive = (onehot * positive_pairs.view(nb_texts, 1, nb_images)).sum(dim=(1, 2))
        return nb_true_positive / nb_positive

    def batchify(func, A, B, k):
        return torch.cat(
            [
                func(A[s : s + batch_size], B[s : s + batch_size], k)
                for s in range(0, len(A), batch_size)
            ]
        )

    images = torch.from_numpy(X)
    texts = torch.from_numpy(Y)
    scores = texts @ images.t()
    positive_pairs = torch.zeros_like(scores, dtype=torch.bool)
    positive_pairs[torch.arange(len(scores)), torch.from_numpy(t2i)] = True
    out = {}
    for k in ks:
        out[f"image_retrieval_recall@{k}"] = (
            (batchify(recall_at_k, scores, positive_pairs, k) > 0).float().mean().item()
        )
        out[f"text_retrieval_recall@{k}"] = (
            (batchify(recall_at_k, scores.T, positive_pairs.T, k) > 0).float().mean().item()
        )
    return out


def _floor(Xt, Yt) -> dict:
    """One score matrix and the top 10 along both axes."""
    import torch

    S = Xt @ Yt.T
    torch.topk(S, 10, dim=1)
    torch.topk(S, 10, dim=0)
    return {}


def _blocked(Xt, Yt, block_bytes: int = 16 << 20) -> dict:
    """Both ways, blocked matmuls and row top-10 in 16 MiB score blocks (faiss's way)."""
    import torch

    for Q, C in ((Xt, Yt), (Yt, Xt)):
        rows = max(64, block_bytes // (4 * C.shape[0]))
        S = torch.empty(min(rows, Q.shape[0]) * C.shape[0])
        for s in range(0, Q.shape[0], rows):
            q = Q[s : s + rows]
            torch.topk(torch.mm(q, C.T, out=S[: q.shape[0] * C.shape[0]].view(q.shape[0], -1)), 10)
    return {}


def _faiss(X, Y) -> dict | None:
    """``faiss.IndexFlatIP`` top-10 both ways, or None when faiss is not installed."""
    try:
        import faiss
    except ImportError:
        return None
    for Q, C in ((X, Y), (Y, X)):
        index = faiss.IndexFlatIP(C.shape[1])
        index.add(C)
        index.search(Q, 10)
    return {}


def _functions(X, Y, t2i) -> dict:
    """The timed routes, each a function of no argument returning a dict of metrics."""
    import torch

    from modgap.tasks.retrieval import retrieval_metrics

    Xt, Yt = torch.from_numpy(X), torch.from_numpy(Y)
    fns = {
        "ours": lambda: retrieval_metrics(X, Y, t2i, ks=(1, 5, 10)),
        "floor": lambda: _floor(Xt, Yt),
        "blocked": lambda: _blocked(Xt, Yt),
    }
    if _faiss(X[:2], Y[:2]) is not None:
        fns["faiss"] = lambda: _faiss(X, Y)
    return fns


def _window_count(X, Y, t2i) -> int:
    """How many (query, candidate) scores ours recomputes in float64 beyond the positives."""
    import modgap.tasks.ranking as ranking
    from modgap.tasks.retrieval import retrieval_ranks

    seen = [0]
    exact = ranking.exact_scores

    def counting(A, B, ia, ib):
        seen[0] += int(ia.numel())
        return exact(A, B, ia, ib)

    ranking.exact_scores = counting
    try:
        retrieval_ranks(X, Y, t2i)
    finally:
        ranking.exact_scores = exact
    return seen[0] - len(t2i)  # every positive pair is scored exactly once


def _interleaved(n_images, captions, dim, repeat, data) -> dict:
    import statistics

    import torch

    X, Y, t2i = _data(n_images, captions, dim, data)
    fns = _functions(X, Y, t2i)
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    ratios = [o / f for o, f in zip(times["ours"], times["floor"], strict=True)]
    out = {
        "median_s": {k: statistics.median(v) for k, v in times.items()},
        "times_s": times,
        "ours_over_floor_median": statistics.median(ratios),
        "n_window": _window_count(X, Y, t2i),
        "n_comparisons": 2 * X.shape[0] * Y.shape[0],
        "threads": torch.get_num_threads(),
        "faiss": "faiss" in fns,
    }
    for peer in ("blocked", "faiss"):
        if peer in fns:
            r = [o / p for o, p in zip(times["ours"], times[peer], strict=True)]
            out[f"ours_over_{peer}_median"] = statistics.median(r)
    return out


def _case(name: str, n_images: int, captions: int, dim: int, repeat: int, data: str) -> dict:
    import torch

    X, Y, t2i = _data(n_images, captions, dim, data)
    ks = (1, 5, 10)
    if name in ("ours", "floor", "blocked", "faiss"):
        fn = _functions(X, Y, t2i).get(name)
        if fn is None:
            return {"skipped": f"{name} is not installed"}
    elif name == "dense":

        def fn():
            return _dense_clip_benchmark(X, Y, t2i, ks)
    elif name == "matmul":
        Xt, Yt = torch.from_numpy(X), torch.from_numpy(Y)

        def fn():
            Yt @ Xt.T
            return {}
    else:
        raise SystemExit(f"unknown case {name}")
    times, cpu = [], []
    result = None
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        result = fn()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    return {
        "time_s": min(times),
        "times_s": times,
        "cpu_s": min(cpu),
        "peak_rss_mb": peak / 2**20,
        "metrics": {k: round(v, 6) for k, v in (result or {}).items()},
        "threads": torch.get_num_threads(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-images", type=int, default=5000)
    ap.add_argument("--captions", type=int, default=5)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--data", choices=("benchmark", "crowded"), default="benchmark")
    ap.add_argument("--no-dense", action="store_true", help="leave out the CLIP_benchmark route")
    ap.add_argument("--threads", type=int, help="torch threads of every case (default: torch's)")
    ap.add_argument("--case", help=argparse.SUPPRESS)
    a = ap.parse_args()
    shape = ["--n-images", str(a.n_images), "--captions", str(a.captions), "--dim", str(a.dim)]
    shape += ["--data", a.data] + ([] if a.threads is None else ["--threads", str(a.threads)])
    if a.case:
        if a.threads is not None:
            import torch

            torch.set_num_threads(a.threads)
        if a.case == "interleaved":
            out = _interleaved(a.n_images, a.captions, a.dim, a.repeat, a.data)
        else:
            out = _case(a.case, a.n_images, a.captions, a.dim, a.repeat, a.data)
        print(json.dumps(out))
        return
    cases = {}
    names = ["matmul", "ours", "floor", "blocked", "faiss"] + ([] if a.no_dense else ["dense"])
    for name in [*names, "interleaved"]:
        # the dense route is 15x slower: timed once (its best of several would only be lower)
        repeat = 1 if name == "dense" else a.repeat
        cmd = [sys.executable, __file__, "--case", name, *shape, "--repeat", str(repeat)]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
        if proc.returncode:
            raise SystemExit(f"case {name} failed:\n{proc.stderr}")
        cases[name] = json.loads(proc.stdout.strip().splitlines()[-1])
    inter = cases.pop("interleaved")
    if "skipped" in cases["faiss"]:
        cases.pop("faiss")
    # both exact routes must agree on the recalls
    for key, v in cases.get("dense", {}).get("metrics", {}).items():
        assert abs(v - cases["ours"]["metrics"][key]) < 1e-6, key
    report = {
        "benchmark": "retrieval_metrics",
        "data": a.data,
        "shape": {"n_images": a.n_images, "n_texts": a.n_images * a.captions, "dim": a.dim},
        "cases": cases,
        "interleaved": inter,
        "ours_over_matmul_time": cases["ours"]["time_s"] / cases["matmul"]["time_s"],
        "ours_over_matmul_cpu": cases["ours"]["cpu_s"] / cases["matmul"]["cpu_s"],
        "ours_over_floor_median": inter["ours_over_floor_median"],
        "ours_peak_rss_mb": cases["ours"]["peak_rss_mb"],
        "peer": "faiss" if "faiss" in cases else "blocked (faiss is not installed)",
        "ours_over_peer_peak_rss": cases["ours"]["peak_rss_mb"]
        / cases["faiss" if "faiss" in cases else "blocked"]["peak_rss_mb"],
        "targets": {
            "ours_over_floor_median": "<= 1.15 on every data",
            "ours_over_peer_peak_rss": "<= 2",
        },
    }
    if "dense" in cases:
        report["dense_over_ours_time"] = cases["dense"]["time_s"] / cases["ours"]["time_s"]
        report["dense_peak_rss_mb"] = cases["dense"]["peak_rss_mb"]
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
