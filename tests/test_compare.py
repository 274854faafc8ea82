"""CLIP_benchmark records from eval and bench, and ``modgap compare`` of results and sets."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from conftest import gapped_pairs
from modgap.cli import main

pytestmark = pytest.mark.usefixtures("single_thread")

CLIP_BENCHMARK_KEYS = {"dataset", "model", "pretrained", "task", "metrics", "language"}


def _set(path, seed, gap=0.8, n=60):
    X, Y = gapped_pairs(n=n, d=12, gap=gap, noise=0.5, seed=seed)
    np.savez(path, image_emb=X, text_emb=Y)
    return path


def _clip_benchmark_build(paths, out):
    """CLIP_benchmark's ``build`` (clip_benchmark/cli.py main_build), reproduced."""
    rows, fields = [], set()
    for p in paths:
        data = json.load(open(p))
        row = {**data["metrics"], **data}
        del row["metrics"]
        row["model_fullname"] = row["model"] + " " + row["pretrained"]
        fields |= set(row)
        rows.append(row)
    with open(out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=sorted(fields))
        w.writeheader()
        w.writerows(rows)
    return list(csv.DictReader(open(out)))


def test_eval_writes_clip_benchmark_records(tmp_path):
    p = _set(tmp_path / "coco.npz", seed=1)
    template = tmp_path / "res" / "{dataset}_{model}_{task}.json"
    argv = ["eval", str(p), "--format", "clip_benchmark", "--json", str(template), "-q"]
    assert main([*argv, "--model", "ViT-B-16", "--pretrained", "openai"]) == 0
    files = sorted((tmp_path / "res").glob("*.json"))
    records = [json.load(open(f)) for f in files]
    assert all(set(r) == CLIP_BENCHMARK_KEYS for r in records)
    tasks = {r["task"]: r for r in records}
    assert {"zeroshot_retrieval", "modgap_clustering", "modgap_mixed_search"} <= set(tasks)
    ret = tasks["zeroshot_retrieval"]
    assert ret["dataset"] == "coco" and ret["model"] == "ViT-B-16" and ret["pretrained"] == "openai"
    assert {"image_retrieval_recall@5", "text_retrieval_recall@5"} <= set(ret["metrics"])
    table = _clip_benchmark_build(files, tmp_path / "benchmark.csv")
    assert {row["task"] for row in table} == set(tasks)
    assert all(row["model_fullname"] == "ViT-B-16 openai" for row in table)


def test_bench_writes_clip_benchmark_records(tmp_path):
    p = _set(tmp_path / "coco.npz", seed=2)
    out = tmp_path / "b"
    argv = ["bench", str(p), "--out", str(out), "--reducers", "none,center", "--repeats", "2"]
    assert main([*argv, "--format", "clip_benchmark", "--model", "m", "-q"]) == 0
    records = [json.load(open(f)) for f in sorted((out / "clip_benchmark").glob("*.json"))]
    assert all(set(r) == CLIP_BENCHMARK_KEYS for r in records)
    models = {r["model"] for r in records}
    assert models == {"m", "m+center"}
    doc = json.loads((out / "results.json").read_text())
    none_rsum = doc["datasets"]["coco"]["results"]["none"]["metrics"]["rsum"]["mean"]
    ret = next(r for r in records if r["model"] == "m" and r["task"] == "zeroshot_retrieval")
    assert ret["metrics"]["rsum"] == pytest.approx(none_rsum)


