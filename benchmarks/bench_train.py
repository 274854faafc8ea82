"""Training throughput and the cost of the DIAS terms.

Prints JSON: for each device (CPU, and CUDA when available), model and batch size (128, 256) at
joint dim 1024, the training throughput in pairs/s of (a) the baseline objective (VSE++ triplet
only) and (b) full DIAS (L_dim + inter + intra with the sparse mean+std mask), and the share of
the DIAS step spent in the DIAS terms, measured two ways:

- ``share_isolated``: forward + backward of the three DIAS terms alone on the step's joint
  embeddings, divided by the DIAS step time;
- ``share_difference``: (DIAS step - baseline step) / DIAS step.

Models: ``heads`` (heads-only over 768-d frozen embeddings, the LiT-style mode: the cheapest
model, so the DIAS share is at its largest) and ``regions`` (36 region features of 2048-d
pooled by GPO, captions of 12 words through a BiGRU: the VSE∞ shape).

Each case runs in a fresh subprocess so its peak memory (``ru_maxrss``, CPU) is its own; on
CUDA the peak allocated memory is reported. Run with nice on a shared machine:

    nice -n 10 .venv/bin/python benchmarks/bench_train.py [--steps 6] [--devices cpu,cuda]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def one_case(device: str, model: str, batch: int, dias: bool, steps: int, threads: int) -> dict:
    import torch

    sys.path.insert(0, str(ROOT / "src"))
    from modgap.train.losses import DIASLoss
    from modgap.train.model import FeatureEncoder, MatchingModel, WordGRUEncoder

    torch.manual_seed(0)
    if threads:
        torch.set_num_threads(threads)
    dev = torch.device(device)
    joint = 1024
    if model == "heads":
        net = MatchingModel(FeatureEncoder(768, joint), FeatureEncoder(768, joint))
        images = torch.randn(batch, 768, device=dev)
        texts, lengths = torch.randn(batch, 768, device=dev), None
    else:
        net = MatchingModel(
            FeatureEncoder(2048, joint, head="mlp", pooling="gpo"),
            WordGRUEncoder(10000, joint, word_dim=300, pooling="gpo"),
        )
        images = torch.randn(batch, 36, 2048, device=dev)
        texts = torch.randint(2, 10000, (batch, 12), device=dev)
        lengths = torch.full((batch,), 12, device=dev)
    net.to(dev)
    weights = {"alpha": 0.01, "beta": 1.0, "gamma": 1.0} if dias else {}
    loss = DIASLoss("triplet", mask_rule="mean_std", **weights).to(dev)
    terms_only = DIASLoss("triplet", alpha=0.01, beta=1.0, gamma=1.0, mask_rule="mean_std")
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    ids = torch.arange(batch, device=dev)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def step():
        v, t = net(images, texts, None, lengths)
        total, _ = loss(v, t, ids)
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        return v.detach(), t.detach()

    for _ in range(2):  # warm-up (allocator, kernels)
        step()
    sync()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        v, t = step()
        sync()
        times.append(time.perf_counter() - t0)
    step_s = sorted(times)[len(times) // 2]

    # the DIAS terms alone (forward + backward) on embeddings of this step
    term_times = []
    for _ in range(steps):
        vv, tt = v.clone().requires_grad_(True), t.clone().requires_grad_(True)
        sync()
        t0 = time.perf_counter()
        parts = (
            terms_only.weights["dim"] * terms_only.dim(vv, tt, ids)
            + terms_only.weights["inter"] * terms_only.inter(vv, tt, ids)
            + terms_only.weights["intra"] * terms_only.intra(vv, tt, ids)
        )
        parts.backward()
        sync()
        term_times.append(time.perf_counter() - t0)
    terms_s = sorted(term_times)[len(term_times) // 2]
    out = {
        "device": device,
        "model": model,
        "batch": batch,
        "joint_dim": joint,
        "objective": "dias" if dias else "triplet",
        "step_ms": 1e3 * step_s,
        "pairs_per_s": batch / step_s,
        "dias_terms_ms": 1e3 * terms_s,
        "threads": torch.get_num_threads(),
    }
    if dev.type == "cuda":
        out["peak_gpu_mb"] = torch.cuda.max_memory_allocated(dev) / 2**20
        out["gpu"] = torch.cuda.get_device_name(dev)
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def run_case(args, device, model, batch, dias) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--case",
        json.dumps([device, model, batch, dias, args.steps, args.threads]),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        return {"device": device, "model": model, "batch": batch, "error": proc.stderr[-800:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--case", help=argparse.SUPPRESS)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    p.add_argument("--devices", default=None, help="comma list; default cpu (+cuda if present)")
    p.add_argument("--models", default="heads,regions")
    p.add_argument("--batches", default="128,256")
    args = p.parse_args(argv)
    if args.case:
        print(json.dumps(one_case(*json.loads(args.case))))
        return
    import torch

    devices = args.devices.split(",") if args.devices else ["cpu"]
    if args.devices is None and torch.cuda.is_available():
        devices.append("cuda")
    results = []
    for device in devices:
        for model in args.models.split(","):
            for batch in map(int, args.batches.split(",")):
                base = run_case(args, device, model, batch, False)
                dias = run_case(args, device, model, batch, True)
                row = {"device": device, "model": model, "batch": batch, "joint_dim": 1024}
                if "error" in base or "error" in dias:
                    row["error"] = base.get("error") or dias.get("error")
                else:
                    row.update(
                        {
                            "baseline_pairs_per_s": round(base["pairs_per_s"], 1),
                            "dias_pairs_per_s": round(dias["pairs_per_s"], 1),
                            "baseline_step_ms": round(base["step_ms"], 2),
                            "dias_step_ms": round(dias["step_ms"], 2),
                            "dias_terms_ms": round(dias["dias_terms_ms"], 2),
                            "share_isolated": round(dias["dias_terms_ms"] / dias["step_ms"], 3),
                            "share_difference": round(
                                (dias["step_ms"] - base["step_ms"]) / dias["step_ms"], 3
                            ),
                            "baseline_peak_rss_mb": round(base["peak_rss_mb"], 1),
                            "dias_peak_rss_mb": round(dias["peak_rss_mb"], 1),
                            "threads": dias["threads"],
                        }
                    )
                    if "peak_gpu_mb" in dias:
                        row["baseline_peak_gpu_mb"] = round(base["peak_gpu_mb"], 1)
                        row["dias_peak_gpu_mb"] = round(dias["peak_gpu_mb"], 1)
                        row["gpu"] = dias["gpu"]
                results.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
    print(
        json.dumps(
            {
                "benchmark": "train",
                "torch": torch.__version__,
                "python": platform.python_version(),
                "machine": platform.machine(),
                "steps": args.steps,
                "results": results,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
