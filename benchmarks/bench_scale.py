"""Out-of-core and distributed throughput: what bounds modgap at 10^6 -> 10^9 rows.

Generates clip-retrieval folders of ``N`` pairs x ``D`` float16 (shards of ``--shard-rows``)
in a temporary folder (deleted afterwards; ``--keep`` keeps it), then measures, each case in a
fresh subprocess so peak RSS (``ru_maxrss``) is its own:

* ``raw_read`` — the hardware floor: every shard through ``np.load(mmap_mode="r")`` plus a
  column sum, cold (pages dropped with ``posix_fadvise(DONTNEED)``) and warm;
* ``moments_first`` / ``moments_full`` — the one-pass moment measures without / with the
  covariances (``centroid, per_dimension, rmg, alignment`` / ``+ frechet_distance, cosine``),
  warm, as a ratio of the raw warm read;
  ``moments_full`` runs as ``modgap measure --stream`` under ``--memory-budget``, whose peak
  RSS is reported for every N (flat = independent of N);
* ``neighbours`` — sampled neighbour diagnostics at the largest N with ``--queries`` queries,
  next to a float32 matmul baseline: predicted time = 4 · q · N · D flops / matmul speed;
* ``dask`` — the moment pass on a local Dask cluster (2 workers) vs in-process, same data;
* ``transform`` — rows/s of center, gaussian, spectral (Nyström) and ot-sinkhorn maps;
* ``projection`` — 10^8 and 10^9 pairs on W workers from the measured per-shard costs.

Usage: ``python benchmarks/bench_scale.py [--sizes 1000000,10000000] [--dim 512]
[--queries 200] [--out FILE]``; prints JSON. Check ``df -h`` first: 10^7 x 512 float16 is
~10 GB per modality.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ONLY_FIRST = "centroid,per_dimension,rmg,alignment"
ONLY_FULL = ONLY_FIRST + ",frechet_distance"


def generate(root: Path, n: int, d: int, shard_rows: int, seed: int = 0) -> None:
    """A CLIP-like gapped clip-retrieval folder, float16, written shard by shard in chunks
    of 2^16 rows (a few hundred MB at most)."""
    from numpy.lib.format import open_memmap

    rng = np.random.default_rng(seed)
    offset = rng.standard_normal(d).astype(np.float32)
    offset *= 0.8 * np.sqrt(d) / np.linalg.norm(offset) / 2
    for sub in ("img_emb", "text_emb", "metadata"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    k = -(-n // shard_rows)
    width = len(str(k))
    import pyarrow as pa
    import pyarrow.parquet as pq

    for i in range(k):
        rows = min(shard_rows, n - i * shard_rows)
        sid = str(i).zfill(width)
        outs = {
            sub: open_memmap(root / sub / f"{sub}_{sid}.npy", "w+", np.float16, (rows, d))
            for sub in ("img_emb", "text_emb")
        }
        for a in range(0, rows, 1 << 16):
            b = min(rows, a + (1 << 16))
            z = rng.standard_normal((b - a, d), dtype=np.float32)
            for sub, sign in (("img_emb", 1), ("text_emb", -1)):
                x = z + 0.6 * rng.standard_normal((b - a, d), dtype=np.float32) + sign * offset
                x /= np.linalg.norm(x, axis=1, keepdims=True)
                outs[sub][a:b] = x
        for m in outs.values():
            m.flush()
        del outs
        start = i * shard_rows
        pq.write_table(
            pa.table({"url": [f"http://x/{r}" for r in range(start, start + rows)]}),
            root / "metadata" / f"metadata_{sid}.parquet",
        )


def drop_cache(root: Path) -> None:
    for f in root.rglob("*.npy"):
        fd = os.open(f, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


CHILD = r"""
import json, resource, sys, time
import numpy as np
case, root, arg = sys.argv[1], sys.argv[2], sys.argv[3]
out = {}
t = time.perf_counter()
if case == "raw_read":
    import glob
    s = 0.0
    for sub in ("img_emb", "text_emb"):
        for f in sorted(glob.glob(f"{root}/{sub}/*.npy")):
            m = np.load(f, mmap_mode="r")
            for a in range(0, m.shape[0], 1 << 16):  # blocks, as a streaming reader would
                s += float(m[a:a + (1 << 16)].sum(axis=0, dtype=np.float32).sum())
            del m
    out["checksum"] = s
