"""The benchmark runner, `modgap bench` and `modgap eval` on small data (fast)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import gapped_pairs
from modgap.bench import run_bench
from modgap.cli import main
from modgap.embeddings import EmbeddingSet
from modgap.errors import ModgapError
from modgap.io import write_embeddings
from modgap.report import summary_markdown, write_bench
from modgap.tasks.retrieval import retrieval_metrics
from modgap.tasks.suite import run_tasks


def _labelled_set(n=60, d=16, c=4, seed=0):
    X, Y = gapped_pairs(n=n, d=d, gap=0.8, noise=0.5, seed=seed)
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, c, n)
    # class prompts: the mean caption of each class, so zero-shot is well above chance
    cte = np.stack([Y[labels == k].mean(axis=0) for k in range(c)])
    return EmbeddingSet(
        X,
        Y,
        labels=labels,
        class_names=[f"c{k}" for k in range(c)],
        class_text_emb=cte / np.linalg.norm(cte, axis=1, keepdims=True),
    )


def test_run_bench_held_out(tmp_path):
    emb = _labelled_set()
    out, _ = run_bench(emb, reducers=["none", "center", "shift"], seed=1)
    write_bench(out, None, tmp_path / "b", report=False)
    assert out["setting"]["protocol"] == "held-out"
    assert out["setting"]["eval_split"]["n_images"] == 30
    assert set(out["results"]) == {"none", "center", "shift"}
    none = out["results"]["none"]
    # the "none" row is exactly the task suite on the held-out split
    _, test = emb.split(0.5, seed=1)
    ref = retrieval_metrics(test.image_emb, test.text_emb)
    assert none["tasks"]["rsum"] == pytest.approx(ref["rsum"])
    for key in ("acc1", "cluster_nmi", "modality_purity", "mixed_recall@10"):
        assert key in none["tasks"]
    assert {"centroid_gap", "rmg", "linear_separability"} <= set(none["measures"])
    # centring closes the centroid gap on held-out data
    assert (
        out["results"]["center"]["measures"]["centroid_gap"]
        < 0.5 * none["measures"]["centroid_gap"]
    )
    assert out["results"]["center"]["protocol"] == "held-out"
    doc = json.loads((tmp_path / "b" / "results.json").read_text())
    assert doc["results"]["shift"]["params"]
    assert "versions" in doc["provenance"]
    assert not (tmp_path / "b" / "report.html").exists()
    md = summary_markdown(out)
    assert md.splitlines()[0].startswith("| reducer | rSum")


def test_transductive_and_failing_reducer_is_skipped(tmp_path):
    X, Y = gapped_pairs(n=40, d=8, seed=2)
    emb = EmbeddingSet(X, Y[:30], paired=False)  # unpaired: procrustes cannot fit
    out, _ = run_bench(emb, reducers="none,procrustes,center", transductive=True)
    assert out["setting"]["protocol"] == "transductive"
    assert "procrustes" in out["skipped"]
    assert "pairs" in out["skipped"]["procrustes"]
    assert "retrieval" in out["results"]["none"]["tasks"]["skipped"]
    assert out["results"]["center"]["protocol"] == "transductive"


def test_zero_shot_after_reducer_uses_transformed_prompts():
    emb = _labelled_set(seed=3)
    out, _ = run_bench(emb, reducers=["center"], transductive=True)
    from modgap.reducers import get_reducer
    from modgap.tasks.zeroshot import zero_shot_metrics

    r = get_reducer("center").fit(emb)
    ref = zero_shot_metrics(
        r.transform_images(emb.image_emb), emb.labels, r.transform_texts(emb.class_text_emb)
    )
    assert out["results"]["center"]["tasks"]["acc1"] == pytest.approx(ref["acc1"])


def test_bad_reducer_name_and_task_requests():
    emb = _labelled_set()
    with pytest.raises(ModgapError, match="unknown reducer"):
        run_bench(emb, reducers=["nope"])
    unlabelled = EmbeddingSet(emb.image_emb, emb.text_emb)
    with pytest.raises(ModgapError, match="task 'zeroshot' does not apply: needs image labels"):
        run_tasks(unlabelled, ["zeroshot"])
    with pytest.raises(ModgapError, match="unknown task"):
        run_tasks(unlabelled, ["foo"])


def test_cli_bench_and_eval(tmp_path, capsys):
    path = tmp_path / "emb.npz"
    write_embeddings(_labelled_set(seed=4), path)
    out_dir = tmp_path / "out"
    code = main(
        [
            "bench",
            str(path),
            "--out",
            str(out_dir),
            "--reducers",
            "none,center",
            "--no-progress",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "held-out" in printed and "center" in printed and "rSum" in printed
    assert (out_dir / "results.json").exists()
    html = (out_dir / "report.html").read_text()
    assert html.count('<img src="data:image/png;base64,') == 4
    assert "held-out" in html

    js = tmp_path / "eval.json"
    assert main(["eval", str(path), "--json", str(js), "--no-progress", "--k", "1,5"]) == 0
    doc = json.loads(js.read_text())
    assert {"acc1", "rsum", "cluster_nmi", "mixed_same_modality@5"} <= set(doc["tasks"])
    assert "provenance" in doc

    assert main(["bench", str(path), "--out", str(out_dir), "--reducers", "bad"]) == 2
    assert "unknown reducer" in capsys.readouterr().err
    assert main(["eval", str(path), "--k", "1,99", "--tasks", "zeroshot", "--no-progress"]) == 0
    assert main(["eval", str(path), "--k", "x"]) == 2


def test_report_when_every_reducer_fails(tmp_path):
    X, Y = gapped_pairs(n=20, d=8, seed=5)
    out, views = run_bench(EmbeddingSet(X, Y[:15], paired=False), reducers=["procrustes"])
    assert out["results"] == {} and "procrustes" in out["skipped"]
    write_bench(out, views, tmp_path / "b")
    html = (tmp_path / "b" / "report.html").read_text()
    assert "No reducer produced results" in html and "procrustes" in html


def test_cli_eval_builds_class_prompts_with_an_encoder(tmp_path, monkeypatch, capsys):
    import modgap.encoders
    from test_zeroshot import FakeEncoder

    enc = FakeEncoder(d=16)
    monkeypatch.setattr(modgap.encoders, "load_encoder", lambda spec, device=None: enc)
    emb = _labelled_set(seed=6)
    path = tmp_path / "no_prompts.npz"
    write_embeddings(emb.replace(class_text_emb=None), path)
    js = tmp_path / "eval.json"
    assert main(["eval", str(path), "--json", str(js), "--tasks", "zeroshot", "--no-progress"]) == 2
    assert "needs class prompt embeddings" in capsys.readouterr().err
    code = main(["eval", str(path), "--json", str(js), "--tasks", "zeroshot", "--encoder", "fake"])
    assert code == 0
    assert enc.seen == [f"a photo of a c{k}." for k in range(4)]
    doc = json.loads(js.read_text())
    assert set(doc["tasks"]) == {
        "acc1",
        "acc5",
        "mean_per_class_recall",
        "prediction_entropy",
        "label_entropy",
        "prediction_top_share",
        "label_top_share",
    }


def test_reducer_without_out_of_sample_extension_falls_back_to_transductive(monkeypatch):
    from modgap import reducers
    from modgap.reducers import MeanCentering

    class CentreSeenOnly(MeanCentering):
        name = "center-seen-only"
        supports_out_of_sample = False

    monkeypatch.setitem(reducers.REDUCERS, CentreSeenOnly.name, CentreSeenOnly)
    emb = _labelled_set(seed=7)
    out, _ = run_bench(emb, reducers=["center", "center-seen-only"], measures=["centroid"])
    assert out["setting"]["protocol"] == "held-out"
    assert out["results"]["center"]["protocol"] == "held-out"
    fallback = out["results"]["center-seen-only"]
    assert fallback["protocol"] == "transductive (no out-of-sample extension)"
    # fitted on the evaluated split itself: its centroid gap is closed exactly
    assert (
        fallback["measures"]["centroid_gap"] < out["results"]["center"]["measures"]["centroid_gap"]
    )
