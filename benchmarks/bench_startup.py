"""Start-up: whole-process wall time of the first commands, next to ``python -c pass``.

Each command runs ``--runs`` times in a fresh interpreter (interleaved, so a busy moment of a
shared machine falls on every command alike); the median, the minimum and the median CPU time
(user + system of the child) are reported. One ``python -X importtime`` run of ``modgap measure``
lists the top-level imports that cost the most (cumulative microseconds). Prints one JSON
document; ``--out FILE`` also writes it.

    nice .venv/bin/python benchmarks/bench_startup.py --runs 7 --out bench_startup.json

Cases (the data: ``--n`` CLIP-like pairs x ``--d`` dims, written as an .npy pair to a temp folder):
  python_pass         python -c pass (the floor: the interpreter alone)
  import_modgap       python -c "import modgap"
  help                modgap --help
  measure_help        modgap measure --help
  measure             modgap measure A.npy B.npy (every default measure, in memory)
  stream_centroid     modgap measure A.npy B.npy --stream --only centroid_gap (numpy only)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def pairs(n: int, d: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` image/text pairs of unit rows with a modality gap (each modality around its own
    mean direction, a shared semantic part per pair), shaped like CLIP's."""
    rng = np.random.default_rng(seed)
    m = rng.standard_normal((2, d)) / np.sqrt(d)
    s = rng.standard_normal((n, d)) * np.sqrt(0.3 / d)
    out = []
    for k in range(2):
        x = (m[k] * 2.0 + s + rng.standard_normal((n, d)) * np.sqrt(0.6 / d)).astype(np.float32)
        out.append(x / np.linalg.norm(x, axis=1, keepdims=True))
    return out[0], out[1]


def commands(a: Path, b: Path) -> dict[str, list[str]]:
    py, mg = [sys.executable], [sys.executable, "-m", "modgap"]
    quiet, centroid = ["--no-progress", "--quiet"], ["--only", "centroid_gap"]
    return {
        "python_pass": [*py, "-c", "pass"],
        "import_modgap": [*py, "-c", "import modgap"],
        "help": [*mg, "--help"],
        "measure_help": [*mg, "measure", "--help"],
        "measure": [*mg, "measure", str(a), str(b), *quiet],
        "stream_centroid": [*mg, "measure", str(a), str(b), "--stream", *centroid, *quiet],
    }


def timed(cmd: list[str]) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user + system) of one run of ``cmd``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {proc.stderr.strip()[-500:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def top_imports(cmd: list[str], top: int) -> list[dict]:
    """The top-level imports of one ``-X importtime`` run, by cumulative time."""
    proc = subprocess.run([cmd[0], "-X", "importtime", *cmd[1:]], capture_output=True, text=True)
    rows = []
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cumulative, name = line[len("import time:") :].split("|")
        if not name.startswith(" ") or name.startswith("  "):
            continue  # nested: counted in its top-level import's cumulative time
        rows.append({"module": name.strip(), "cumulative_s": int(cumulative) / 1e6})
    rows.sort(key=lambda r: -r["cumulative_s"])
    return rows[:top]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--d", type=int, default=512)
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--out")
    args = parser.parse_args()
    started, load_before = time.perf_counter(), os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        a, b = Path(tmp) / "images.npy", Path(tmp) / "texts.npy"
        x, y = pairs(args.n, args.d)
        np.save(a, x)
        np.save(b, y)
        cmds = commands(a, b)
        for cmd in cmds.values():  # warm the file cache and the bytecode once
            timed(cmd)
        walls: dict[str, list[float]] = {k: [] for k in cmds}
        cpus: dict[str, list[float]] = {k: [] for k in cmds}
        for _ in range(args.runs):
            for name, cmd in cmds.items():
                w, c = timed(cmd)
                walls[name].append(w)
                cpus[name].append(c)
        imports = top_imports(cmds["measure"], args.top)
    floor = statistics.median(walls["python_pass"])
    cases = [
        {
            "case": name,
            "command": " ".join(Path(c).name if i == 0 else c for i, c in enumerate(cmd)),
            "wall_median_s": round(statistics.median(walls[name]), 3),
            "wall_min_s": round(min(walls[name]), 3),
            "cpu_median_s": round(statistics.median(cpus[name]), 3),
            "over_python_pass_s": round(statistics.median(walls[name]) - floor, 3),
        }
        for name, cmd in cmds.items()
    ]
    doc = {
        "benchmark": "bench_startup",
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_avg_before": load_before,
            "load_avg_at_end": os.getloadavg(),
        },
        "data": {"n_pairs": args.n, "dim": args.d, "format": ".npy pair"},
        "runs": args.runs,
        "cases": cases,
        "top_imports_of_measure": imports,
        "seconds_in_all": round(time.perf_counter() - started, 1),
    }
    text = json.dumps(doc, indent=2)
    print(text)
    if args.out:
        from modgap.files import atomic_path

        with atomic_path(args.out, ".json") as tmp_out:
            tmp_out.write_text(text + "\n")


if __name__ == "__main__":
    main()