def test_compare_two_models_and_two_results(tmp_path, capsys):
    a = _set(tmp_path / "small_gap.npz", seed=3, gap=0.2)
    b = _set(tmp_path / "big_gap.npz", seed=3, gap=1.6)
    js = tmp_path / "cmp.json"
    argv = [
        "compare",
        str(a),
        str(b),
        "--repeats",
        "3",
        "--json",
        str(js),
        "--out",
        str(tmp_path / "c"),
    ]
    assert main([*argv, "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "small_gap" in printed and "big_gap" in printed
    doc = json.loads(js.read_text())
    assert [e["label"] for e in doc["entries"]] == ["small_gap", "big_gap"]
    gap = doc["vs_first"][0]["centroid_gap"]
    assert gap["significant"] and gap["mean"] > 0 and gap["how"] == "paired over the same splits"
    assert (tmp_path / "c" / "report.html").exists()

    # results files: a bench (with a row) and an eval
    out = tmp_path / "bench"
    assert (
        main(
            [
                "bench",
                str(a),
                "--out",
                str(out),
                "--reducers",
                "none,center",
                "--repeats",
                "2",
                "-q",
            ]
        )
        == 0
    )
    ev = tmp_path / "eval.json"
    assert main(["eval", str(b), "--json", str(ev), "-q"]) == 0
    res = str(out / "results.json")
    argv = ["compare", res, f"{res}#center", str(ev), "-q", "--json", str(tmp_path / "c2.json")]
    assert main(argv) == 0
    doc = json.loads((tmp_path / "c2.json").read_text())
    labels = [e["label"] for e in doc["entries"]]
    assert labels == ["bench:small_gap", "bench:small_gap#center", "eval"]
    assert doc["vs_first"][0]["centroid_gap"]["mean"] < 0  # centring closes the gap

    assert main(["compare", str(a)]) == 2
    assert "at least two" in capsys.readouterr().err
    assert main(["compare", f"{out / 'results.json'}#nope", str(a)]) == 2
    assert "has no row 'nope'" in capsys.readouterr().err


def test_compare_reads_the_non_finite_strings_modgap_writes(tmp_path, capsys):
    """Strict JSON has no inf or NaN; modgap writes them as "inf", "-inf", "nan" strings, and
    compare reads them back as floats (only other strings are errors)."""
    metric = {"mean": "inf", "ci95": ["nan", "nan"], "values": ["inf", "-inf"]}
    bench = {"datasets": {"d": {"setting": {"seeds": [0, 1], "n_eval_images": 30.0},
                                "results": {"none": {"metrics": {"rmg": metric}}}}}}  # fmt: skip
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "results.json").write_text(json.dumps(bench))
    (tmp_path / "m.json").write_text(json.dumps({"measures": {"rmg": "nan", "itr": "-inf"}}))
    out = tmp_path / "cmp"
    argv = ["compare", str(tmp_path / "b" / "results.json"), str(tmp_path / "m.json")]
    assert main([*argv, "--out", str(out), "-q"]) == 0, capsys.readouterr().err
    entries = json.loads((out / "compare.json").read_text())["entries"]
    assert entries[0]["metrics"]["rmg"]["mean"] == "inf"  # written back the same way
    assert entries[1]["metrics"]["rmg"]["mean"] == "nan"
    assert entries[1]["metrics"]["itr"]["mean"] == "-inf"


def test_record_name_templates_keep_literal_braces_and_every_field(tmp_path):
    from modgap.report.clip_benchmark import record_paths

    rec = {"dataset": "coco", "model": "a/b", "pretrained": "p", "task": "t", "language": "en"}
    template = str(tmp_path / "{{x}}_{dataset}_{model}_{pretrained}_{task}_{language}.json")
    assert record_paths([rec], template) == [str(tmp_path / "{x}_coco_a_b_p_t_en.json")]


def test_bench_records_label_each_data_set_from_its_own_metadata():
    from modgap.report.clip_benchmark import bench_records

    run = {"results": {"none": {"metrics": {"rsum": {"mean": 1.0}}}}}
    doc = {"datasets": {"a": run, "b": run}}
    meta = {"a": {"model": "ViT-B-32", "pretrained": "openai"}, "b": {"model": "siglip"}}
    got = {(r["dataset"], r["model"], r["pretrained"]) for r in bench_records(doc, metadata=meta)}
    assert got == {("a", "ViT-B-32", "openai"), ("b", "siglip", "")}
    got = {(r["dataset"], r["model"]) for r in bench_records(doc, "m", metadata=meta)}
    assert got == {("a", "m"), ("b", "m")}


def test_record_paths_are_the_files_written_and_refuse_a_shared_file(tmp_path):
    from modgap.errors import ModgapError
    from modgap.report.clip_benchmark import record_paths, write_records

    recs = [
        {
            "dataset": "coco",
            "model": "ViT-B/32",
            "pretrained": "openai",
            "task": t,
            "language": "en",
        }
        for t in ("zeroshot_retrieval", "modgap_clustering")
    ]
    template = tmp_path / "{model}_{task}.json"
    paths = record_paths(recs, template)
    assert paths == [
        str(tmp_path / "ViT-B_32_zeroshot_retrieval.json"),
        str(tmp_path / "ViT-B_32_modgap_clustering.json"),
    ]
    assert [str(p) for p in write_records(recs, template)] == paths
    with pytest.raises(ModgapError, match="share one file"):
        record_paths(recs, tmp_path / "{model}.json")
