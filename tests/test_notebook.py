"""modgap in a notebook: short reprs, results as frames, the one spelling of non-finite
numbers in modgap's JSON files read back by every reader."""

from __future__ import annotations

import importlib.machinery
import json
import math
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import modgap
from conftest import gapped_pairs
from modgap.cli import main
from modgap.files import write_json
from modgap.provenance import NON_FINITE, jsonable, number, restored
from modgap.report.compare import load_entries
from modgap.report.results import COLUMNS, read_results, result_rows

pytestmark = pytest.mark.usefixtures("single_thread")

ROOT = Path(__file__).resolve().parents[1]


def _rich_set(n: int = 40, d: int = 16) -> modgap.EmbeddingSet:
    X, Y = gapped_pairs(n=n, d=d, seed=0)
    rng = np.random.default_rng(0)
    return modgap.EmbeddingSet(
        X,
        np.concatenate([Y, Y[::-1]]),
        text_to_image=np.concatenate([np.arange(n), np.arange(n)[::-1]]),
        labels=rng.integers(0, 5, n),
        class_names=[f"class {i}" for i in range(5)],
        class_text_emb=gapped_pairs(n=15, d=d, seed=1)[1].reshape(5, 3, d),
        image_ids=[f"img{i:05d}.jpg" for i in range(n)],
        texts=[f"a caption number {i}" for i in range(2 * n)],
        metadata={f"field_{i}": "x" * 500 for i in range(9)},
        source="/a/very/long/folder/name/" * 10 + "coco_val2017_clip_vit_b16.npz",
    )


def test_embedding_set_repr_is_short_and_says_what_is_attached():
    emb = _rich_set()
    text = repr(emb)
    assert len(text) < 300, text
    for part in ("40 images", "80 texts", "16 float32", "2 texts per image", "5 classes",
                 "5×3", "image_ids, texts", "coco_val2017_clip_vit_b16.npz"):  # fmt: skip
        assert part.split()[-1] in text, part
    assert "[[" not in text and "array" not in text  # no arrays dumped
    html = emb._repr_html_()
    assert html.startswith("<table>") and "<th" in html and "5 classes" in html
    assert len(html) < 2000
    features = repr(modgap.FeatureSet.from_embeddings(emb))
    assert features.startswith("FeatureSet(") and len(features) < 300 and "features" in features
    assert "unpaired" in repr(modgap.EmbeddingSet(*gapped_pairs(n=5, d=4), paired=False))


def test_coco_set_repr_is_short(coco500_path):
    emb = modgap.read_embeddings(coco500_path)
    text = repr(emb)
    assert len(text) < 300 and "500" in text and "512 float32" in text


def test_results_are_dicts_that_show_short():
    emb = modgap.EmbeddingSet(*gapped_pairs(n=60, d=12, seed=0))
    gap = modgap.measure(emb)
    assert isinstance(gap, dict) and gap == dict(gap)  # still a plain dict to every caller
    assert json.loads(json.dumps(jsonable(gap))).keys() == gap.keys()
    text = repr(gap)
    assert len(text) < 300 and text.startswith("Results(centroid_gap=") and "more" in text
    assert "[" not in text  # no nested lists (per_dimension's top dimensions)
    assert "<table>" in gap._repr_html_() and "centroid_gap" in gap._repr_html_()
    tasks = modgap.run_tasks(emb)
    assert len(repr(tasks)) < 300 and "skipped: zeroshot" in repr(tasks)
    assert "zeroshot" in tasks._repr_html_()
    doc, _ = modgap.run_bench(emb, reducers="none,center", repeats=2, measures="centroid")
    assert repr(doc).startswith("Results(bench rows: none, center;") and len(repr(doc)) < 300
    html = doc._repr_html_()
    assert html.count("<tr>") == 3 and "rsum" in html


