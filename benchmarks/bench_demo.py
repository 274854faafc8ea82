"""Benchmark: ``modgap demo`` cold (empty feature cache) against warm (tower features cached).

Runs ``modgap demo`` twice in fresh subprocesses with a temporary ``MODGAP_CACHE`` and prints
one JSON object with both wall times, each run's own peak resident memory (``wait4``'s
``ru_maxrss`` of that child) and their ratio. The first run builds the EfficientNet-Lite0 and
MiniLM towers and embeds every image and caption; the second only loads cached tower features
and applies the small projection heads. Both run the benchmark part too, as ``make demo`` does,
unless ``--no-bench``.

The default demo is sized for about a minute warm on an idle 2-core machine: the script exits
with status 1 (after printing its JSON) when the warm run takes longer than ``--budget``
seconds (default ``modgap.cli.demo_cmd.WARM_BUDGET_S``), so the demo cannot grow back silently.

Usage: ``python benchmarks/bench_demo.py [--limit N] [--no-bench] [--budget S]`` (needs the
``encoders`` extra and the Debian package ``dataset-fashion-mnist``; without ``--limit`` the
default demo, as ``make demo`` runs it).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time


def _timed(cmd: list[str], env: dict) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one child process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed with exit code {proc.returncode}")
    return seconds, usage.ru_maxrss / 1024  # Linux: KiB


def main() -> int:
    from modgap.cli.demo_cmd import WARM_BUDGET_S

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=None, help="embed the first N test images")
    ap.add_argument("--no-bench", action="store_true", help="embed only (modgap demo --no-bench)")
    ap.add_argument(
        "--budget",
        type=float,
        default=WARM_BUDGET_S,
        help="fail when the warm run takes longer (seconds; default %(default)s)",
    )
    a = ap.parse_args()
    args = ["--no-progress", "-q"]
    if a.limit:
        args += ["--limit", str(a.limit)]
    if a.no_bench:
        args.append("--no-bench")
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "MODGAP_CACHE": os.path.join(tmp, "cache"), "HF_HUB_OFFLINE": "1"}
        cmd = [sys.executable, "-m", "modgap", "demo", *args, "--out", os.path.join(tmp, "demo")]
        (cold, cold_mb), (warm, warm_mb) = _timed(cmd, env), _timed(cmd, env)
    print(
        json.dumps(
            {
                "benchmark": "demo_cache",
                "limit": a.limit,
                "args": args,
                "cold_s": round(cold, 2),
                "warm_s": round(warm, 2),
                "cold_peak_rss_mb": round(cold_mb, 1),
                "warm_peak_rss_mb": round(warm_mb, 1),
                "cold_over_warm": round(cold / warm, 2),
                "warm_budget_s": a.budget,
                "within_budget": warm <= a.budget,
            },
            indent=2,
        )
    )
    if warm > a.budget:
        print(
            f"error: the warm demo took {warm:.1f} s, over its budget of {a.budget:.0f} s; "
            "make the default demo smaller (modgap/cli/demo_cmd.py) or state a new budget",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
