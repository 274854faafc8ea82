"""Benchmark: retrieval with a retrieval-time correction, streamed vs in memory.

Data: a clip-retrieval folder of ``--n-images`` images × ``--captions`` captions per image ×
``--dim`` dims (float16 shards of ``--shard-rows`` images; caption = image + 6 × noise), and
a query bank of ``--bank`` images with one caption each (another draw). Cases, each in a
fresh subprocess so its peak resident memory (``ru_maxrss``) is its own:

* ``memory``: the baseline, :func:`modgap.io.read_embeddings` then
  :func:`modgap.tasks.retrieval.retrieval_metrics` with the correction (every row in memory).
* ``stream``: :func:`modgap.stream.stream_retrieval` with the correction, every query
  (``sample_queries=None``), the local engine and ``--budget``.
* ``stream_plain``: the same streamed retrieval without a correction (what the correction's
  offsets pass and, for QB-Norm, its extra scan pass add).

The recalls of ``memory`` and ``stream`` must be equal (checked). Times are the best of
``--repeat`` runs (wall clock and process CPU time). Prints one JSON object. Usage:
``python benchmarks/bench_stream_corrections.py [--n-images 5000] [--captions 5] [--dim 512]
[--bank 2000] [--correction csls] [--repeat 3]``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path


def _pairs(n: int, captions: int, dim: int, seed: int):
    import numpy as np

    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, dim), dtype=np.float32)
    t2i = np.repeat(np.arange(n), captions)
    Y = X[t2i] + 6.0 * rng.standard_normal((t2i.size, dim), dtype=np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    Y /= np.linalg.norm(Y, axis=1, keepdims=True)
    return X, Y, t2i


def _case(name: str, a: argparse.Namespace) -> dict:
    import torch

    from modgap.compute import Compute
    from modgap.io import read_embeddings
    from modgap.stream import open_source, stream_retrieval
    from modgap.tasks.retrieval import retrieval_metrics
    from modgap.tasks.scoring import get_correction

    Xb, Yb, _ = _pairs(a.bank, 1, a.dim, seed=1)
    corr = get_correction(a.correction).fit(Xb, Yb)
    compute = Compute(memory_budget=a.budget)
    keys = ("image_retrieval_recall@1", "text_retrieval_recall@1", "rsum")
    if name == "memory":

        def fn():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                emb = read_embeddings(a.folder)
            return retrieval_metrics(
                emb.image_emb, emb.text_emb, emb.text_to_image, correction=corr, compute=compute
            )
    elif name in ("stream", "stream_plain"):
        c = corr if name == "stream" else None

        def fn():
            return stream_retrieval(
                open_source(a.folder),
                sample_queries=None,
                mixed=False,
                correction=c,
                compute=compute,
            )
    else:
        raise SystemExit(f"unknown case {name}")
    times, cpu, result = [], [], {}
    for _ in range(a.repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        result = fn()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return {
        "time_s": min(times),
        "cpu_s": min(cpu),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "metrics": {k: result[k] for k in keys},
        "threads": torch.get_num_threads(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-images", type=int, default=5000)
    ap.add_argument("--captions", type=int, default=5)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--shard-rows", type=int, default=1000)
    ap.add_argument("--bank", type=int, default=2000)
    ap.add_argument("--correction", default="csls")
    ap.add_argument("--budget", default="256MiB")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--case", help=argparse.SUPPRESS)
    ap.add_argument("--folder", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.case:
        print(json.dumps(_case(a.case, a)))
        return
    from modgap.embeddings import EmbeddingSet
    from modgap.io import write_embeddings

    cases = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "cr"
        X, Y, t2i = _pairs(a.n_images, a.captions, a.dim, seed=0)
        emb = EmbeddingSet(X, Y, text_to_image=t2i)
        write_embeddings(emb, folder, shard_size=a.shard_rows, dtype="float16")
        for name in ("memory", "stream", "stream_plain"):
            cmd = [sys.executable, __file__, "--case", name, "--folder", str(folder)]
            for opt in ("n_images", "captions", "dim", "bank", "correction", "budget", "repeat"):
                cmd += [f"--{opt.replace('_', '-')}", str(getattr(a, opt))]
            proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
            if proc.returncode:
                raise SystemExit(f"case {name} failed:\n{proc.stderr}")
            cases[name] = json.loads(proc.stdout.strip().splitlines()[-1])
    assert cases["stream"]["metrics"] == cases["memory"]["metrics"], "routes disagree"
    report = {
        "benchmark": "stream_retrieval with a correction",
        "correction": a.correction,
        "shape": {
            "n_images": a.n_images,
            "n_texts": a.n_images * a.captions,
            "dim": a.dim,
            "bank": a.bank,
            "shards": -(-a.n_images // a.shard_rows),
        },
        "budget": a.budget,
        "cases": cases,
        "stream_over_memory_time": cases["stream"]["time_s"] / cases["memory"]["time_s"],
        "stream_over_memory_cpu": cases["stream"]["cpu_s"] / cases["memory"]["cpu_s"],
        "correction_over_plain_stream_time": cases["stream"]["time_s"]
        / cases["stream_plain"]["time_s"],
        "stream_over_memory_peak_rss": cases["stream"]["peak_rss_mb"]
        / cases["memory"]["peak_rss_mb"],
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