def test_not_fitted_error_is_scikit_learns():
    from sklearn.exceptions import NotFittedError as SklearnNotFittedError
    from sklearn.utils.validation import check_is_fitted

    assert issubclass(modgap.NotFittedError, SklearnNotFittedError)
    assert issubclass(modgap.NotFittedError, modgap.ModgapError)  # the CLI's one-line error
    assert modgap.errors.NotFittedError is modgap.NotFittedError  # one class, built once
    reducer = modgap.get_reducer("center")
    with pytest.raises(SklearnNotFittedError, match="not fitted yet"):
        reducer.transform_images(np.ones((2, 4), np.float32))
    with pytest.raises(SklearnNotFittedError):
        check_is_fitted(reducer)
    with pytest.raises(SklearnNotFittedError, match="not fitted yet"):
        modgap.CSLS().offsets(np.ones((2, 4), np.float32), np.ones((3, 4), np.float32))


def test_non_finite_numbers_have_one_spelling_and_every_reader_takes_it(tmp_path):
    """inf, -inf and nan go out as "inf", "-inf", "nan" (strict JSON) from every writer and
    come back as floats through every reader of modgap's own files."""
    assert jsonable([math.inf, -math.inf, math.nan, np.float32("inf")]) == [
        "inf",
        "-inf",
        "nan",
        "inf",
    ]
    assert set(NON_FINITE) == {"inf", "-inf", "nan"}
    assert number("inf") == math.inf and number(" -Inf ") == -math.inf
    assert math.isnan(number("nan")) and number("cat") is None and number(True) is None
    # the text of a provenance record stays text
    assert restored({"provenance": {"input": "nan"}, "x": ["nan"]})["provenance"]["input"] == "nan"

    # a measure JSON and a bench results.json with non-finite values, as modgap writes them
    measures = {"measures": {"itr": math.inf, "rmg": math.nan, "gap": 0.5, "neg": -math.inf},
                "provenance": {"command": "nan"}}  # fmt: skip
    metric = {"mean": math.inf, "ci95": [math.nan, math.nan], "values": [math.inf, math.inf]}
    finite = {"mean": 0.25, "ci95": [0.2, 0.3], "values": [0.2, 0.3]}
    diff = {"mean": math.nan, "ci95": [math.nan, math.nan], "significant": False}
    run = {"setting": {"seeds": [0, 1], "n_eval_images": 30, "n_fit_images": 30},
           "results": {"none": {"metrics": {"itr": metric, "rmg": finite}},
                       "center": {"metrics": {"itr": metric, "rmg": finite},
                                  "vs_none": {"itr": diff}}}}  # fmt: skip
    write_json(tmp_path / "m.json", measures)
    write_json(tmp_path / "b" / "results.json", {"datasets": {"coco": run}})
    for p in (tmp_path / "m.json", tmp_path / "b" / "results.json"):
        text = p.read_text()
        assert "Infinity" not in text and "NaN" not in text and '"inf"' in text
        json.loads(text, parse_constant=lambda c: pytest.fail(f"non-strict JSON: {c}"))

    # read_results: floats again, the provenance text untouched
    m = read_results(tmp_path / "m.json")
    assert m["measures"]["itr"] == math.inf and m["measures"]["neg"] == -math.inf
    assert math.isnan(m["measures"]["rmg"]) and m["provenance"]["command"] == "nan"
    b = read_results(tmp_path / "b" / "results.json")
    assert b["datasets"]["coco"]["results"]["none"]["metrics"]["itr"]["mean"] == math.inf

    # result_rows (to_frame's rows)
    rows = {r["key"]: r for r in result_rows(tmp_path / "m.json")}
    assert rows["itr"]["value"] == math.inf and math.isnan(rows["rmg"]["value"])
    brows = {(r["row"], r["key"]): r for r in result_rows(tmp_path / "b" / "results.json")}
    assert brows[("none", "itr")]["value"] == math.inf
    assert math.isnan(brows[("center", "itr")]["diff"])

    # compare: the reader and the command, end to end
    entries = load_entries(str(tmp_path / "b" / "results.json"))
    assert entries[0]["metrics"]["itr"]["mean"] == math.inf
    out = tmp_path / "cmp"
    argv = [
        "compare",
        f"{tmp_path / 'b' / 'results.json'}#none",
        f"{tmp_path}/b/results.json#center",
    ]
    assert main([*argv, str(tmp_path / "m.json"), "--out", str(out), "-q"]) == 0
    cmp = read_results(out / "compare.json")
    assert cmp["entries"][2]["metrics"]["itr"]["mean"] == math.inf
    crows = {(r["row"], r["key"]): r for r in result_rows(out / "compare.json")}
    assert crows[("b:coco#center", "itr")]["value"] == math.inf
    assert crows[("b:coco#center", "rmg")]["diff"] == 0.0

    # the docs tables' formatter
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import docstables as dt
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    assert dt.fmt("inf") == "∞" and dt.fmt("-inf") == "−∞" and dt.fmt("nan") == "nan"
    assert dt.fmt(m["measures"]["itr"]) == "∞"


