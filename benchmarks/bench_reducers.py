"""Fit/transform time and peak memory of every reducer at 2,000, 20,000 and 100,000 pairs, next to
the naive dense route measured in the same run.

Every case runs in a fresh subprocess; peak memory is the process's peak resident set
(``VmHWM``, reset through ``/proc/self/clear_refs`` after the data is generated, so it counts
what fit and transform add on top of the input arrays; ``data_rss_mb`` is the input's own
footprint). Torch allocations are included, which ``tracemalloc`` would miss.

Baselines ("naive dense route"):
- ``spectral-dense-eigh``: all cross-modal weights (no kNN), the full (n+m) x (n+m) normalised
  bipartite Laplacian, ``numpy.linalg.eigh``;
- ``pot-sinkhorn-dense``: POT ``ot.sinkhorn(method="sinkhorn_log")`` on the dense float64 cost
  matrix, then the barycentric map ``P @ Y``.

Usage::

    nice python benchmarks/bench_reducers.py [--sizes 2000,20000,100000] [--only NAMES]
        [--dim 512] [--out results.json]

Prints one JSON document (machine, load average before/after, one record per case).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

import numpy as np

SIZES = (2000, 20000, 100000)
N_NEW = 10000  # unseen points per modality for the transform timing
CASE_TIMEOUT_S = 1200

# (case name, reducer name or baseline, parameters)
CASES = [
    ("center", "center", {}),
    ("shift", "shift", {}),
    ("gaussian", "gaussian", {}),
    ("procrustes", "procrustes", {}),
    ("spectral[arpack]", "spectral", {"solver": "arpack"}),
    ("spectral[randomized]", "spectral", {"solver": "randomized"}),
    ("spectral[lobpcg]", "spectral", {"solver": "lobpcg"}),
    ("spectral-dense-eigh", "baseline:spectral-dense-eigh", {"n_components": 60}),
    ("ot-laplace", "ot-laplace", {}),
    ("ot-sinkhorn", "ot-sinkhorn", {}),
    ("pot-sinkhorn-dense", "baseline:pot-sinkhorn-dense", {"reg": 0.05}),
]


def skip_reason(case: str, n: int, d: int) -> str | None:
    """Why a case is not run at this size (None: run it)."""
    gb = 2**30
    if case == "ot-laplace" and n > 5000:
        return "exact OT is cubic in n: refused above max_size=5000 per side (use ot-sinkhorn)"
    if case == "spectral-dense-eigh" and (2 * n) ** 2 * 8 * 3 > 8 * gb:
        need = (2 * n) ** 2 * 8 * 3 / gb
        return f"dense (2n)^2 Laplacian and its eigenvectors need ~{need:.0f} GB (> 8 GB)"
    if case == "pot-sinkhorn-dense" and n * n * 8 * 4 > 8 * gb:
        return f"dense float64 cost, kernel and plan need ~{n * n * 8 * 4 / gb:.0f} GB (> 8 GB)"
    if case == "ot-sinkhorn" and n * n * 4 > 2 * gb:
        flops = 4 * n * n * d
        return (
            f"the {n * n * 4 / gb:.0f} GB cost matrix is far above the memory budget, so every "
            f"Sinkhorn iteration recomputes it blockwise (~{flops / 1e12:.0f} TFLOP per "
            "iteration): hours on 2 CPU cores; run with device='cuda'"
        )
    if case == "spectral[randomized]" and n > 20000:
        return (
            "one solver at 100,000 keeps the run short on 2 shared cores; ARPACK is the "
            "default because it is exact to its tolerance whatever the spectral gap"
        )
    if case == "spectral[lobpcg]" and n > 2000:
        return "lobpcg was the slowest solver at 2,000 pairs; not repeated at larger sizes"
    return None


# -- data -------------------------------------------------------------------------------------
def make_pairs(n: int, d: int, seed: int = 0, n_clusters: int = 1000):
    """Paired embeddings with CLIP ViT-B/16's statistics on COCO (unit rows, float32).

    Each row is a modality offset (squared norm 1.1; the two offsets have cosine 0.3) plus a
    unit-variance part: a shared semantic vector (variance 0.32, itself 36% cluster centre,
    64% individual) and modality noise. This reproduces COCO-500's matched cosine (0.31),
    unmatched cosine (0.16 +- 0.05) and within-modality cosine (0.53).
    """
    rng = np.random.default_rng(seed)
    structure = np.random.default_rng(12345)  # offsets and clusters are the same in every call
    centres = structure.standard_normal((n_clusters, d)).astype(np.float32) / np.sqrt(d)
    o1, o2 = structure.standard_normal((2, d))
    o1 /= np.linalg.norm(o1)
    o2 -= (o2 @ o1) * o1
    o2 /= np.linalg.norm(o2)
    off_i = (np.sqrt(1.1) * o1).astype(np.float32)
    off_t = (np.sqrt(1.1) * (0.3 * o1 + np.sqrt(1 - 0.09) * o2)).astype(np.float32)
    X = np.empty((n, d), np.float32)
    Y = np.empty((n, d), np.float32)
    scale = np.float32(1 / np.sqrt(d))
    for start in range(0, n, 20000):
        b = min(20000, n - start)
        u = 0.6 * centres[rng.integers(0, n_clusters, b)]
        u += 0.8 * scale * rng.standard_normal((b, d), np.float32)
        z = np.sqrt(0.32) * u
        X[start : start + b] = z + np.sqrt(0.68) * scale * rng.standard_normal((b, d), np.float32)
        Y[start : start + b] = z + np.sqrt(0.68) * scale * rng.standard_normal((b, d), np.float32)
        X[start : start + b] += off_i
        Y[start : start + b] += off_t
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    Y /= np.linalg.norm(Y, axis=1, keepdims=True)
    return X, Y


# -- memory -------------------------------------------------------------------------------------
def _status_mb(field: str) -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _reset_peak() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass


# -- one case, in this (fresh) process -------------------------------------------------------
def _dense_eigh(X, Y, k):
    W = np.exp((X.astype(np.float64) @ Y.T.astype(np.float64) - 1) / 0.05)
    n, m = W.shape
    A = np.zeros((n + m, n + m))
    A[:n, n:] = W
    A[n:, :n] = W.T
    del W
    d = A.sum(1)
    r = 1 / np.sqrt(d)
    L = np.eye(n + m) - r[:, None] * A * r[None, :]
    del A
    _, vecs = np.linalg.eigh(L)
    return vecs[:, 1 : k + 1] * r[:, None]


def _pot_sinkhorn(X, Y, reg):
    import ot

    M = ot.dist(X.astype(np.float64), Y.astype(np.float64))
    a = np.full(X.shape[0], 1 / X.shape[0])
    b = np.full(Y.shape[0], 1 / Y.shape[0])
    P = ot.sinkhorn(a, b, M, reg, method="sinkhorn_log", stopThr=1e-4, numItermax=2000)
    return (P @ Y) / P.sum(1, keepdims=True)


def run_case(case: str, n: int, d: int) -> dict:
    _, target, params = next(c for c in CASES if c[0] == case)
    X, Y = make_pairs(n, d, seed=0)
    n_new = min(n, N_NEW)
    Xn, Yn = make_pairs(n_new, d, seed=1)
    data_mb = _status_mb("VmRSS")
    _reset_peak()
    rec: dict = {"case": case, "n_pairs": n, "dim": d, "params": params}
    from modgap.reducers import get_reducer  # imported before the clock starts

    t0 = time.perf_counter()
    if target == "baseline:spectral-dense-eigh":
        _dense_eigh(X, Y, params["n_components"])
        rec["fit_s"] = time.perf_counter() - t0
        rec["transform_s"] = None
        rec["note"] = "transductive: no out-of-sample map"
    elif target == "baseline:pot-sinkhorn-dense":
        _pot_sinkhorn(X, Y, params["reg"])
        rec["fit_s"] = time.perf_counter() - t0
        rec["transform_s"] = None
        rec["note"] = "fit includes the barycentric map of the fitted points; no out-of-sample"
    else:
        r = get_reducer(target, **params)
        r.fit(X, Y)
        rec["fit_s"] = time.perf_counter() - t0
        rec["peak_rss_fit_mb"] = _status_mb("VmHWM")
        _reset_peak()
        t1 = time.perf_counter()
        r.transform_images(Xn)
        r.transform_texts(Yn)
        rec["transform_s"] = time.perf_counter() - t1
        rec["transform_n"] = 2 * n_new
        if hasattr(r, "n_iter_"):
            rec["n_iter"] = r.n_iter_
        if hasattr(r, "singular_values_"):
            rec["sigma_1"] = float(r.singular_values_[0])
            rec["graph_s"] = r.graph_seconds_
            rec["svd_s"] = r.svd_seconds_
        rec["peak_rss_transform_mb"] = _status_mb("VmHWM")
    rec.setdefault("peak_rss_fit_mb", _status_mb("VmHWM"))
    rec["data_rss_mb"] = data_mb
    ru = resource.getrusage(resource.RUSAGE_SELF)
    rec["cpu_s_total"] = ru.ru_utime + ru.ru_stime  # includes data generation
    return rec


def markdown(doc: dict) -> str:
    """The results of one run as a markdown table (for docs/reducers.md)."""

    def num(v, fmt="{:.1f}"):
        return "–" if v is None else fmt.format(v)

    lines = [
        "| pairs | case | fit s | transform s | peak RSS fit MB | peak RSS transform MB | "
        "CPU s | note |",
        "|---:|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in doc["results"]:
        n = f"{r['n_pairs']:,}"
        if "skipped" in r:
            # the reason as the current script states it (skips are decided, not measured)
            why = skip_reason(r["case"], r["n_pairs"], r.get("dim", 512)) or r["skipped"]
            lines.append(f"| {n} | {r['case']} | – | – | – | – | – | skipped: {why} |")
            continue
        if "error" in r:
            lines.append(f"| {n} | {r['case']} | – | – | – | – | – | {r['error']} |")
            continue
        note = r.get("note", "")
        if "graph_s" in r:
            note = f"graph {r['graph_s']:.0f} s, SVD {r['svd_s']:.0f} s"
        if "n_iter" in r:
            note = f"{r['n_iter']} Sinkhorn iterations"
        lines.append(
            f"| {n} | {r['case']} | {num(r['fit_s'])} | {num(r.get('transform_s'))} | "
            f"{num(r.get('peak_rss_fit_mb'), '{:.0f}')} | "
            f"{num(r.get('peak_rss_transform_mb'), '{:.0f}')} | "
            f"{num(r.get('cpu_s_total'))} | {note} |"
        )
    n_new = doc["n_new_transformed_per_modality"]
    lines.append("")
    for m in doc["machines"]:
        lines.append(
            f"- {m['what']}: {m['cpus']} CPUs, load average {m['loadavg_start'][0]:.1f} at the "
            f"start and {m['loadavg_end'][0]:.1f} at the end."
        )
    lines.append(f"- transform = {n_new:,} unseen images + as many texts (n when smaller).")
    return "\n".join(lines)


def merge_runs(paths: list[str]) -> dict:
    """Records of several runs; a later run's record replaces an earlier one of the same case
    and size (used when a case is re-measured after a change)."""
    merged: dict = {}
    machines = []
    doc = {}
    for path in paths:
        with open(path) as fh:
            doc = json.load(fh)
        cases = sorted({r["case"] for r in doc["results"]})
        sizes = sorted({r["n_pairs"] for r in doc["results"]})
        name = os.path.basename(path)
        machines.append({**doc["machine"], "what": f"{name}: {', '.join(cases)} at {sizes}"})
        for r in doc["results"]:
            merged[(r["n_pairs"], r["case"])] = r
    order = {c[0]: i for i, c in enumerate(CASES)}
    results = sorted(merged.values(), key=lambda r: (r["n_pairs"], order[r["case"]]))
    return {
        "results": results,
        "machines": machines,
        "n_new_transformed_per_modality": doc["n_new_transformed_per_modality"],
    }


# -- driver ---------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default=",".join(map(str, SIZES)))
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--only", default=None, help="comma-separated case names")
    ap.add_argument("--out", default=None, help="also write the JSON here")
    ap.add_argument(
        "--markdown", nargs="+", default=None, help="print JSON result file(s) as markdown"
    )
    ap.add_argument("--case", default=None, help=argparse.SUPPRESS)  # child mode
    ap.add_argument("--n", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.case:
        print(json.dumps(run_case(args.case, args.n, args.dim)))
        return 0
    if args.markdown:
        print(markdown(merge_runs(args.markdown)))
        return 0

    sizes = [int(s) for s in args.sizes.split(",") if s]
    only = set(args.only.split(",")) if args.only else None
    doc = {
        "benchmark": "reducers",
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "loadavg_start": os.getloadavg(),
        },
        "n_new_transformed_per_modality": N_NEW,
        "results": [],
    }
    for n in sizes:
        for case, _, _ in CASES:
            if only and case not in only:
                continue
            reason = skip_reason(case, n, args.dim)
            if reason:
                doc["results"].append({"case": case, "n_pairs": n, "skipped": reason})
                continue
            cmd = [sys.executable, __file__, "--case", case, "--n", str(n), "--dim", str(args.dim)]
            t0 = time.perf_counter()
            try:
                proc = subprocess.run(
                    cmd, capture_output=True, text=True, timeout=CASE_TIMEOUT_S, check=False
                )
            except subprocess.TimeoutExpired:
                rec = {"case": case, "n_pairs": n, "error": f"timed out after {CASE_TIMEOUT_S} s"}
            else:
                if proc.returncode == 0:
                    rec = json.loads(proc.stdout.strip().splitlines()[-1])
                else:
                    tail = (proc.stderr or "").strip().splitlines()[-1:] or ["?"]
                    rec = {"case": case, "n_pairs": n, "error": tail[0][:300]}
            rec["wall_s"] = time.perf_counter() - t0
            rec["loadavg_after"] = os.getloadavg()[0]
            doc["results"].append(rec)
            print(json.dumps(rec), file=sys.stderr, flush=True)
    doc["machine"]["loadavg_end"] = os.getloadavg()
    text = json.dumps(doc, indent=2)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
