"""The benchmark: repeated splits, intervals against a plain formula, paired differences and
verdicts, separability at chance after every reducer, leakage flags, `modgap bench` and
`modgap eval` on small data."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from conftest import gapped_pairs
from modgap.bench import interval, paired, run_bench, verdict
from modgap.bench.stats import MIN_DISTINCT, is_evidence, summarize
from modgap.cli import main
from modgap.embeddings import EmbeddingSet
from modgap.errors import ModgapError
from modgap.io import read_embeddings, write_embeddings
from modgap.measures import measure_all
from modgap.report import summary_markdown, write_bench
from modgap.tasks.suite import run_tasks

pytestmark = pytest.mark.usefixtures("single_thread")


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


# -- statistics ------------------------------------------------------------------------------
def test_interval_is_the_corrected_resampled_t():
    from scipy.stats import t

    x = [0.41, 0.45, 0.43, 0.47, 0.40]
    ratio = 1.0  # as many evaluated as fitted images
    mean, lo, hi = interval(x, ratio)
    half = t.ppf(0.975, 4) * math.sqrt((1 / 5 + ratio) * np.var(x, ddof=1))
    assert mean == pytest.approx(np.mean(x))
    assert (lo, hi) == pytest.approx((np.mean(x) - half, np.mean(x) + half))
    assert math.isnan(interval([0.4], 1.0)[1])  # one split: no interval
    assert interval([math.inf, math.inf], 1.0) == (math.inf, math.inf, math.inf)


def test_paired_difference_and_verdict():
    base = [480.0, 470.0, 490.0, 485.0]
    noisy = [b + d for b, d in zip(base, [1.0, -1.5, 0.5, 2.0], strict=True)]
    better = [b + 10 + d for b, d in zip(base, [0.2, -0.3, 0.1, 0.0], strict=True)]
    d1, d2 = paired(noisy, base, 1.0), paired(better, base, 1.0)
    assert not d1["significant"] and d2["significant"]
    assert d2["mean"] == pytest.approx(10.0)
    assert verdict("center", "rsum", d1).startswith("center: +0.500 ± ")
    assert verdict("center", "rsum", d1).endswith("rsum, not significant")
    assert verdict("shift", "rsum", d2).endswith("rsum, significant")


def test_a_zero_width_interval_is_no_evidence():
    # a discrete metric: a median rank of 2, 2, 2 against 1, 1, 1
    d = paired([2.0, 2.0, 2.0], [1.0, 1.0, 1.0], 1.0, "text_retrieval_median_rank")
    assert d["ci95"] == [1.0, 1.0] and d["distinct"] == 1
    assert not d["significant"] and "zero-width" in d["not_evidence"]
    assert "no evidence" in verdict("shift", "median rank", d)
    assert not is_evidence(d) and not is_evidence({**d, "distinct": None})  # stored: from width
    # one differing split gives an interval of its own, judged as usual
    d = paired([2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 3.0], [1.0] * 8, 1.0, "median_rank")
    assert d["distinct"] == 2 and "not_evidence" not in d
    assert MIN_DISTINCT == 2


def test_separability_below_chance_is_not_less_gap():
    none = [0.99, 0.98, 0.99]
    below = [0.25, 0.27, 0.26]  # rows transformed with their own statistics
    d = paired(below, none, 1.0, "linear_separability")
    assert d["ci95"][1] < 0 and not d["significant"] and "below chance" in d["not_evidence"]
    assert paired([0.52, 0.55, 0.53], none, 1.0, "linear_separability")["significant"]
    # the table marks nothing below chance and never ranks it best, even on stored results
    doc = {
        "setting": {"protocol": "transductive", "protocol_note": ""},
        "results": {
            "none": {"metrics": {"linear_separability": summarize(none, 1.0)}},
            "center": {
                "metrics": {"linear_separability": summarize(below, 1.0)},
                "vs_none": {"linear_separability": {**d, "significant": True}},
            },
            "shift": {
                "metrics": {"linear_separability": summarize([0.6, 0.62, 0.61], 1.0)},
                "vs_none": {"linear_separability": paired([0.6, 0.62, 0.61], none, 1.0)},
            },
        },
    }
    md = summary_markdown(doc)
    center = next(line for line in md.splitlines() if line.startswith("| center"))
    shift = next(line for line in md.splitlines() if line.startswith("| shift"))
    assert "†" in center and "▲" not in center and "**" not in center
    assert "▲" in shift and "**" not in md  # a column with a row below chance bolds none


def test_two_samples_of_one_distribution_read_no_gap_decrease():
    rng = np.random.default_rng(3)
    mu = rng.normal(size=16)

    def sample():
        z = rng.normal(size=(120, 16)) + mu
        return z / np.linalg.norm(z, axis=1, keepdims=True)

    emb = EmbeddingSet(sample(), sample())
    for transductive in (False, True):
        doc, _ = run_bench(
            emb,
            reducers="none,center,gaussian",
            transductive=transductive,
            repeats=3,
            measures=["linear_separability"],
        )
        for name in ("center", "gaussian"):
            d = doc["results"][name]["vs_none"]["linear_separability"]
            assert not (d["significant"] and d["mean"] < 0), (transductive, name)
        lines = [
            [c.strip() for c in ln.strip("|").split("|")]
            for ln in summary_markdown(doc).splitlines()
        ]
        sep = lines[0].index("lin. sep.")
        for line in lines[2:]:
            cell = line[sep]
            assert "▲" not in cell, line
            if "†" in cell:
                assert "**" not in cell, line


# -- the protocol ------------------------------------------------------------------------------
def test_held_out_rows_are_the_task_suite_on_each_split():
    emb = _labelled_set()
    doc, views = run_bench(emb, reducers=["none", "center", "shift"], repeats=3, seed=1)
    s = doc["setting"]
    assert s["protocol"] == "held-out" and s["repeats"] == 3 and s["seeds"] == [1, 2, 3]
    assert s["n_eval_images"] == 30 and s["n_fit_images"] == 30
    assert set(doc["results"]) == {"none", "center", "shift"} and set(views) == set(doc["results"])
    none = doc["results"]["none"]
    for rep, seed in enumerate(s["seeds"]):
        _, test = emb.split(0.5, seed=seed)
        ref = run_tasks(test, seed=seed)
        assert none["metrics"]["rsum"]["values"][rep] == pytest.approx(ref["rsum"])
        gap = measure_all(test, only=["centroid"], seed=seed)["centroid_gap"]
        assert none["metrics"]["centroid_gap"]["values"][rep] == pytest.approx(gap)
    for key in ("acc1", "cluster_ami", "pair_coclustering", "modality_purity", "mixed_recall@10"):
        assert key in none["metrics"]
    _, lo, hi = interval(none["metrics"]["rsum"]["values"], 1.0)
    assert none["metrics"]["rsum"]["ci95"] == pytest.approx([lo, hi])
    # centring closes the centroid gap on held-out data, on every split: a real difference
    center = doc["results"]["center"]
    assert center["vs_none"]["centroid_gap"]["significant"]
    assert (
        center["vs_none"]["centroid_gap"]["mean"] < -0.5 * none["metrics"]["centroid_gap"]["mean"]
    )
    assert center["protocol"] == "held-out" and not center["scored_on_fitted_rows"]
    assert any(line.startswith("center: ") for line in doc["verdicts"]["retrieval"])
    assert doc["verdicts"]["gap"][0].endswith("centroid_gap, significant")
    md = summary_markdown(doc)
    assert md.splitlines()[0].startswith("| row | rSum")
    assert "▼" in md or "▲" in md  # a significant change is marked


@pytest.mark.parametrize("transductive", [False, True])
def test_two_samples_of_one_distribution_stay_inseparable_after_every_reducer(transductive):
    # unpaired, same distribution: nothing tells images from texts, whatever the reducer did;
    # transductive centring used to push a cross-validated probe to 0.003-0.14
    rng = np.random.default_rng(9)
    X, Y = rng.standard_normal((160, 8)), rng.standard_normal((160, 8))
    emb = EmbeddingSet(X, Y, paired=False)
    doc, _ = run_bench(
        emb,
        reducers="none,center,shift,gaussian,spectral,ot-sinkhorn",
        transductive=transductive,
        repeats=2,
        measures=["linear_separability"],
        reducer_params={"spectral": {"n_components": 6}},
    )
    assert set(doc["results"]) == {"none", "center", "shift", "gaussian", "spectral", "ot-sinkhorn"}
    for name, row in doc["results"].items():
        assert row["metrics"]["linear_separability"]["mean"] == pytest.approx(0.5, abs=0.12), name
        assert row["scored_on_fitted_rows"] == (transductive and name != "none")


def test_transductive_flag_and_a_failing_reducer_is_skipped():
    X, Y = gapped_pairs(n=40, d=8, seed=2)
    emb = EmbeddingSet(X, Y[:30], paired=False)  # unpaired: procrustes cannot fit
    doc, _ = run_bench(emb, reducers="none,procrustes,center", transductive=True, repeats=2)
    assert doc["setting"]["protocol"] == "transductive"
    assert "procrustes" in doc["skipped"] and "pairs" in doc["skipped"]["procrustes"]
    assert doc["results"]["center"]["protocol"] == "transductive"
    assert doc["results"]["center"]["scored_on_fitted_rows"]


def test_zero_shot_after_reducer_uses_transformed_prompts():
    emb = _labelled_set(seed=3)
    doc, _ = run_bench(emb, reducers=["center"], transductive=True, repeats=1, seed=4)
    from modgap.reducers import get_reducer
    from modgap.tasks.zeroshot import zero_shot_metrics

    _, test = emb.split(0.5, seed=4)
    r = get_reducer("center").fit(test)
    ref = zero_shot_metrics(
        r.transform_images(test.image_emb), test.labels, r.transform_texts(test.class_text_emb)
    )
    assert doc["results"]["center"]["metrics"]["acc1"]["values"] == [pytest.approx(ref["acc1"])]


def test_reducer_without_out_of_sample_extension_falls_back_to_transductive(monkeypatch):
    from modgap import reducers
    from modgap.reducers import MeanCentering

    class CentreSeenOnly(MeanCentering):
        name = "center-seen-only"
        supports_out_of_sample = False

    monkeypatch.setitem(reducers.REDUCERS, CentreSeenOnly.name, CentreSeenOnly)
    emb = _labelled_set(seed=7)
    doc, _ = run_bench(
        emb, reducers=["center", "center-seen-only"], measures=["centroid"], repeats=2
    )
    assert doc["results"]["center"]["protocol"] == "held-out"
    fallback = doc["results"]["center-seen-only"]
    assert fallback["protocol"] == "transductive (no out-of-sample extension)"
    assert fallback["scored_on_fitted_rows"]
    # fitted on the evaluated split itself: its centroid gap is closed exactly
    gaps = [
        doc["results"][n]["metrics"]["centroid_gap"]["mean"] for n in ("center-seen-only", "center")
    ]
    assert gaps[0] < gaps[1]


def test_bad_reducer_names_and_task_requests():
    emb = _labelled_set()
    with pytest.raises(ModgapError, match="unknown reducer"):
        run_bench(emb, reducers=["nope"])
    with pytest.raises(ModgapError, match="parameters given for 'spectral'"):
        run_bench(emb, reducers=["none"], reducer_params={"spectral": {"n_components": 3}})
    with pytest.raises(ModgapError, match="repeats must be a positive integer"):
        run_bench(emb, reducers=["none"], repeats=0)
    unlabelled = EmbeddingSet(emb.image_emb, emb.text_emb)
    with pytest.raises(ModgapError, match="task 'zeroshot' does not apply: needs image labels"):
        run_tasks(unlabelled, ["zeroshot"])
    with pytest.raises(ModgapError, match="unknown task"):
        run_tasks(unlabelled, ["foo"])


def test_report_when_every_reducer_fails(tmp_path):
    X, Y = gapped_pairs(n=20, d=8, seed=5)
    doc, views = run_bench(
        EmbeddingSet(X, Y[:15], paired=False), reducers=["procrustes"], repeats=1
    )
    assert doc["results"] == {} and "procrustes" in doc["skipped"]
    write_bench(doc, views, tmp_path / "b")
    html = (tmp_path / "b" / "report.html").read_text()
    assert "No reducer produced results" in html and "procrustes" in html


# -- the command line ------------------------------------------------------------------------
def test_cli_bench_several_sets_params_and_eval(tmp_path, capsys):
    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    write_embeddings(_labelled_set(seed=4), a)
    write_embeddings(_labelled_set(seed=5), b)
    out_dir = tmp_path / "out"
    argv = ["bench", str(a), str(b), "--out", str(out_dir), "--reducers", "none,center,spectral"]
    argv += ["--param", "spectral.n_components=5", "--repeats", "2", "--no-progress"]
    assert main(argv) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "held-out" in printed and "center" in printed and "rSum" in printed
    assert "retrieval: " in printed  # the verdict lines
    doc = json.loads((out_dir / "results.json").read_text())
    assert doc["format"] == "modgap.bench/2" and set(doc["datasets"]) == {"a", "b"}
    run = doc["datasets"]["a"]
    assert run["results"]["spectral"]["params"]["n_components"] == 5
    assert len(run["results"]["none"]["metrics"]["rsum"]["values"]) == 2
    html = (out_dir / "report.html").read_text()
    assert html.count('<img src="data:image/png;base64,') == 8  # 4 figures per data set
    assert "▲" in html or "▼" in html or "within noise" in html

    js = tmp_path / "eval.json"
    assert main(["eval", str(a), "--json", str(js), "--no-progress", "--k", "1,5"]) == 0
    doc = json.loads(js.read_text())
    assert {"acc1", "rsum", "cluster_ami", "mixed_same_modality@5"} <= set(doc["tasks"])
    assert "provenance" in doc and doc["warnings"] == []

    assert main(["bench", str(a), "--out", str(out_dir), "--reducers", "bad"]) == 2
    assert "unknown reducer" in capsys.readouterr().err
    assert main(["bench", str(a), "--out", str(out_dir), "--param", "n_components=5"]) == 2
    assert "--param wants REDUCER.KEY=VALUE" in capsys.readouterr().err
    assert main(["eval", str(a), "--k", "1,99", "--tasks", "zeroshot", "--no-progress"]) == 0
    assert main(["eval", str(a), "--k", "x"]) == 2


def test_eval_of_a_reduce_output_warns_that_the_reducer_saw_those_rows(tmp_path, capsys):
    path = tmp_path / "emb.npz"
    write_embeddings(_labelled_set(seed=8), path)
    assert main(["reduce", "procrustes", str(path), "--out", str(tmp_path / "red"), "-q"]) == 0
    js = tmp_path / "eval.json"
    red = tmp_path / "red" / "emb.npz"
    assert main(["eval", str(red), "--json", str(js), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "fitted on these same rows" in err and "transductive, not held-out" in err
    assert "fitted on these same rows" in json.loads(js.read_text())["warnings"][0]
    # an unseen set transformed with --apply is not flagged
    new = tmp_path / "new.npz"
    write_embeddings(_labelled_set(seed=9), new)
    model = tmp_path / "red" / "reducer.safetensors"
    assert (
        main(["reduce", "--apply", str(model), str(new), "--out", str(tmp_path / "ap"), "-q"]) == 0
    )
    assert main(["eval", str(tmp_path / "ap" / "new.npz"), "--no-progress", "-q"]) == 0
    assert "fitted on these same rows" not in capsys.readouterr().err
    assert read_embeddings(tmp_path / "ap" / "new.npz").n_images == 60


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
    assert {"acc1", "acc5", "mean_per_class_recall"} <= set(doc["tasks"])


@pytest.mark.parametrize(
    "option, message",
    [
        (["--corrections", "nosuch"], "unknown score correction"),
        (["--param", "spectral.n_components=4"], "which is not benchmarked"),
    ],
)
def test_bench_option_errors_come_before_any_input_is_read(tmp_path, option, message, capsys):
    from modgap.cli import main

    missing = tmp_path / "not-read-yet.npz"  # reading it would fail differently
    argv = ["bench", str(missing), "--out", str(tmp_path / "b"), "--reducers", "none,center"]
    assert main([*argv, *option]) == 2
    err = capsys.readouterr().err
    assert message in err and "not-read-yet" not in err


def _zero_shot_set(n=120, c=10, seed=0):
    emb = _labelled_set(n=n, d=16, c=c, seed=seed)
    return EmbeddingSet(
        emb.image_emb,
        np.zeros((0, emb.dim), np.float32),
        labels=emb.labels,
        class_names=emb.class_names,
        class_text_emb=emb.class_text_emb,
    )


def test_zero_shot_rows_say_the_prompts_were_fitted_and_few_rows_are_not_marked():
    emb = _zero_shot_set()
    doc, _ = run_bench(emb, reducers="none,center", repeats=3, seed=1)
    assert doc["setting"]["min_rows"] == 20 and "class prompts" in doc["setting"]["protocol_note"]
    center = doc["results"]["center"]
    # held out for the images, but the 10 prompts are in every split: fitted and scored
    assert center["fitted_on"] == {"images": "fit", "prompts": "all"}
    assert center["scored_on_fitted_rows"]
    assert center["sample"]["prompts"] == 10
    # separability on 10 prompts is skipped with its reason, never marked
    assert "linear_separability" not in center["metrics"]
    assert "few rows" in center["skipped"]["linear_separability"]
    # the gap measures on 10 prompts stay, flagged and never significant
    diff = center["vs_none"]["centroid_gap"]
    assert diff["rows"] == 10 and not diff["significant"]
    assert diff["ci95"][1] < 0 and diff["not_evidence"].startswith("few rows")
    assert not is_evidence(diff, "centroid_gap", center["metrics"]["centroid_gap"]["mean"])
    # the zero-shot gain itself rests on the images and keeps its verdict
    assert "rows" not in center["vs_none"]["acc1"]
    assert doc["results"]["none"]["scored_on_fitted_rows"] is False


def test_caption_rows_say_both_modalities_follow_the_split():
    emb = _labelled_set(n=80, seed=2)
    doc, _ = run_bench(emb, reducers="none,center", measures=["centroid"], repeats=2, seed=1)
    center = doc["results"]["center"]
    assert center["fitted_on"] == {"images": "fit", "texts": "fit"}
    assert not center["scored_on_fitted_rows"] and center["skipped"] == {}
    assert center["vs_none"]["centroid_gap"]["rows"] == 40