@pytest.mark.slow
def test_bench_results_of_a_real_clip_set_compare_and_frame(coco500_path, tmp_path, capsys):
    """The README's compare line on two saved bench results of COCO-500 (one with score
    corrections), whose ∞ (ITR/TIR at a full gap) used to stop compare."""
    common = [str(coco500_path), "--repeats", "2", "-q", "--no-progress"]
    a, b = tmp_path / "bench", tmp_path / "bench_corr"
    assert main(["bench", *common, "--reducers", "none,center", "--out", str(a)]) == 0
    assert main(["bench", *common, "--reducers", "none", "--corrections", "csls",
                 "--out", str(b)]) == 0  # fmt: skip
    assert '"inf"' in (a / "results.json").read_text()
    cmp = tmp_path / "cmp"
    argv = ["compare", str(a / "results.json"), str(b / "results.json"), "--out", f"{cmp}/"]
    assert main(argv) == 0
    assert f"wrote {cmp / 'compare.json'} and" in capsys.readouterr().out
    argv = ["compare", f"{a / 'results.json'}#none", f"{a / 'results.json'}#center"]
    assert main([*argv, "--out", str(tmp_path / "cmp2"), "-q"]) == 0
    rows = result_rows(a / "results.json")
    assert {r["row"] for r in rows} == {"none", "center"}
    itr = next(r for r in rows if r["row"] == "none" and r["key"] == "itr")
    assert itr["value"] == math.inf and itr["n"] == 2


def test_to_frame_is_long_with_intervals(tmp_path):
    pd = pytest.importorskip(
        "pandas", reason="to_frame needs pandas: pip install 'modgap[notebook]'"
    )
    emb = modgap.EmbeddingSet(*gapped_pairs(n=60, d=12, seed=0))
    frame = modgap.to_frame(modgap.measure(emb, only=["centroid", "rmg"]))
    assert list(frame.columns) == list(COLUMNS)
    assert {"centroid_gap", "rmg"} <= set(frame["key"]) and frame["value"].dtype == float
    doc, _ = modgap.run_bench(emb, reducers=["none", "center"], repeats=2, measures=["centroid"])
    bench = modgap.to_frame(doc)
    gap = bench[(bench.row == "center") & (bench.key == "centroid_gap")].iloc[0]
    assert gap.ci_low <= gap.value <= gap.ci_high and gap.n == 2
    assert gap["diff"] < 0 and gap.diff_low <= gap["diff"] <= gap.diff_high
    assert isinstance(bench, pd.DataFrame)
    with pytest.raises(modgap.ModgapError, match="result dict or a results file"):
        modgap.to_frame(3)