elif case in ("moments", "dask"):
    from modgap.compute import Compute
    from modgap.stream import open_source, stream_measures, get_engine
    src = open_source(root)
    only, budget = arg.split(";")
    eng = get_engine("dask", n_workers=2, processes=True) if case == "dask" else None
    t = time.perf_counter()
    r = stream_measures(src, only.split(","), compute=Compute(memory_budget=budget), engine=eng)
    out["centroid_gap"] = r["centroid_gap"]
    if eng is not None:
        eng.close()
elif case == "neighbours":
    import torch
    from modgap.stream import open_source, stream_measures
    from modgap.compute import Compute
    src = open_source(root)
    a = torch.randn(2048, src.dim); b = torch.randn(32768, src.dim)
    a @ b.T
    t0 = time.perf_counter(); reps = 5
    for _ in range(reps):
        a @ b.T
    out["matmul_gflops"] = reps * 2 * 2048 * 32768 * src.dim / (time.perf_counter() - t0) / 1e9
    t = time.perf_counter()
    c = Compute(memory_budget="2GB")
    r = stream_measures(src, ["neighbours"], sample_queries=int(arg), compute=c)
    out.update({k: r[k] for k in ("itr", "tir", "tmr", "imr")})
    out["itr_interval"] = r["estimates"]["itr"]["interval"]
elif case == "transform":
    from modgap.reducers import get_reducer
    from modgap.stream import open_source
    from modgap.stream.fit import fit_streaming
    src = open_source(root)
    X = src.gather("image", np.arange(min(100_000, src.n_images)))
    rates = {}
    for name, params in (("center", {}), ("gaussian", {}), ("spectral", {"n_components": 60}),
                         ("ot-sinkhorn", {})):
        r = get_reducer(name, **params)
        fit_streaming(r, src, fit_sample=2000)
        n = X.shape[0] if name in ("center", "gaussian") else 20_000
        t0 = time.perf_counter()
        r.transform_images(X[:n])
        rates[name] = n / (time.perf_counter() - t0)
    out["rows_per_s"] = rates
