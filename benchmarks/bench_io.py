"""Time and peak memory of reading embeddings, next to a plain numpy baseline.

Each case runs in a fresh subprocess (all import ``modgap.io`` first, so they share one
interpreter base) and reports its peak resident memory (``ru_maxrss``, which also counts the
file pages a memory map touches) and the peak of memory *allocated* while reading
(``tracemalloc``, which sees numpy's buffers but not file-backed maps).

Cases, on ``N`` pairs x ``D`` float32 dims (normalised):

* ``npy_pair``: ``read_embeddings(img.npy, txt.npy)`` (memory-mapped) vs the baseline
  ``np.load`` of both files followed by the usual normalisation copy.
* ``clip_retrieval_fp16``: a clip-retrieval folder of 8 float16 shards, concatenated into one
  float32 matrix, vs the baseline ``np.concatenate([np.load(s) for s in shards]).astype(f32)``.

Usage: ``python benchmarks/bench_io.py [N] [D]`` (default 100000 x 512); prints JSON.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

CASE = r"""
import resource, sys, time, tracemalloc
import numpy as np
import modgap.io  # same interpreter base for every case
kind, root = sys.argv[1], sys.argv[2]
tracemalloc.start()
t = time.perf_counter()
if kind == "ours_npy":
    from modgap.io import read_embeddings
    emb = read_embeddings(f"{root}/img.npy", f"{root}/txt.npy")
    s = float(emb.image_emb[:, 0].sum() + emb.text_emb[:, 0].sum())
elif kind == "base_npy":
    x, y = np.load(f"{root}/img.npy"), np.load(f"{root}/txt.npy")
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    y = y / np.linalg.norm(y, axis=1, keepdims=True)
    s = float(x[:, 0].sum() + y[:, 0].sum())
elif kind == "ours_clip":
    from modgap.io import read_embeddings
    emb = read_embeddings(f"{root}/cr")
    s = float(emb.image_emb[:, 0].sum())
else:
    import glob
    def load(kind):
        files = sorted(glob.glob(f"{root}/cr/{kind}/*.npy"),
                       key=lambda f: int(f.rsplit("_", 1)[1][:-4]))
        return np.concatenate([np.load(f) for f in files]).astype(np.float32)
    x, y = load("img_emb"), load("text_emb")
    s = float(x[:, 0].sum())
dt = time.perf_counter() - t
peak = tracemalloc.get_traced_memory()[1] / 2**20
print(dt, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, peak)
"""


def _run(kind: str, root: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", CASE, kind, root],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    return {
        "seconds": round(float(out[0]), 3),
        "peak_rss_mb": round(float(out[1]), 1),
        "peak_allocated_mb": round(float(out[2]), 1),
    }


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    d = int(sys.argv[2]) if len(sys.argv) > 2 else 512
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as root:
        for name in ("img", "txt"):
            a = rng.standard_normal((n, d), dtype=np.float32)
            a /= np.linalg.norm(a, axis=1, keepdims=True)
            np.save(f"{root}/{name}.npy", a)
        (Path(root) / "cr/img_emb").mkdir(parents=True)
        (Path(root) / "cr/text_emb").mkdir(parents=True)
        for kind, src in (("img_emb", "img"), ("text_emb", "txt")):
            a = np.load(f"{root}/{src}.npy", mmap_mode="r")
            for i, part in enumerate(np.array_split(np.arange(n), 8)):
                np.save(f"{root}/cr/{kind}/{kind}_{i}.npy", a[part].astype(np.float16))
        baseline_python = _run_empty()
        result = {
            "n": n,
            "d": d,
            "bytes_per_matrix_mb": round(n * d * 4 / 2**20, 1),
            "python_with_numpy_rss_mb": baseline_python,
            "npy_pair": {"modgap": _run("ours_npy", root), "numpy_load": _run("base_npy", root)},
            "clip_retrieval_fp16_8_shards": {
                "modgap": _run("ours_clip", root),
                "numpy_concatenate": _run("base_clip", root),
            },
        }
    print(json.dumps(result, indent=2))


def _run_empty() -> float:
    code = "import resource, numpy, modgap.io; "
    code += "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return round(float(out.stdout), 1)


if __name__ == "__main__":
    main()
