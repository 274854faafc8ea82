"""Producers and tables of results on the shared COCO-500 CLIP files (group ``coco500``)."""

from __future__ import annotations

import math
import sys
import warnings

import numpy as np

from . import (
    COCO,
    COCO_RANDOM,
    ROOT,
    _load,
    _md,
    _source_line,
    fmt,
    producer,
    single_threaded,
    table,
)


@producer("measures-coco500", "coco500")
@single_threaded
def _measures() -> dict:
    from modgap.measures import measure_all

    out = {}
    for label, path in (("clip", COCO), ("random", COCO_RANDOM)):
        m = measure_all(_load(path), seed=0)
        m.pop("matched_cosine")
        m.pop("unmatched_cosine")
        pd = m.pop("per_dimension")
        m["top_dims"] = pd["top_dims"][:3]
        m["top_share"] = pd["top_share"][:3]
        m["dim"] = pd["dim"]
        out[label] = m
    return {"data": {"clip": COCO.name, "random": COCO_RANDOM.name}, "measures": out}


#: rows of the measures table: (label, key or key pair, digits)
_MEASURE_ROWS = [
    ("`centroid_gap`", ("centroid_gap",), 4),
    ("`centroid_cosine`", ("centroid_cosine",), 4),
    ("`gap_dims_50` / `gap_dims_90`", ("gap_dims_50", "gap_dims_90"), 0),
    ("`linear_separability`", ("linear_separability",), 3),
    ("`rmg`", ("rmg",), 4),
    ("`rmg_chance`: RMG if pairs carry no information", ("rmg_chance",), 4),
    ("`itr` / `tir`", ("itr", "tir"), 2),
    ("`tmr` / `imr`", ("tmr", "imr"), 1),
    ("`frechet_distance`", ("frechet_distance",), 3),
    ("  centroid / covariance term", ("frechet_centroid_term", "frechet_covariance_term"), 3),
    ("`alignment`", ("alignment",), 3),
    ("`uniformity_image` / `_text`", ("uniformity_image", "uniformity_text"), 3),
    ("`uniformity_cross`", ("uniformity_cross",), 3),
    ("`matched_cosine_mean` ± std", ("matched_cosine_mean", "matched_cosine_std"), 3),
    ("`unmatched_cosine_mean` ± std", ("unmatched_cosine_mean", "unmatched_cosine_std"), 3),
]


def _measure_cell(m: dict, keys: tuple[str, ...], digits: int) -> str:
    vals = [m[k] for k in keys]
    sep = " ± " if keys[0].endswith("_mean") else " / "
    return sep.join(fmt(v, digits) if digits else fmt(int(v)) for v in vals)


@table("measures-coco500", "docs/measures.md", "measures-coco500")
def _measures_table(doc: dict) -> str:
    from modgap.cli.measure_cmd import DESCRIPTIONS

    clip, rnd = doc["measures"]["clip"], doc["measures"]["random"]
    rows = []
    for label, keys, digits in _MEASURE_ROWS:
        ref = DESCRIPTIONS.get(keys[0], ("", ""))[1]
        if ref == "chance":  # a value of the data itself, in the next row
            ref = f"0; `{keys[0]}_chance` if pairs carry no information"
        rows.append(
            [label, _measure_cell(clip, keys, digits), _measure_cell(rnd, keys, digits), ref]
        )
        if keys[0] == "gap_dims_50":
            top = ", ".join(
                f"{d} ({s:.0%})" for d, s in zip(clip["top_dims"], clip["top_share"], strict=True)
            )
            rows.append([f"top gap dimensions of {clip['dim']} (share of ‖Δ‖²)", top, "—", ""])
    head = ["key", "CLIP ViT-B/16", "random-init CLIP", "no gap / chance"]
    return _md(head, rows, "lrrl") + "\n\n" + _source_line(doc)


@table("hubness-coco500", "docs/measures.md", "measures-coco500")
def _hubness_table(doc: dict) -> str:
    clip, rnd = doc["measures"]["clip"], doc["measures"]["random"]
    rows = []
    for key, label, digits in (
        ("hubness_skew", "`hubness_skew`", 2),
        ("antihub_share", "`antihub_share`", 3),
        ("hub_occupancy", "`hub_occupancy` (5 hubs)", 3),
        ("hubness_max", "`hubness_max`", 0),
    ):
        cells = []
        for m in (clip, rnd):
            a, b = m[f"{key}_t2i"], m[f"{key}_i2t"]
            cells.append(
                f"{fmt(a, digits)} / {fmt(b, digits)}" if digits else f"{fmt(a)} / {fmt(b)}"
            )
        chance = clip[f"{key}_t2i_chance"]
        cells.append(f"{chance:.2g}" if chance < 0.01 else fmt(chance, max(digits, 1)))
        rows.append([label, *cells])
    head = ["key (t2i / i2t)", "CLIP ViT-B/16", "random-init CLIP", "chance"]
    return _md(head, rows) + "\n\n" + _source_line(doc)


