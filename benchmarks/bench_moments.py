"""Streamed moments against their hardware floor, side by side in one interleaved run.

Two rows, each one command (``--row centroid`` / ``--row full``), on a clip-retrieval folder
of ``N`` pairs x ``D`` float16 generated in a temporary folder (removed afterwards):

* ``centroid`` — ``stream_measures(only=["centroid"])`` next to the floor: every shard through
  ``np.load(mmap_mode="r")``, in blocks of 65,536 rows converted to float32 and summed;
* ``full`` — ``centroid, per_dimension, rmg, frechet_distance, alignment`` next to the floor:
  the same read plus a float32 ``XᵀX`` per block of 4,096 rows (the GEMM the scatter needs).

Each repetition runs ours and the floor in fresh subprocesses, alternately (A B A B …), and
times the work in the child (imports excluded); peak RSS is the child's ``VmHWM``. Prints
JSON with every repetition, the medians and their ratio. Pages are warm (the floor reads
first, and the folder fits in memory at the default size).

Usage: ``python benchmarks/bench_moments.py --row full [--n 200000] [--dim 512]
[--shard-rows 100000] [--reps 3] [--threads 2]``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from bench_scale import generate

ROWS = {
    "centroid": ["centroid"],
    "full": ["centroid", "per_dimension", "rmg", "frechet_distance", "alignment"],
}


def floor(root: Path, row: str) -> None:
    """Raw mmap read + float32 block sums (``centroid``) or float32 XᵀX in blocks (``full``)."""
    for sub in ("img_emb", "text_emb"):
        for f in sorted((root / sub).glob("*.npy")):
            X = np.load(f, mmap_mode="r")
            s = np.zeros(X.shape[1], dtype=np.float32)
            step = 65536 if row == "centroid" else 4096
            for a in range(0, X.shape[0], step):
                B = np.asarray(X[a : a + step], dtype=np.float32)
                s += B.sum(0)
                if row == "full":
                    B.T @ B


def ours(root: Path, row: str) -> None:
    from modgap.stream import open_source, stream_measures

    stream_measures(open_source(str(root)), only=ROWS[row], sample_queries=None)


def child(case: str, root: Path, row: str) -> dict:
    fn = floor if case == "floor" else ours
    if case == "ours":  # imports outside the timing
        import modgap.stream  # noqa: F401
    t0 = time.perf_counter()
    fn(root, row)
    wall = time.perf_counter() - t0
    return {"case": case, "seconds": wall, "peak_rss_mb": _peak_rss_mb()}


def _peak_rss_mb() -> float:
    """This process's peak RSS (``VmHWM``: unlike ``ru_maxrss``, not inherited from the parent
    across ``exec``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_child(case: str, root: Path, row: str, threads: int) -> dict:
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(threads)
    cmd = [sys.executable, __file__, "--child", case, "--root", str(root), "--row", row]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--row", choices=sorted(ROWS), default="full")
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--shard-rows", type=int, default=100_000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--child", default=None)
    ap.add_argument("--root", default=None)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, Path(args.root), args.row)))
        return
    tmp = Path(tempfile.mkdtemp(prefix="modgap-moments-"))
    try:
        generate(tmp, args.n, args.dim, args.shard_rows)
        runs: dict[str, list] = {"floor": [], "ours": []}
        for _ in range(args.reps):
            for case in ("floor", "ours"):
                runs[case].append(run_child(case, tmp, args.row, args.threads))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    med = {c: statistics.median(r["seconds"] for r in v) for c, v in runs.items()}
    rss = {c: max(r["peak_rss_mb"] for r in v) for c, v in runs.items()}
    print(
        json.dumps(
            {
                "row": args.row,
                "measures": ROWS[args.row],
                "n": args.n,
                "dim": args.dim,
                "dtype": "float16",
                "threads": args.threads,
                "runs": runs,
                "median_seconds": med,
                "peak_rss_mb": rss,
                "ratio": med["ours"] / med["floor"],
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
