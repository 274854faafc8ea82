"""Producers and tables of the timing benchmarks of ``benchmarks/`` (group ``benchmarks``).

Each producer runs one benchmark script in a subprocess (the scripts start their cases in fresh
processes themselves) and keeps the JSON it prints; the renderers turn that into the tables of
the docs, with the machine and its load average, since a timing means little without them.
"""

from __future__ import annotations

import json
import subprocess
import sys

from . import ROOT, _md, fmt, producer, table


def _run(script: str, *args: str) -> dict:
    cmd = [sys.executable, str(ROOT / "benchmarks" / script), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=False)
    if proc.returncode:
        raise SystemExit(f"error: {script} failed:\n{proc.stderr[-3000:]}")
    return {"benchmark_output": json.loads(proc.stdout)}


def _where(doc: dict) -> str:
    m = doc["machine"]
    load = m.get("load_average_after") or m["load_average"]
    return (
        f"*Measured by `{doc['command']}` on {doc['generated'][:10]}: {m['cpus']} CPUs, "
        f"{m['platform']}, load average {m['load_average'][0]:.1f} before and {load[0]:.1f} "
        f"after ({doc['seconds']:.0f} s in all).*"
    )


# ----------------------------------------------------------------------------- retrieval


@producer("bench-retrieval", "benchmarks", "nice python benchmarks/bench_retrieval.py")
def _retrieval() -> dict:
    return _run("bench_retrieval.py")


@table("bench-retrieval", "docs/tasks.md", "bench-retrieval")
def _retrieval_table(doc: dict) -> str:
    b = doc["benchmark_output"]
    c = b["cases"]
    s = b["shape"]
    labels = {
        "matmul": "one float32 matmul `Y @ Xᵀ` (hardware floor)",
        "ours": "**ours** (`retrieval_metrics`, K = 1, 5, 10, both ways)",
        "dense": "CLIP_benchmark route (full matrix + dense mask + top-k/one-hot in batches of 64)",
    }
    rows = [
        [labels[k], fmt(c[k]["time_s"], 2), fmt(c[k]["cpu_s"], 2), fmt(c[k]["peak_rss_mb"], 0)]
        for k in ("matmul", "ours", "dense")
    ]
    text = _md(["case", "wall (s)", "CPU (s)", "peak RSS (MB)"], rows)
    text += (
        f"\n\n{s['n_images']:,} images × {s['n_texts']:,} captions × {s['dim']} dims, "
        f"{c['ours']['threads']} torch threads. Ours / matmul: "
        f"**{b['ours_over_matmul_time']:.2f}× wall, {b['ours_over_matmul_cpu']:.2f}× CPU** "
        f"(target < 2×); peak **{b['ours_peak_rss_mb']:.0f} MB** (target < 1.5 GB). The dense "
        f"route is {b['dense_over_ours_time']:.1f}× slower and needs "
        f"{b['dense_peak_rss_mb'] / b['ours_peak_rss_mb']:.1f}× the memory; both exact routes "
        "give identical recalls (the script asserts it).\n\n" + _where(doc)
    )
    return text


# ----------------------------------------------------------------------------- measures


@producer("bench-measures", "benchmarks", "nice python benchmarks/bench_measures.py")
def _measures() -> dict:
    return _run("bench_measures.py")


_MEASURE_CASES = {
    "measure_all": "`measure_all` (every measure)",
    "neighbours_blocked": "neighbours, blocked (ours)",
    "neighbours_dense": "neighbours, dense (full matrix)",
    "rmg_sums": "RMG from sums (ours)",
    "rmg_dense": "RMG from n² Gram matrices",
}


