"""Sentences of the docs that compare rows, written from the committed data they speak of
(``What the tables say`` of docs/bench.md): a comparative claim is only made where the data
show it, with the paired interval's verdict (:func:`modgap.bench.stats.is_evidence`)."""

from __future__ import annotations

from . import fmt, table


def _mean(doc: dict, row: str, key: str) -> float:
    return doc["results"][row]["metrics"][key]["mean"]


def _evident(doc: dict, row: str, key: str) -> bool:
    from modgap.bench.stats import is_evidence

    d = doc["results"][row].get("vs_none", {}).get(key)
    return d is not None and is_evidence(d, key, _mean(doc, row, key))


def _diff(doc: dict, row: str, key: str, digits: int = 1) -> str:
    d = doc["results"][row]["vs_none"][key]
    half = (d["ci95"][1] - d["ci95"][0]) / 2
    return f"{d['mean']:+.{digits}f} ± {half:.{digits}f}".replace("-", "−")


def _names(rows: list[str]) -> str:
    quoted = [f"`{r}`" for r in rows]
    return ", ".join(quoted[:-1]) + (" and " if len(quoted) > 1 else "") + quoted[-1]


@table(
    "bench-coco500-findings",
    "docs/bench.md",
    ("bench-coco500-heldout", "bench-coco500-transductive"),
)
def _bench_findings(docs: dict) -> str:
    held, trans = docs["bench-coco500-heldout"], docs["bench-coco500-transductive"]
    rows = held["results"]
    reducers = [n for n, r in rows.items() if r["kind"] == "reducer"]
    corrections = [n for n, r in rows.items() if r["kind"] == "correction"]
    keep = [n for n in reducers if not _evident(held, n, "rsum")]
    lose = [
        n
        for n in reducers
        if _evident(held, n, "rsum") and _mean(held, n, "rsum") < _mean(held, "none", "rsum")
    ]
    mixed = max(reducers, key=lambda n: _mean(held, n, "mixed_recall@10"))
    gap = min(reducers, key=lambda n: _mean(held, n, "centroid_gap"))
    up = [
        n
        for n in corrections
        if _evident(held, n, "rsum") and held["results"][n]["vs_none"]["rsum"]["mean"] > 0
    ]
    k_rsum = "rsum"
    lines = [
        f"- Without a reducer the gap is total on this data: pairs together "
        f"{fmt(_mean(held, 'none', 'pair_coclustering'))}, modality purity "
        f"{fmt(_mean(held, 'none', 'modality_purity'))}, mixed R@10 "
        f"{fmt(_mean(held, 'none', 'mixed_recall@10'))}.",
        f"- Held out, {_names(keep) if keep else 'no reducer'} "
        f"{'leave' if len(keep) > 1 else 'leaves'} rSum where it was (the paired difference is "
        f"not significant"
        + (f": {', '.join(f'{n} {_diff(held, n, k_rsum)}' for n in keep)})" if keep else ")")
        + (
            f"; `center` shrinks ‖Δ‖ from {fmt(_mean(held, 'none', 'centroid_gap'), 2)} to "
            f"{fmt(_mean(held, 'center', 'centroid_gap'), 2)} and opens mixed search (mixed R@10 "
            f"{fmt(_mean(held, 'none', 'mixed_recall@10'), 2)} → "
            f"{fmt(_mean(held, 'center', 'mixed_recall@10'), 2)})."
            if "center" in keep
            else "."
        ),
        f"- Held out, {_names(lose)} lose rSum significantly." if lose else "",
        f"- The highest mean mixed R@10 held out is `{mixed}`'s "
        f"({fmt(_mean(held, mixed, 'mixed_recall@10'))}) and the smallest mean ‖Δ‖ `{gap}`'s "
        f"({fmt(_mean(held, gap, 'centroid_gap'))}); means of 3 splits, not ranked by a test "
        "between reducers.",
    ]
    if "procrustes" in reducers and "procrustes" in trans["results"]:
        lines.append(
            f"- Fitted on the evaluated points a reducer can look far better than it is: "
            f"`procrustes` reads rSum {fmt(_mean(trans, 'procrustes', 'rsum'), 1)} "
            f"transductively — it has seen the test pairs — and "
            f"{fmt(_mean(held, 'procrustes', 'rsum'), 1)} held out "
            f"(none: {fmt(_mean(held, 'none', 'rsum'), 1)})."
        )
    if corrections:
        lines.append(
            f"- Rows that raise held-out rSum significantly: {_names(up)} (retrieval-time "
            "corrections: they leave the embeddings, and thus the gap, alone)."
            if up
            else "- No row raises held-out rSum significantly."
        )
    if "shift" in reducers:
        lines.append(
            f"- Closing the centroid gap is not enough: `shift` (λ = 1) has ‖Δ‖ "
            f"{fmt(_mean(held, 'shift', 'centroid_gap'), 2)} but still "
            f"{fmt(_mean(held, 'shift', 'mixed_same_modality@10'), 2)} of each query's 10 "
            f"nearest items from its own modality, and changes rSum by "
            f"{_diff(held, 'shift', 'rsum')}."
        )
    return "\n".join(line for line in lines if line)