def _k_occurrence_dense(S: np.ndarray, k: int) -> np.ndarray:
    """How often each column is in a row's top k (ties to the lower column), float64 scores."""
    order = np.lexsort((np.broadcast_to(np.arange(S.shape[1]), S.shape), -S), axis=1)
    return np.bincount(order[:, :k].ravel(), minlength=S.shape[1])


@producer("hubness-corrections-coco500", "coco500")
@single_threaded
def _hubness_corrections() -> dict:
    from scipy.stats import skew

    from modgap.measures.hubness import random_retrieval_hubness
    from modgap.tasks.scoring import CSLS, InvertedSoftmax, QBNorm

    fit, test = _load(COCO).split(0.5, seed=0)
    X = test.image_emb.astype(np.float64)
    Y = test.text_emb.astype(np.float64)
    S = Y @ X.T  # text queries x image candidates
    k = 10
    rows = {}
    for name, corr in (
        ("none", None),
        ("CSLS(k=10)", CSLS()),
        ("InvertedSoftmax(beta=20)", InvertedSoftmax()),
        ("QBNorm(k=1, beta=20)", QBNorm()),
    ):
        t2i, i2t = S, S.T
        if corr is not None:
            off = corr.fit(fit).offsets(test.image_emb, test.text_emb)
            ta = np.ones(S.shape[0]) if off.text_active is None else off.text_active
            ia = np.ones(S.shape[1]) if off.image_active is None else off.image_active
            t2i = S - ta[:, None] * off.image_offset[None, :].astype(np.float64)
            i2t = S.T - ia[:, None] * off.text_offset[None, :].astype(np.float64)
        rows[name] = {
            "t2i": float(skew(_k_occurrence_dense(t2i, k).astype(float))),
            "i2t": float(skew(_k_occurrence_dense(i2t, k).astype(float))),
        }
    chance = random_retrieval_hubness(test.n_images, test.n_texts, k)
    return {
        "data": COCO.name,
        "split": {"seed": 0, "fit_images": fit.n_images, "test_images": test.n_images},
        "k": k,
        "skewness": rows,
        "chance": chance,
    }


@table("hubness-corrections-coco500", "docs/measures.md", "hubness-corrections-coco500")
def _hubness_corrections_table(doc: dict) -> str:
    rows = [[n, fmt(v["t2i"], 2), fmt(v["i2t"], 2)] for n, v in doc["skewness"].items()]
    chance = doc["chance"]
    skew_chance = chance["skew"] if isinstance(chance, dict) else chance
    rows.append(["random retrieval (chance)", fmt(skew_chance, 2), fmt(skew_chance, 2)])
    s = doc["split"]
    head = [f"N_{doc['k']} skewness, held-out half", "t2i", "i2t"]
    note = (
        f"Split seed {s['seed']}: corrections fitted on {s['fit_images']} images and their "
        f"captions, counts on the other {s['test_images']} from the dense corrected float64 scores."
    )
    return _md(head, rows) + "\n\n" + note + " " + _source_line(doc)


@producer("retrieval-coco500", "coco500")
def _retrieval() -> dict:
    from modgap.tasks.retrieval import retrieval_metrics

    emb = _load(COCO)
    return {
        "data": COCO.name,
        "all": retrieval_metrics(emb.image_emb, emb.text_emb, ks=(1, 5, 10)),
        "folds5": retrieval_metrics(emb.image_emb, emb.text_emb, ks=(1, 5, 10), folds=5),
    }


@table("retrieval-coco500", "docs/tasks.md", "retrieval-coco500")
def _retrieval_table(doc: dict) -> str:
    rows = []
    for label, m in (
        ("all 500 images", doc["all"]),
        ("5 folds of 100 images (`folds=5`)", doc["folds5"]),
    ):
        cells = [fmt(m[f"text_retrieval_recall@{k}"]) for k in (1, 5, 10)]
        cells += [fmt(m[f"image_retrieval_recall@{k}"]) for k in (1, 5, 10)]
        rows.append([label, *cells, fmt(m["rsum"], 1)])
    head = ["protocol", "i→t R@1", "R@5", "R@10", "t→i R@1", "R@5", "R@10", "rSum"]
    a = doc["all"]
    ranks = (
        f"median rank {fmt(a['i2t_median_rank'], 0)} (i→t) and {fmt(a['t2i_median_rank'], 0)} "
        f"(t→i), mean rank {fmt(a['i2t_mean_rank'], 2)} and {fmt(a['t2i_mean_rank'], 2)}"
    )
    return _md(head, rows) + f"\n\nOn all 500: {ranks}. " + _source_line(doc)