def test_library_calls_accept_what_the_command_line_accepts(capsys):
    """``only``, ``tasks``, ``ks``, ``reducers``, ``corrections``: a comma-separated string or a
    list, read by the resolver the commands use, with the same messages."""
    emb = modgap.EmbeddingSet(*gapped_pairs(n=40, d=8, seed=0))
    by_string = modgap.measure(emb, only="centroid,rmg")
    assert by_string == modgap.measure(emb, only=["centroid", "rmg"])
    assert by_string == modgap.measure(emb, only=["centroid, rmg"])
    assert {"centroid_gap", "rmg"} <= set(by_string) and "frechet_distance" not in by_string
    tasks = modgap.run_tasks(emb, tasks="retrieval", ks="1,5")
    assert tasks == modgap.run_tasks(emb, tasks=["retrieval"], ks=[1, 5])
    assert "image_retrieval_recall@5" in tasks and "image_retrieval_recall@10" not in tasks
    assert modgap.run_tasks(emb, tasks="retrieval", ks=np.int64(5))["text_retrieval_recall@5"]
    doc, _ = modgap.run_bench(emb, reducers="none,center", corrections="csls", repeats=2,
                              ks="1", measures="centroid")  # fmt: skip
    assert list(doc["results"]) == ["none", "center", "csls"] and doc["setting"]["ks"] == [1]

    # the same messages as the command line's
    with pytest.raises(modgap.ModgapError, match="ks must be comma-separated integers, got 'x'"):
        modgap.run_tasks(emb, ks="x")
    assert main(["eval", "-", "--k", "x"]) == 2
    assert "--k must be comma-separated integers, got 'x'" in capsys.readouterr().err
    for bad, message in ((True, "comma-separated integers"), ([0], "must be positive"),
                         ("", "ks is empty"), ([1.5], "comma-separated integers")):  # fmt: skip
        with pytest.raises(modgap.ModgapError, match=message):
            modgap.run_tasks(emb, ks=bad)
    with pytest.raises(modgap.ModgapError, match="unknown measure 'bogus'; valid names"):
        modgap.measure(emb, only="centroid,bogus")
    with pytest.raises(modgap.ModgapError, match="unknown task"):
        modgap.run_tasks(emb, tasks="retrieval,nope")
    with pytest.raises(modgap.ModgapError, match="unknown score correction"):
        modgap.run_bench(emb, reducers="none", corrections="csls,nope")
    with pytest.raises(modgap.ModgapError, match="names must be strings"):
        modgap.measure(emb, only=[3])


class _FakeOutput:
    """ipywidgets.Output as rich's live display uses it: a context that captures output."""

    def __init__(self):
        self.cleared = 0
        self.closed = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def clear_output(self, wait=False):
        self.cleared += 1

    def close(self):
        self.closed = True


def _fake_kernel(monkeypatch, widgets: bool):
    """What a Jupyter kernel looks like to rich: ``is_jupyter`` (ZMQInteractiveShell), and
    IPython.display / ipywidgets to draw with."""
    import types

    import rich.console

    import modgap._progress as mp

    shown: list = []
    display_mod = types.ModuleType("IPython.display")
    display_mod.display = shown.append
    ipython = types.ModuleType("IPython")
    ipython.display = display_mod
    monkeypatch.setattr(rich.console, "_is_jupyter", lambda: True)
    monkeypatch.setitem(sys.modules, "IPython", ipython)
    monkeypatch.setitem(sys.modules, "IPython.display", display_mod)
    monkeypatch.setattr(mp, "_warned_widgets", False)
    if widgets:
        ipywidgets = types.ModuleType("ipywidgets")
        ipywidgets.Output = _FakeOutput
        ipywidgets.__spec__ = importlib.machinery.ModuleSpec("ipywidgets", None)
        monkeypatch.setitem(sys.modules, "ipywidgets", ipywidgets)
    else:
        monkeypatch.setitem(sys.modules, "ipywidgets", None)  # import fails, as when absent
    return shown


def test_progress_draws_in_a_notebook(monkeypatch):
    from rich.console import Console

    from modgap._progress import display_kind, progress

    shown = _fake_kernel(monkeypatch, widgets=True)
    console = Console(stderr=True)
    assert console.is_jupyter and not console.is_terminal  # what used to hide the bar
    assert display_kind(console) == "notebook"
    with progress("measuring", total=3, console=console) as bar:
        assert bar._p is not None  # a live rich bar, not the silent one
        bar.advance()
        bar._p.refresh()
    widgets = [w for w in shown if isinstance(w, _FakeOutput)]
    assert widgets and widgets[0].cleared >= 1 and widgets[0].closed  # drawn, then removed
    rendered = [str(getattr(r, "text", "")) for r in shown if not isinstance(r, _FakeOutput)]
    assert any("measuring" in text for text in rendered)