@table("bench-measures", "docs/measures.md", "bench-measures")
def _measures_table(doc: dict) -> str:
    rows = []
    for r in doc["benchmark_output"]["cases"]:
        label = _MEASURE_CASES.get(r["case"], r["case"])
        shape = f"{r['n_pairs']:,} × {r.get('dim', 512)}"
        if "skipped" in r:
            rows.append([label, shape, f"skipped: {r['skipped']}", "", ""])
        elif "error" in r:
            rows.append([label, shape, f"failed: {r['error'][-120:]}", "", ""])
        else:
            rows.append(
                [
                    label,
                    shape,
                    fmt(r["time_s"], 2 if r["time_s"] < 10 else 1),
                    fmt(r["peak_rss_mb"], 0),
                    fmt(r["rss_before_mb"], 0),
                ]
            )
    head = ["case", "pairs × dims", "time (s)", "peak RSS (MB)", "RSS before (MB)"]
    cases = doc["benchmark_output"]["cases"]
    threads = {r.get("torch_threads") for r in cases} - {None}
    by = {(r["case"], r["n_pairs"]): r.get("result") for r in cases if "result" in r}
    agree = []
    for ours, dense in (("neighbours_blocked", "neighbours_dense"), ("rmg_sums", "rmg_dense")):
        n = next((k[1] for k in by if k[0] == dense), None)
        if n is None or (ours, n) not in by:
            continue
        a, b = by[(ours, n)], by[(dense, n)]
        same = ", ".join(f"{k} {_value(a[k])} / {_value(b[k])}" for k in a)
        agree.append(f"{_MEASURE_CASES[ours]} / dense at {n:,}: {same}")
    return (
        _md(head, rows, "llrrr")
        + "\n\nValues in the run (ours / dense): "
        + "; ".join(agree)
        + f". Torch CPU threads: {', '.join(map(str, sorted(threads)))}. "
        + _where(doc)
    )


def _value(v) -> str:
    return fmt(v, 10) if isinstance(v, float) and abs(v) < 1 else fmt(v, 4)


# ----------------------------------------------------------------------------- reducers


@producer("bench-reducers", "benchmarks", "nice python benchmarks/bench_reducers.py")
def _reducers() -> dict:
    return _run("bench_reducers.py")


@table("bench-reducers", "docs/reducers.md", "bench-reducers")
def _reducers_table(doc: dict) -> str:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import bench_reducers

    b = doc["benchmark_output"]
    merged = {
        "results": b["results"],
        "machines": [{**b["machine"], "what": "this run"}],
        "n_new_transformed_per_modality": b["n_new_transformed_per_modality"],
    }
    return bench_reducers.markdown(merged) + "\n\n" + _where(doc)


# ----------------------------------------------------------------------------- training


@producer(
    "bench-train", "benchmarks", "nice python benchmarks/bench_train.py --threads 1 --steps 5"
)
def _train() -> dict:
    return _run("bench_train.py", "--threads", "1", "--steps", "5")


@table("bench-train", "docs/dias.md", "bench-train")
def _train_table(doc: dict) -> str:
    b = doc["benchmark_output"]
    labels = {
        "heads": "heads (768→1024 linear, both sides)",
        "regions": "regions (36×2048 + GPO, word BiGRU + GPO)",
    }
    rows, seen = [], set()
    for r in b["results"]:
        name = r["model"] if r["model"] in seen else labels.get(r["model"], r["model"])
        seen.add(r["model"])
        where = r["device"] + (f" ({r['gpu']})" if r.get("gpu") else "")
        if "error" in r:
            rows.append([where, name, str(r["batch"]), f"failed: {r['error'][:100]}"] + [""] * 5)
            continue
        peak = (
            f"{r['dias_peak_gpu_mb']:.0f} MB GPU"
            if "dias_peak_gpu_mb" in r
            else f"{r['dias_peak_rss_mb']:.0f} MB"
        )
        rows.append(
            [
                where,
                name,
                str(r["batch"]),
                fmt(r["baseline_pairs_per_s"], 1),
                fmt(r["dias_pairs_per_s"], 1),
                f"{r['dias_terms_ms']:.1f} ms",
                fmt(r["share_isolated"], 3),
                fmt(r["share_difference"], 2),
                peak,
            ]
        )
    head = [
        "device",
        "model",
        "batch",
        "baseline pairs/s",
        "DIAS pairs/s",
        "DIAS terms (fwd+bwd)",
        "share of the DIAS step (isolated)",
        "share (step difference)",
        "peak memory",
    ]
    return (
        _md(head, rows, "llrrrrrrr")
        + f"\n\nTorch {b['torch']}, {b['steps']} timed steps per case. "
        + _where(doc)
    )


