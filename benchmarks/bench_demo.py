"""Benchmark: ``modgap demo`` cold (empty feature cache) against warm (tower features cached).

Runs ``modgap demo --no-bench`` twice in fresh subprocesses with a temporary ``MODGAP_CACHE``
and prints one JSON object with both wall times and their ratio. The first run builds the
EfficientNet-Lite0 and MiniLM towers and embeds every image and caption; the second only loads
cached tower features and applies the small projection heads.

Usage: ``python benchmarks/bench_demo.py [--limit 2000]`` (needs the ``encoders`` extra and the
Debian package ``dataset-fashion-mnist``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=2000)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "MODGAP_CACHE": os.path.join(tmp, "cache"), "HF_HUB_OFFLINE": "1"}
        cmd = [sys.executable, "-m", "modgap", "demo", "--no-bench", "--no-progress", "-q"]
        cmd += ["--limit", str(a.limit), "--out", os.path.join(tmp, "demo")]
        times = []
        for _ in range(2):
            t0 = time.perf_counter()
            subprocess.run(cmd, env=env, check=True)
            times.append(time.perf_counter() - t0)
    print(
        json.dumps(
            {
                "benchmark": "demo_cache",
                "limit": a.limit,
                "cold_s": round(times[0], 2),
                "warm_s": round(times[1], 2),
                "cold_over_warm": round(times[0] / times[1], 2),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
