"""Streamed neighbour scans: time and pool blocks per shard, this tree next to another.

Generates a clip-retrieval folder of ``N`` pairs x ``D`` float16 (``bench_scale.generate``) in a
temporary folder (removed afterwards), then runs ``modgap measure FOLDER --stream --only
neighbours --sample-queries Q`` in fresh processes, alternating this tree (``src/``) and a
baseline tree (``--baseline-src``, e.g. the main branch's ``src/``) ``--repeats`` times (A B A B
…), and prints JSON: per tree the median wall time of the measure call, its runs, peak RSS
(``ru_maxrss``), the pool blocks read per shard and modality by the scans (``Source.raw_blocks``
calls), and the ratio of the medians. The results of both trees must be equal (exact keys).

Usage: ``python benchmarks/bench_scans.py --baseline-src /path/to/main/src [--n 200000]
[--dim 256] [--queries 2000] [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_scale import generate

CHILD = r"""
import contextlib, io, json, resource, sys, time
from collections import Counter
from modgap.cli import main
from modgap.io.source import Source
root, q, out = sys.argv[1], sys.argv[2], sys.argv[3]
blocks = Counter()
raw = Source.raw_blocks
def counted(self, shard, modality, rows):
    for item in raw(self, shard, modality, rows):
        blocks[modality] += 1
        yield item
Source.raw_blocks = counted
res = f"{out}.json"
argv = ["measure", root, "--stream", "--only", "neighbours", "--sample-queries", q, "--json", res]
t = time.perf_counter()
with contextlib.redirect_stdout(io.StringIO()):
    rc = main(argv)
wall = time.perf_counter() - t
assert rc == 0, rc
with open(res) as f:
    r = json.load(f)
keys = ("itr", "tir", "tmr", "imr")
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
vals = {k: r.get(k) for k in keys}
print(json.dumps({"wall_s": wall, "peak_rss_mb": rss, "blocks": dict(blocks), "values": vals}))
"""


def child(src: str, root: Path, queries: int, out: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=src)
    p = subprocess.run(
        [sys.executable, "-c", CHILD, str(root), str(queries), str(out)],
        env=env,
        capture_output=True,
        text=True,
    )
    if p.returncode:
        raise SystemExit(p.stderr[-2000:])
    return json.loads(p.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--baseline-src", required=True)
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--shard-rows", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    here = str(Path(__file__).resolve().parents[1] / "src")
    trees = {"ours": here, "baseline": args.baseline_src}
    tmp = Path(tempfile.mkdtemp(prefix="modgap-scans-"))
    try:
        root = tmp / "folder"
        generate(root, args.n, args.dim, args.shard_rows)
        runs: dict[str, list] = {k: [] for k in trees}
        for i in range(args.repeats):
            for name, src in trees.items():
                runs[name].append(child(src, root, args.queries, tmp / f"{name}{i}"))
        shards = -(-args.n // args.shard_rows)
        report: dict = {"n": args.n, "dim": args.dim, "queries": args.queries, "shards": shards}
        report["load_avg"] = os.getloadavg()
        for name, rs in runs.items():
            report[name] = {
                "median_s": statistics.median(r["wall_s"] for r in rs),
                "runs_s": [round(r["wall_s"], 3) for r in rs],
                "peak_rss_mb": max(r["peak_rss_mb"] for r in rs),
                "blocks_per_shard": {m: c / shards for m, c in rs[0]["blocks"].items()},
            }
        report["ratio"] = report["ours"]["median_s"] / report["baseline"]["median_s"]
        report["equal"] = all(
            r["values"] == runs["ours"][0]["values"] for rs in runs.values() for r in rs
        )
        print(json.dumps(report, indent=1))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