out["seconds"] = time.perf_counter() - t
out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(out))
"""


def child(case: str, root: Path, arg: str = "") -> dict:
    r = subprocess.run(
        [sys.executable, "-c", CHILD, case, str(root), arg], capture_output=True, text=True
    )
    if r.returncode != 0:
        raise RuntimeError(f"{case} failed: {r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def measure_cli(root: Path, budget: str) -> dict:
    code = (
        "import resource, sys, time; from modgap.cli import main; t = time.perf_counter(); "
        f"rc = main(['measure', {str(root)!r}, '--stream', '--only', {ONLY_FULL!r}, "
        f"'--memory-budget', {budget!r}, '--no-progress', '-q']); "
        "print(rc, time.perf_counter() - t, "
        "resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    fields = r.stdout.split()
    if r.returncode != 0 or len(fields) != 3 or fields[0] != "0":  # a failure is not a timing
        raise RuntimeError(f"modgap measure failed: {r.stdout[-500:]} {r.stderr[-2000:]}")
    rc, secs, rss = fields
    return {"rc": int(rc), "seconds": float(secs), "peak_rss_mb": float(rss)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1000000,10000000")
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--shard-rows", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--budget", default="2GB")
    ap.add_argument("--tmp", default=None, help="where to generate (default: the system temp)")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    d = args.dim
    need = 2 * max(sizes) * d * 2
    tmp = Path(tempfile.mkdtemp(prefix="modgap-bench-scale-", dir=args.tmp))
    free = shutil.disk_usage(tmp).free
    if need > 0.8 * free:
        sys.exit(f"need {need / 1e9:.1f} GB in {tmp}, only {free / 1e9:.1f} GB free")
    report: dict = {
        "dim": d,
        "shard_rows": args.shard_rows,
        "budget": args.budget,
        "cpus": os.cpu_count(),
        "load_start": os.getloadavg(),
        "sizes": {},
    }
    try:
        for n in sizes:
            root = tmp / f"n{n}"
            t0 = time.perf_counter()
            # in a child: the children below inherit this process's peak RSS through fork
            subprocess.run(
                [
                    sys.executable,
                    "-c",
                    "import sys; sys.path.insert(0, sys.argv[1]); "
                    "from pathlib import Path; from bench_scale import generate; "
                    "a = sys.argv; generate(Path(a[2]), int(a[3]), int(a[4]), int(a[5]))",
                    str(Path(__file__).parent),
                    str(root),
                    str(n),
                    str(d),
                    str(args.shard_rows),
                ],
                check=True,
            )
            row: dict = {"generate_s": time.perf_counter() - t0, "bytes": 2 * n * d * 2}
            drop_cache(root)
            row["raw_read_cold"] = child("raw_read", root)
            row["raw_read_warm"] = child("raw_read", root)
            row["moments_first"] = child("moments", root, f"{ONLY_FIRST};{args.budget}")
            # the full moment pass (with covariances) is timed through the CLI, with its RSS
            row["moments_full"] = measure_cli(root, args.budget)
            warm = row["raw_read_warm"]["seconds"]
            for key in ("raw_read_cold", "raw_read_warm", "moments_first", "moments_full"):
                row[key]["gb_per_s"] = row["bytes"] / row[key]["seconds"] / 1e9
            for key in ("moments_first", "moments_full"):
                row[key]["throughput_vs_raw_warm"] = warm / row[key]["seconds"]
            report["sizes"][str(n)] = row
            print(json.dumps({n: row}), file=sys.stderr, flush=True)
        small, large = tmp / f"n{sizes[0]}", tmp / f"n{sizes[-1]}"
        n_large = sizes[-1]
        nb = child("neighbours", large, str(args.queries))
        predicted = 4 * args.queries * n_large * d * 2 / (nb["matmul_gflops"] * 1e9)
        nb["predicted_s_at_matmul_speed"] = predicted
        nb["seconds_over_predicted"] = nb["seconds"] / predicted
        report["neighbours"] = {"n": n_large, "queries": args.queries, **nb}
        local = child("moments", small, f"{ONLY_FULL};{args.budget}")
        dask = child("dask", small, f"{ONLY_FULL};{args.budget}")
        report["dask"] = {
            "n": sizes[0],
            "in_process_s": local["seconds"],
            "dask_2_workers_s": dask["seconds"],
            "ratio": dask["seconds"] / local["seconds"],
            "same_centroid_gap": dask["centroid_gap"] == local["centroid_gap"],
        }
        report["transform"] = child("transform", small)
        # projection from the measured per-shard cost of the largest run
        big = report["sizes"][str(n_large)]
        shards = -(-n_large // args.shard_rows)
        per_shard = big["moments_full"]["seconds"] / shards
        per_shard_bytes = 2 * args.shard_rows * d * 2
        proj = {}
        for total in (10**8, 10**9):
            k = total // args.shard_rows
            proj[str(total)] = {f"{w}_workers_s": k * per_shard / w for w in (1, 8, 64)} | {
                "bytes": 2 * total * d * 2,
                "disk_floor_s_at_1GBps_per_worker_8": 2 * total * d * 2 / (8 * 1e9),
                "network_floor_s_at_10Gbps_total": 2 * total * d * 2 / 1.25e9,
            }
        report["projection"] = {
            "per_shard_s": per_shard,
            "per_shard_bytes": per_shard_bytes,
            "per_shard_gemm_flops": 2 * 2 * args.shard_rows * d * d,
            "totals": proj,
        }
    finally:
        report["load_end"] = os.getloadavg()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    text = json.dumps(report, indent=1)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