def test_progress_in_a_notebook_without_ipywidgets_says_so_once(monkeypatch):
    from rich.console import Console

    from modgap._progress import display_kind, progress

    _fake_kernel(monkeypatch, widgets=False)
    console = Console(stderr=True)
    with pytest.warns(
        modgap.ModgapNotice, match=r"needs ipywidgets: pip install 'modgap\[notebook\]'"
    ):
        assert display_kind(console) is None
    with progress("measuring", total=3, console=console) as bar:
        assert bar._p is None
    # outside a notebook, the terminal test decides as before
    assert display_kind(Console(force_terminal=True, force_jupyter=False)) == "terminal"
    assert display_kind(Console(force_terminal=False, force_jupyter=False)) is None


def _labelled_pairs(n: int = 120, d: int = 8):
    """Paired embeddings with a CLIP-like gap and a class label that the shared part decides."""
    X, Y = gapped_pairs(n=n, d=d, seed=2)
    labels = (X[:, 0] - X[:, 1] > np.median(X[:, 0] - X[:, 1])).astype(int)
    return X, Y, labels


def test_a_fitted_reducer_works_inside_a_scikit_learn_pipeline():
    from sklearn.base import clone
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score
    from sklearn.pipeline import Pipeline

    X, Y, labels = _labelled_pairs()
    reducer = modgap.get_reducer("procrustes").fit(X, Y)
    pipe = Pipeline([("gap", reducer.as_transformer("image")), ("clf", LogisticRegression())])
    pipe.fit(X, labels)
    by_hand = LogisticRegression().fit(reducer.transform_images(X), labels)
    np.testing.assert_array_equal(pipe.predict(X), by_hand.predict(reducer.transform_images(X)))
    assert pipe.named_steps["gap"].reducer_ is reducer  # a fitted reducer is used as it is
    # a clone (cross-validation clones every step) keeps the fitted reducer
    assert clone(pipe).named_steps["gap"].reducer is reducer
    assert cross_val_score(pipe, X, labels, cv=3).mean() > 0.6
    np.testing.assert_array_equal(
        reducer.as_transformer("text").fit(Y).transform(Y), reducer.transform_texts(Y)
    )

    # an unfitted reducer is fitted on the pairs the pipeline passes to its step; the
    # parameter itself stays unfitted (scikit-learn's rule)
    fresh = modgap.get_reducer("procrustes")
    pipe2 = Pipeline(
        [("gap", modgap.ModalityTransformer(fresh, "image")), ("clf", LogisticRegression())]
    )
    pipe2.fit(X, labels, gap__paired=Y)
    assert not fresh.is_fitted()
    np.testing.assert_array_equal(pipe2.predict(X), pipe.predict(X))
    with pytest.raises(modgap.NotFittedError, match="give the other modality"):
        Pipeline([("gap", fresh.as_transformer()), ("clf", LogisticRegression())]).fit(X, labels)
    with pytest.raises(modgap.ModgapError, match="modality must be one of image, text"):
        reducer.as_transformer("audio").fit(X)
    with pytest.raises(modgap.ModgapError, match="X has 3 features, but ModalityTransformer"):
        reducer.as_transformer().fit(X).transform(X[:, :3])


#: checks of scikit-learn's check_estimator that a prefit reducer cannot pass, and why
_WIDTH = (
    "fits on random data of another width (2, 3, 5 or 10 columns): a fitted reducer maps the "
    "width it was fitted on and refuses any other"
)
_PREFIT_FAILS = {
    name: _WIDTH
    for name in (
        "check_dict_unchanged",
        "check_dont_overwrite_parameters",
        "check_dtype_object",
        "check_estimators_dtypes",
        "check_estimators_fit_returns_self",
        "check_estimators_nan_inf",
        "check_estimators_overwrite_params",
        "check_estimators_pickle",
        "check_f_contiguous_array_estimator",
        "check_fit2d_1feature",
        "check_fit2d_1sample",
        "check_fit2d_predict1d",
        "check_fit_check_is_fitted",
        "check_fit_idempotent",
        "check_fit_score_takes_y",
        "check_methods_sample_order_invariance",
        "check_methods_subset_invariance",
        "check_n_features_in",
        "check_pipeline_consistency",
        "check_readonly_memmap_input",
        "check_transformer_data_not_an_array",
        "check_transformer_general",
        "check_transformer_preserve_dtypes",
    )
}


