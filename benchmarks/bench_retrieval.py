"""Benchmark: blocked retrieval metrics vs the dense route and one matrix multiply.

Data: 5,000 images × 25,000 captions (5 per image) × 512 dims, float32, random with a
signal (caption = image + 6 × noise) so recalls are far from 0 and 1. Three cases, each in a
fresh subprocess so its peak resident memory (``ru_maxrss``) is its own:

* ``ours``: :func:`modgap.tasks.retrieval.retrieval_metrics` (K = 1, 5, 10, both ways).
* ``dense``: the CLIP_benchmark ``zeroshot_retrieval`` route: the full text × image score
  matrix, a dense boolean positive mask, and ``recall_at_k`` by top-k + one-hot in batches of
  64 queries, for each K and both directions.
* ``matmul``: one float32 ``Y @ Xᵀ`` of the same shape: the hardware floor for any exact method.

Times are the best of ``--repeat`` runs (wall clock, and process CPU time, which is less
disturbed by other load on a shared machine). Prints one JSON object. Usage:
``python benchmarks/bench_retrieval.py [--n-images 5000] [--captions 5] [--dim 512] [--repeat 5]``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time


def _data(n_images: int, captions: int, dim: int):
    import numpy as np

    rng = np.random.default_rng(0)
    X = rng.standard_normal((n_images, dim), dtype=np.float32)
    t2i = np.repeat(np.arange(n_images), captions)
    Y = X[t2i] + 6.0 * rng.standard_normal((t2i.size, dim), dtype=np.float32)
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


def _case(name: str, n_images: int, captions: int, dim: int, repeat: int) -> dict:
    import torch

    X, Y, t2i = _data(n_images, captions, dim)
    ks = (1, 5, 10)
    if name == "ours":
        from modgap.tasks.retrieval import retrieval_metrics

        def fn():
            return retrieval_metrics(X, Y, t2i, ks=ks)
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
    ap.add_argument("--case", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.case:
        print(json.dumps(_case(a.case, a.n_images, a.captions, a.dim, a.repeat)))
        return
    cases = {}
    for name in ("matmul", "ours", "dense"):
        cmd = [sys.executable, __file__, "--case", name, "--n-images", str(a.n_images)]
        # the dense route is 15x slower: timed once (its best of several would only be lower)
        repeat = 1 if name == "dense" else a.repeat
        cmd += ["--captions", str(a.captions), "--dim", str(a.dim), "--repeat", str(repeat)]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
        if proc.returncode:
            raise SystemExit(f"case {name} failed:\n{proc.stderr}")
        cases[name] = json.loads(proc.stdout.strip().splitlines()[-1])
    # both exact routes must agree on the recalls
    for key, v in cases["dense"]["metrics"].items():
        assert abs(v - cases["ours"]["metrics"][key]) < 1e-6, key
    report = {
        "benchmark": "retrieval_metrics",
        "shape": {"n_images": a.n_images, "n_texts": a.n_images * a.captions, "dim": a.dim},
        "cases": cases,
        "ours_over_matmul_time": cases["ours"]["time_s"] / cases["matmul"]["time_s"],
        "ours_over_matmul_cpu": cases["ours"]["cpu_s"] / cases["matmul"]["cpu_s"],
        "dense_over_ours_time": cases["dense"]["time_s"] / cases["ours"]["time_s"],
        "ours_peak_rss_mb": cases["ours"]["peak_rss_mb"],
        "dense_peak_rss_mb": cases["dense"]["peak_rss_mb"],
        "targets": {"ours_over_matmul_time": "< 2", "ours_peak_rss_mb": "< 1536"},
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