_CORRECTIONS = [
    ("none", None, {}),
    ("`CSLS(k=10)`", "csls", {}),
    ("`InvertedSoftmax(beta=20)`", "inverted-softmax", {}),
    ("`QBNorm(k=1, beta=20)`", "qb-norm", {}),
    ("`InvertedSoftmax(beta=50)`", "inverted-softmax", {"beta": 50.0}),
    ("`QBNorm(k=1, beta=50)`", "qb-norm", {"beta": 50.0}),
]


@producer("corrections-coco500", "coco500")
@single_threaded
def _corrections() -> dict:
    from modgap.tasks.retrieval import retrieval_metrics
    from modgap.tasks.scoring import get_correction

    emb = _load(COCO)
    seeds = list(range(10))
    runs: dict[str, list] = {label: [] for label, _, _ in _CORRECTIONS}
    for seed in seeds:
        fit, test = emb.split(0.5, seed=seed)
        for label, name, params in _CORRECTIONS:
            corr = None if name is None else get_correction(name, **params).fit(fit)
            m = retrieval_metrics(
                test.image_emb, test.text_emb, test.text_to_image, correction=corr
            )
            runs[label].append(
                {
                    "i2t_r1": m["text_retrieval_recall@1"],
                    "t2i_r1": m["image_retrieval_recall@1"],
                    "rsum": m["rsum"],
                }
            )
    return {"data": COCO.name, "seeds": seeds, "test_fraction": 0.5, "runs": runs}


def _mean_se(values: list[float]) -> tuple[float, float]:
    a = np.asarray(values, dtype=float)
    return float(a.mean()), float(a.std(ddof=1) / math.sqrt(len(a)))


@table("corrections-coco500", "docs/tasks.md", "corrections-coco500")
def _corrections_table(doc: dict) -> str:
    from modgap.bench.stats import paired

    runs = doc["runs"]
    base = runs["none"]
    ratio = doc["test_fraction"] / (1 - doc["test_fraction"])
    rows = []
    for label, rs in runs.items():
        cells = [label]
        for key in ("i2t_r1", "t2i_r1"):
            mean, _ = _mean_se([r[key] for r in rs])
            cells.append(fmt(mean))
            if label == "none":
                cells.append("")
                continue
            # the bench's paired 95% interval: splits of one set overlap (evaluated / fitted)
            diff = paired(
                [r[key] for r in rs], [b[key] for b in base], ratio, "text_retrieval_recall@1"
            )
            half = (diff["ci95"][1] - diff["ci95"][0]) / 2
            text = f"{diff['mean']:+.3f} ± {half:.3f}".replace("-", "−")
            cells.append(f"**{text}**" if diff["significant"] and diff["mean"] > 0 else text)
        cells.append(fmt(_mean_se([r["rsum"] for r in rs])[0], 1))
        rows.append(cells)
    head = ["correction", "i→t R@1", "change", "t→i R@1", "change", "rSum"]
    note = (
        f"{len(doc['seeds'])} random splits (seeds {doc['seeds'][0]}–{doc['seeds'][-1]}); "
        "mean R@1, the mean change against none ± the half-width of its paired 95% corrected "
        "resampled t interval (Nadeau & Bengio 2003; bold: the interval lies above 0)."
    )
    return _md(head, rows) + "\n\n" + note + " " + _source_line(doc)


@single_threaded
def _bench(transductive: bool) -> dict:
    from modgap.bench import run_bench
    from modgap.tasks.scoring import CORRECTIONS

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        doc, _ = run_bench(
            _load(COCO),
            transductive=transductive,
            seed=0,
            repeats=3,
            corrections=list(CORRECTIONS),
        )
    for row in doc["results"].values():
        row.pop("details", None)
    doc["provenance"] = {
        k: doc["provenance"][k] for k in ("versions", "python") if k in doc["provenance"]
    }
    return doc


@producer(
    "bench-coco500-heldout",
    "coco500",
    "modgap bench ../shared/data/real/coco500_clip_vitb16.npz --repeats 3 "
    "--corrections csls,inverted-softmax,qb-norm --out DIR",
)
def _bench_heldout() -> dict:
    return _bench(False)