# ----------------------------------------------------------------------------- demo, I/O


@producer("bench-demo", "benchmarks", "python benchmarks/bench_demo.py")
def _demo() -> dict:
    return _run("bench_demo.py")


@table("bench-demo", "docs/pocket.md", "bench-demo")
def _demo_table(doc: dict) -> str:
    b = doc["benchmark_output"]
    rows = [
        [
            "first (`MODGAP_CACHE` empty: both towers run)",
            fmt(b["cold_s"], 0) + " s",
            fmt(b["cold_peak_rss_mb"], 0) + " MB",
        ],
        [
            "second (tower features cached)",
            fmt(b["warm_s"], 0) + " s",
            fmt(b["warm_peak_rss_mb"], 0) + " MB",
        ],
    ]
    what = "the default demo" if not b.get("limit") else f"`--limit {b['limit']}`"
    budget = (
        f" The script fails when the warm run takes over {b['warm_budget_s']:.0f} s."
        if "warm_budget_s" in b
        else ""
    )
    return (
        _md(["run", "wall time", "peak RSS"], rows)
        + f"\n\n`modgap demo {' '.join(b.get('args', []))}` ({what}), each run in a fresh "
        f"process with its own peak resident memory; cold / warm = {b['cold_over_warm']:.1f}."
        + budget
        + " "
        + _where(doc)
    )


@producer("bench-io", "benchmarks", "python benchmarks/bench_io.py")
def _io() -> dict:
    return _run("bench_io.py")


@table("bench-io", "docs/formats.md", "bench-io")
def _io_table(doc: dict) -> str:
    b = doc["benchmark_output"]
    rows = []
    for case, label, ours, base, base_label in (
        ("npy_pair", "`.npy` pair", "modgap", "numpy_load", "`np.load` + normalise"),
        (
            "clip_retrieval_fp16_8_shards",
            "clip-retrieval folder, 8 float16 shards",
            "modgap",
            "numpy_concatenate",
            "`np.concatenate` of the shards",
        ),
    ):
        for who, name in ((ours, "`read_embeddings`"), (base, base_label)):
            r = b[case][who]
            rows.append(
                [
                    label,
                    name,
                    fmt(r["seconds"], 2),
                    fmt(r["peak_rss_mb"], 0),
                    fmt(r["peak_allocated_mb"], 0),
                ]
            )
    head = ["input", "reader", "time (s)", "peak RSS (MB)", "peak allocated (MB)"]
    return (
        _md(head, rows, "llrrr")
        + f"\n\n{b['n']:,} pairs × {b['d']} dims ({b['bytes_per_matrix_mb']:.0f} MB per float32 "
        f"matrix); a Python with numpy and `modgap.io` alone takes "
        f"{b['python_with_numpy_rss_mb']:.0f} MB. " + _where(doc)
    )


# ----------------------------------------------------------------------------- scale-out


@producer(
    "bench-scale",
    "benchmarks",
    "nice python benchmarks/bench_scale.py --sizes 1000000,10000000 --dim 512 --queries 200 "
    "--budget 2GB",
)
def _scale() -> dict:
    return _run("bench_scale.py", "--sizes", "1000000,10000000", "--dim", "512", "--queries", "200")


def _pow10(n: int) -> str:
    e = len(str(n)) - 1
    return (
        f"10{str(e).translate(str.maketrans('0123456789', '⁰¹²³⁴⁵⁶⁷⁸⁹'))}"
        if n == 10**e
        else f"{n:,}"
    )


