"""Producers and tables of the long studies (group ``studies``): the DIAS ablation of
docs/dias.md (``scripts/dias_ablation.py``, about an hour on 2 cores with an empty feature cache)
and the pocket model's demo set of docs/pocket.md (``modgap demo``: its towers, minutes)."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from . import COCO, ROOT, _load, _md, _source_line, fmt, producer, table


def _ablation(dataset: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, str(ROOT / "scripts/dias_ablation.py"), "--dataset", dataset]
        subprocess.run([*cmd, "--out", tmp], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        return {"report": json.loads((Path(tmp) / f"{dataset}.json").read_text())}


def _render_ablation(doc: dict) -> str:
    sys.path.insert(0, str(ROOT / "scripts"))
    import dias_ablation

    return dias_ablation.render(doc["report"]) + "\n\n" + _source_line(doc)


for _name in ("coco500", "coco500-scratch", "fmnist"):
    _id = f"dias-{_name}"
    producer(_id, "studies", f"nice -n 10 python scripts/dias_ablation.py --dataset {_name}")(
        lambda _name=_name: _ablation(_name)
    )
    table(_id, "docs/dias.md", _id)(_render_ablation)


@producer(
    "pocket-demo-set", "studies", "modgap demo --full --no-bench; modgap measure, modgap eval"
)
def _pocket() -> dict:
    from modgap.io import read_embeddings
    from modgap.measures import measure_all
    from modgap.tasks.suite import run_tasks

    with tempfile.TemporaryDirectory() as tmp:
        # --full: the whole test split (the default demo embeds only the first 2,000 images)
        cmd = [sys.executable, "-m", "modgap", "demo", "--full", "--no-bench", "-q"]
        subprocess.run([*cmd, "--out", f"{tmp}/demo"], cwd=ROOT, check=True)
        emb = read_embeddings(f"{tmp}/demo/fashion_mnist_pocket.npz")
        measures = measure_all(emb, seed=0)
        tasks = run_tasks(emb)
    clip = measure_all(_load(COCO), seed=0)

    def flat(m: dict) -> dict:
        return {k: v for k, v in m.items() if isinstance(v, int | float | str)}

    return {
        "data": {"pocket": emb.describe(), "clip": COCO.name},
        "pocket": flat(measures) | {"dim": emb.dim},
        "pocket_tasks": {k: v for k, v in tasks.items() if isinstance(v, int | float)},
        "clip": flat(clip) | {"dim": 512},
    }


@table("pocket-demo-set", "docs/pocket.md", "pocket-demo-set")
def _pocket_table(doc: dict) -> str:
    p, c, t = doc["pocket"], doc["clip"], doc["pocket_tasks"]
    n = doc["data"]["pocket"]
    k = n["n_classes"] or 10
    rows = [
        [
            f"zero-shot acc1, {k} classes (chance {1 / k:.2f})",
            f"**{fmt(t['acc1'])}**",
            "–",
        ],
        ["centroid gap ‖mean X − mean Y‖", f"**{fmt(p['centroid_gap'])}**", fmt(c["centroid_gap"])],
        ["cos(mean X, mean Y)", fmt(p["centroid_cosine"]), fmt(c["centroid_cosine"])],
        [
            "linear separability (balanced accuracy, chance 0.5)",
            f"**{fmt(p['linear_separability'])}**",
            fmt(c["linear_separability"]),
        ],
        ["relative modality gap (RMG)", fmt(p["rmg"]), fmt(c["rmg"])],
        [
            "ITR / TIR (∞: every nearest neighbour from the own modality)",
            f"{fmt(p['itr'], 2)} / {fmt(p['tir'], 2)}",
            f"{fmt(c['itr'], 2)} / {fmt(c['tir'], 2)}",
        ],
        [
            "TMR / IMR (mean rank of the first other-modality neighbour)",
            f"{fmt(p['tmr'], 0)} / {fmt(p['imr'], 0)}",
            f"{fmt(c['tmr'], 0)} / {fmt(c['imr'], 0)}",
        ],
        [
            f"dimensions carrying 50% / 90% of ‖Δ‖² (of {p['dim']} / {c['dim']})",
            f"{p['gap_dims_50']} / {p['gap_dims_90']}",
            f"{c['gap_dims_50']} / {c['gap_dims_90']}",
        ],
        [
            "matched-pair cosine, mean ± std",
            f"{fmt(p['matched_cosine_mean'])} ± {fmt(p['matched_cosine_std'])}",
            f"{fmt(c['matched_cosine_mean'])} ± {fmt(c['matched_cosine_std'])}",
        ],
        [
            "unmatched-pair cosine, mean ± std",
            f"{fmt(p['unmatched_cosine_mean'])} ± {fmt(p['unmatched_cosine_std'])}",
            f"{fmt(c['unmatched_cosine_mean'])} ± {fmt(c['unmatched_cosine_std'])}",
        ],
        [
            "hubness skew t2i (chance)",
            f"{fmt(p['hubness_skew_t2i'], 2)} ({fmt(p['hubness_skew_t2i_chance'], 2)})",
            f"{fmt(c['hubness_skew_t2i'], 2)} ({fmt(c['hubness_skew_t2i_chance'], 2)})",
        ],
    ]
    head = [
        "measure",
        f"pocket model, {n['n_images']:,} test images",
        "CLIP ViT-B/16, COCO-500 (reference)",
    ]
    return _md(head, rows, "lrr") + "\n\n" + _source_line(doc)


@producer("pocket-design", "studies", "python scripts/pocket_head_selection.py")
def _pocket_design() -> dict:
    cmd = [sys.executable, str(ROOT / "scripts/pocket_head_selection.py")]
    proc = subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True)
    return json.loads(proc.stdout)


@table("pocket-probe", "docs/pocket.md", "pocket-design")
def _pocket_probe_table(doc: dict) -> str:
    rows = [[r["input"], fmt(r["accuracy"]), f"{r['relative_cost']:.1f}×"] for r in doc["probe"]]
    return _md(["input", "probe accuracy", "relative cost"], rows) + "\n\n" + _source_line(doc)


@table("pocket-heads", "docs/pocket.md", "pocket-design")
def _pocket_heads_table(doc: dict) -> str:
    shipped = doc["shipped"]

    def head(width: int | None) -> str:
        return "linear" if width is None else f"MLP {width}"

    rows = []
    for r in doc["heads"]:
        cells = [
            head(r["image_hidden"]),
            head(r["text_hidden"]),
            str(r["epochs"]),
            fmt(r["val_zero_shot_acc1"]),
            fmt(r["centroid_gap"]),
        ]
        if all(r[k] == shipped[k] for k in shipped):
            cells[:4] = [f"**{c}**" for c in cells[:4]]
        rows.append(cells)
    head_row = ["image head", "text head", "epochs", "validation zero-shot acc1", "centroid gap"]
    return _md(head_row, rows, "lllrr") + "\n\nBold: the shipped heads. " + _source_line(doc)


@table("dias-conclusions", "docs/dias.md", ("dias-coco500", "dias-coco500-scratch", "dias-fmnist"))
def _dias_conclusions(docs: dict) -> str:
    from .results import _paired

    rows = []
    for did, setting, second, label in (
        ("dias-coco500", "COCO-500, fine-tuning the CLIP space (identity heads)", None, ""),
        ("dias-coco500-scratch", "COCO-500, new heads on CLIP features (from scratch)", None, ""),
        (
            "dias-fmnist",
            "Fashion-MNIST pocket heads (InfoNCE, class-level)",
            "class_map_t2i",
            "class mAP",
        ),
    ):
        rep = docs[did]["report"]
        m, s, wins, n = _paired(rep, "full DIAS", "rsum")
        dim = _paired(rep, "+ L_dim", "rsum")
        helps = m - s > 0  # the 95% interval of the paired difference above 0
        verdict = f"{m:+.1f} ± {s:.1f} rSum ({wins}/{n} runs better)".replace("-", "−")
        if second:
            m2, s2, w2, _ = _paired(rep, "full DIAS", second)
            verdict += f"; {label} {100 * m2:+.1f} ± {100 * s2:.1f} ({w2}/{n} better)"
        verdict = ("**yes**, " if helps else "no, ") + verdict
        if helps:
            verdict += f"; `L_dim` alone {dim[0]:+.1f}"
        w = rep["weights"]
        rows.append([setting, verdict, f"{w['alpha']:g}, {w['beta']:g}"])
    head = ["setting", "does full DIAS help rSum? (paired, mean ± 95% interval)", "chosen α, β = γ"]
    return (
        _md(head, rows, "lll")
        + "\n\n“Yes” when the 95% interval of the paired difference lies above 0."
    )