@producer(
    "bench-coco500-transductive",
    "coco500",
    "modgap bench ../shared/data/real/coco500_clip_vitb16.npz --repeats 3 --transductive "
    "--corrections csls,inverted-softmax,qb-norm --out DIR",
)
def _bench_transductive() -> dict:
    return _bench(True)


def _bench_table(doc: dict) -> str:
    from modgap.report.tables import summary_markdown

    s = doc["setting"]
    lines = [
        summary_markdown(doc),
        "",
        f"{s['protocol']}: {s['protocol_note']} (seeds {s['seeds'][0]}–{s['seeds'][-1]}, "
        f"{s['n_fit_images']:.0f} fit / {s['n_eval_images']:.0f} evaluated images). Mean ± "
        f"half-width of the {s['interval']}; ▲/▼: better/worse than none (the interval of the "
        "paired difference excludes 0; a zero-width interval, every split the same, is no "
        "evidence and is not marked); †: below chance (lin. sep. < 0.5), which reads as chance "
        "— an artefact of held-out probes and of rows transformed with their own statistics, "
        "not less gap —, never marked or ranked (its column then bolds no row); bold: best.",
    ]
    verdicts = doc.get("verdicts", {}).get("retrieval", [])
    if verdicts:
        lines += ["", "Retrieval verdicts (the paired rSum difference against none):", ""]
        lines += [f"- {v}" for v in verdicts]
    if doc.get("skipped"):
        lines += [""] + [f"- skipped `{n}`: {why}" for n, why in doc["skipped"].items()]
    return "\n".join(lines) + "\n\n" + _source_line(doc)


table("bench-coco500-heldout", "docs/bench.md", "bench-coco500-heldout")(_bench_table)
table("bench-coco500-transductive", "docs/bench.md", "bench-coco500-transductive")(_bench_table)


@producer("reducers-coco500", "coco500")
@single_threaded
def _reducers() -> dict:
    sys.path.insert(0, str(ROOT / "scripts"))
    import reducers_table

    return reducers_table.build_data(COCO)


def _reducers_rows(results: list[dict]) -> list[list[str]]:
    return [
        [
            r["label"],
            fmt(r["centroid_gap"]),
            fmt(r["rmg"]),
            fmt(r["itr"], 2),
            fmt(r["tir"], 2),
            fmt(r["i2t_r1"]),
            fmt(r["t2i_r1"]),
        ]
        for r in results
    ]


_REDUCER_HEAD = ["reducer", "centroid gap", "RMG", "ITR", "TIR", "i→t R@1", "t→i R@1"]


@table("reducers-coco500-transductive", "docs/reducers.md", "reducers-coco500")
def _reducers_transductive(doc: dict) -> str:
    return (
        f"**Transductive** (fit and transform all {doc['n_pairs']} pairs):\n\n"
        + _md(_REDUCER_HEAD, _reducers_rows(doc["transductive"]))
        + "\n\n"
        + _source_line(doc)
    )


@table("reducers-coco500-heldout", "docs/reducers.md", "reducers-coco500")
def _reducers_heldout(doc: dict) -> str:
    return (
        f"**Held-out** (fit on {doc['fit_images']} images and their captions, transform the "
        f"other {doc['test_images']}; split by image, seed 0):\n\n"
        + _md(_REDUCER_HEAD, _reducers_rows(doc["heldout"]))
        + "\n\n"
        + _source_line(doc)
    )


# ----------------------------------------------------------------------------- README figures


def _paired(report: dict, variant: str, key: str) -> tuple[float, float, int, int]:
    """Mean and the half-width of the 95% interval of ``variant``'s per-run difference to its
    baseline run (the convention of every ± in the docs, ``dias_ablation.mean_ci``), and the
    runs better / all runs."""
    sys.path.insert(0, str(ROOT / "scripts"))
    import dias_ablation

    base = {(r["seed"], r["fold"]): r for r in report["runs"]["baseline (matching only)"]}
    d = np.array([r[key] - base[(r["seed"], r["fold"])][key] for r in report["runs"][variant]])
    mean, half = dias_ablation.mean_ci(d, dias_ablation.interval_ratio(report))
    return mean, half, int((d > 0).sum()), int(d.size)