def test_modality_transformer_passes_scikit_learns_checks_that_apply():
    import inspect

    from sklearn.utils.estimator_checks import check_estimator

    if "expected_failed_checks" not in inspect.signature(check_estimator).parameters:
        pytest.skip("check_estimator's expected_failed_checks needs scikit-learn >= 1.6")
    X, Y = gapped_pairs(n=60, d=4, seed=0)
    transformer = modgap.get_reducer("center").fit(X, Y).as_transformer("image")
    results: dict[str, str] = {}

    def record(estimator, check_name, exception, status, expected_to_fail, **_):
        results[check_name] = status

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", modgap.ModgapNotice)  # checks feed non-unit rows
        check_estimator(
            transformer,
            expected_failed_checks=_PREFIT_FAILS,
            on_fail=None,
            on_skip=None,  # check_array_api_input skips itself unless SCIPY_ARRAY_API is set
            callback=record,
        )
    passed = {name for name, status in results.items() if status == "passed"}
    # what it does pass: parameters, clone, unfitted errors, and refusing bad input with
    # scikit-learn's own messages
    assert {
        "check_get_params_invariance",
        "check_set_params",
        "check_estimators_unfitted",
        "check_complex_data",
        "check_estimators_empty_data_messages",
        "check_estimator_sparse_array",
        "check_no_attributes_set_in_init",
    } <= passed
    assert not {n for n, s in results.items() if s == "failed"}
    assert {n for n, s in results.items() if s == "xfail"} == set(_PREFIT_FAILS)


def test_to_frame_gives_a_sampled_estimate_its_interval_and_sample(tmp_path):
    pd = pytest.importorskip(
        "pandas", reason="to_frame needs pandas: pip install 'modgap[notebook]'"
    )
    from modgap.io import open_source
    from modgap.stream import stream_measures

    X, Y = gapped_pairs(n=80, d=8, seed=0)
    np.save(tmp_path / "img.npy", X)
    np.save(tmp_path / "txt.npy", Y)
    source = open_source(tmp_path / "img.npy", tmp_path / "txt.npy")
    result = stream_measures(source, only="neighbours,centroid", sample_queries=20)
    frame = modgap.to_frame(result)
    est = result["estimates"]["tmr"]
    row = frame[frame.key == "tmr"].iloc[0]
    assert (row.ci_low, row.ci_high) == tuple(est["interval"]) and row.ci_low <= row.ci_high
    assert row.n == est["sample"] == 20 and row.population == 80 and not row.exact
    exact = frame[frame.key == "centroid_gap"].iloc[0]
    assert pd.isna(exact.ci_low) and pd.isna(exact.n)  # exact keys carry no interval


def test_the_best_model_metadata_keeps_non_finite_metrics(tmp_path):
    """The trainer's best-model file holds its validation metrics as strict JSON too."""
    import torch

    from modgap.train.checkpoint import load_best, save_best

    model = torch.nn.Linear(3, 2)
    save_best(tmp_path / "best.safetensors", model, 4, {"rsum": 12.5, "median_rank": math.inf,
                                                         "loss": math.nan})  # fmt: skip
    from safetensors import safe_open

    with safe_open(str(tmp_path / "best.safetensors"), "pt") as f:
        text = f.metadata()["modgap_best"]
    json.loads(text, parse_constant=lambda c: pytest.fail(f"non-strict JSON: {c}"))
    info = load_best(tmp_path / "best.safetensors", torch.nn.Linear(3, 2))
    assert info["epoch"] == 4 and info["metrics"]["median_rank"] == math.inf
    assert math.isnan(info["metrics"]["loss"]) and info["metrics"]["rsum"] == 12.5