@table("bench-scale", "docs/scale.md", "bench-scale")
def _scale_table(doc: dict) -> str:
    b = doc["benchmark_output"]
    rows = []
    for n, r in b["sizes"].items():
        cold, warm = r["raw_read_cold"], r["raw_read_warm"]
        first, full = r["moments_first"], r["moments_full"]
        rows.append(
            [
                _pow10(int(n)),
                f"{cold['seconds']:.1f} s ({cold['gb_per_s']:.2f} GB/s)",
                f"{warm['seconds']:.1f} s ({warm['gb_per_s']:.2f} GB/s)",
                f"{first['seconds']:.1f} s ({first['gb_per_s']:.2f} GB/s), "
                f"**{first['throughput_vs_raw_warm']:.2f}×**",
                f"{full['seconds']:.1f} s, {full['throughput_vs_raw_warm']:.2f}×",
                f"{warm['peak_rss_mb']:,.0f} / {first['peak_rss_mb']:,.0f} / "
                f"{full['peak_rss_mb']:,.0f} MB",
            ]
        )
    head = [
        "N pairs",
        "raw read cold",
        "raw read warm",
        "first moments¹",
        "full moments² (CLI)",
        "peak RSS raw / first / full",
    ]
    nb, dk, tr = b["neighbours"], b["dask"], b["transform"]["rows_per_s"]
    lines = [
        _md(head, rows),
        "",
        "¹ centroid, per-dimension gap, RMG, alignment. ² the same plus the Fréchet distance "
        f"(scatter matrices), through `modgap measure --stream --memory-budget {b['budget']}`. "
        f"{b['dim']} dims, float16 shards of {b['shard_rows']:,} rows.",
        "",
        f"- **Sampled neighbour diagnostics** at {_pow10(nb['n'])} pairs, {nb['queries']} "
        f"queries per modality: {nb['seconds']:.0f} s, peak {nb['peak_rss_mb']:,.0f} MB; "
        f"ITR {fmt(nb['itr'], 3)} [{fmt(nb['itr_interval'][0], 3)}, "
        f"{fmt(nb['itr_interval'][1], 3)}]. A float32 matmul of the same flops at the "
        f"{nb['matmul_gflops']:.0f} GFLOP/s measured in the run would take "
        f"{nb['predicted_s_at_matmul_speed']:.0f} s: the scans run at "
        f"**{nb['seconds_over_predicted']:.1f}×** the matmul time.",
        f"- **Dask vs in-process** (full moments, {_pow10(dk['n'])} pairs): "
        f"{dk['in_process_s']:.1f} s in-process, {dk['dask_2_workers_s']:.1f} s on a local "
        f"cluster of 2 worker processes (**{dk['ratio']:.2f}×**); the same centroid gap bit for "
        f"bit: {'yes' if dk['same_centroid_gap'] else 'NO'}.",
        "- **Transform throughput** (rows/s, `transform_images` after fitting on a 2,000-image "
        "sample): " + "; ".join(f"{k} {v:,.0f}" for k, v in tr.items()) + ".",
        "",
    ]
    pr = b["projection"]
    prow = []
    for total, p in pr["totals"].items():
        t = int(total)
        prow.append(
            [
                _pow10(t),
                f"{t // b['shard_rows']:,}",
                f"{p['bytes'] / 1e9:,.0f} GB",
                *(_duration(p[f"{w}_workers_s"]) for w in (1, 8, 64)),
                _duration(p["network_floor_s_at_10Gbps_total"]),
            ]
        )
    lines += [
        f"Projection from the measured full-moment cost per {b['shard_rows']:,}-row shard "
        f"({pr['per_shard_s']:.1f} s on one worker of this machine):",
        "",
        _md(
            ["pairs", "shards", "data", "1 worker", "8 workers", "64 workers", "network floor"],
            prow,
        ),
        "",
        "Network floor: reading the data once from object storage at 10 Gb/s in total. "
        + _where(doc),
    ]
    return "\n".join(lines)


def _duration(s: float) -> str:
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"