@table(
    "readme-figures",
    "README.md",
    (
        "measures-coco500",
        "retrieval-coco500",
        "bench-coco500-heldout",
        "pocket-demo-set",
        "dias-coco500",
        "dias-coco500-scratch",
        "dias-fmnist",
    ),
)
def _readme_figures(docs: dict) -> str:
    m = docs["measures-coco500"]["measures"]["clip"]
    r = docs["retrieval-coco500"]
    bench = docs["bench-coco500-heldout"]
    p = docs["pocket-demo-set"]
    vs = {name: row.get("vs_none", {}) for name, row in bench["results"].items()}

    def diff(name: str, key: str) -> str:
        d = vs[name][key]
        return f"{d['mean']:+.1f} ± {d['ci95'][1] - d['mean']:.1f}".replace("-", "−")

    scratch = _paired(docs["dias-coco500-scratch"]["report"], "full DIAS", "rsum")
    frozen = _paired(docs["dias-coco500"]["report"], "full DIAS", "rsum")
    fm = docs["dias-fmnist"]["report"]
    fm_rsum = _paired(fm, "full DIAS", "rsum")
    fm_map = _paired(fm, "full DIAS", "class_map_t2i")
    pt, pm = p["pocket_tasks"], p["pocket"]
    s = bench["setting"]

    def sig(name: str) -> str:
        return "significant" if vs[name]["rsum"]["significant"] else "not significant"

    others = [
        n
        for n, row in bench["results"].items()
        if row["kind"] == "reducer" and n not in ("none", "center")
    ]
    worse = [n for n in others if vs[n]["rsum"]["significant"] and vs[n]["rsum"]["mean"] < 0]
    rest = (
        "every other reducer costs retrieval significantly"
        if worse == others
        else f"of the other reducers {', '.join(worse) or 'none'} cost retrieval significantly"
    )

    def helps(paired: tuple) -> bool:  # the 95% interval of the paired difference above 0
        return paired[0] - paired[1] > 0

    which = [
        w for w, pr in (("CLIP's own space", frozen), ("the pocket heads", fm_rsum)) if helps(pr)
    ]
    small = (
        f"it helps on {' and '.join(which)} too (a 95% interval above 0)"
        if which
        else "it changes little (95% intervals that include 0)"
    )
    lines = [
        f"- The bundled **pocket** model (EfficientNet-Lite0 + all-MiniLM-L6-v2, frozen, with "
        f"projection heads trained by modgap, LiT-style) reaches **{pt['acc1']:.1%} zero-shot "
        f"top-1** on the held-out Fashion-MNIST test split (10 classes, chance 10%). It has a "
        f"clear modality gap: centroid gap {pm['centroid_gap']:.3f}, image-vs-text linear "
        f"separability {pm['linear_separability']:.3f} (balanced accuracy, chance 0.5), RMG "
        f"{pm['rmg']:.3f}, ITR = {fmt(pm['itr'], 1)} ([docs/pocket.md](docs/pocket.md)).",
        f"- On the shared real CLIP ViT-B/16 embeddings of 500 COCO val2017 pairs: centroid gap "
        f"**{m['centroid_gap']:.4f}**, RMG {m['rmg']:.4f}, ITR = TIR = {fmt(m['itr'])} (every "
        f"point's nearest neighbour is of its own modality), {m['gap_dims_50']} dimensions carry "
        f"half of ‖Δ‖²; rSum {r['all']['rsum']:.1f} on all 500 images, "
        f"{r['folds5']['rsum']:.1f} averaged over 5 folds of 100 (not COCO's 5-fold 1K).",
        f"- Held out over {s['repeats']} random splits ([docs/bench.md](docs/bench.md)): mean "
        f"centering changes rSum by {diff('center', 'rsum')} ({sig('center')}) while opening "
        f"mixed search (mixed R@10 {diff('center', 'mixed_recall@10')}); {rest}; the CSLS "
        f"score correction adds **{diff('csls', 'rsum')} rSum** ({sig('csls')}).",
        f"- DIAS ([docs/dias.md](docs/dias.md), 3 seeds, weights chosen on validation): on new "
        f"256-d heads over frozen CLIP COCO-500 features it adds **{scratch[0]:+.1f} ± "
        f"{scratch[1]:.1f} rSum** over the triplet loss alone ({scratch[2]}/{scratch[3]} runs "
        f"better); fine-tuning CLIP's own space ({frozen[0]:+.1f} ± {frozen[1]:.1f}) and the "
        f"pocket heads on Fashion-MNIST ({fm_rsum[0]:+.1f} ± {fm_rsum[1]:.1f} rSum, "
        f"{100 * fm_map[0]:+.1f} class mAP) {small}.",
        "- Every ± that gives the uncertainty of a number, in this README and in the docs, is "
        "the half-width of a 95% interval (the bench's corrected resampled t over splits or "
        "runs), never a standard deviation; a spread of values (a cosine's mean ± std) says "
        "std.",
    ]
    return "\n".join(lines).replace("+-", "−")
