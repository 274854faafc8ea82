"""Zero-shot, clustering and the whole of ``modgap eval`` on a streamed source: the in-memory
task code on every route, the same values."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from modgap.compute import Compute
from modgap.errors import ModgapNotice
from modgap.io import read_embeddings
from modgap.stream import open_source
from modgap.stream.tasks import stream_clustering, stream_eval, stream_zero_shot
from modgap.tasks.clustering import clustering_metrics
from modgap.tasks.zeroshot import zero_shot_metrics
from test_stream import _have_dask, make_folder

SMALL = Compute(memory_budget="4MiB")  # many row blocks per shard


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    """A 4-shard clip-retrieval folder with labels and class prompts in ``extra.npz``; two
    class prompts are equal (ties between classes) and one class has no image."""
    root = tmp_path_factory.mktemp("labelled") / "cr"
    x, _ = make_folder(root, 1_200, 16, 4, seed=5)
    rng = np.random.default_rng(5)
    classes = rng.normal(size=(9, 16)).astype(np.float32)
    classes[4] = classes[3]
    labels = np.argmax(x @ classes.T + rng.normal(scale=0.5, size=(len(x), 9)), axis=1)
    labels[labels == 8] = 0
    np.savez(root / "extra.npz", labels=labels, class_text_emb=classes)
    return root


@pytest.fixture(scope="module")
def dask_engine():
    if not _have_dask():
        yield None
        return
    from modgap.stream import DaskEngine

    with DaskEngine(n_workers=2, processes=False) as e:
        yield e


def _read(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ModgapNotice)
        return read_embeddings(path)


def test_streamed_zero_shot_equals_in_memory(labelled, dask_engine):
    emb = _read(labelled)
    ref = zero_shot_metrics(emb.image_emb, emb.labels, emb.class_text_emb)
    assert ref["acc1"] < 1  # a real test: errors, and a class never labelled
    src = open_source(labelled)
    assert stream_zero_shot(src, compute=SMALL) == ref  # many blocks per shard, exactly
    assert stream_zero_shot(src) == ref
    if dask_engine is not None:
        assert stream_zero_shot(src, compute=SMALL, engine=dask_engine) == ref


def test_streamed_zero_shot_checks_its_inputs(labelled, small_folder):
    from modgap.errors import InputError

    src = open_source(labelled)
    with pytest.raises(InputError, match="labels must be in"):
        stream_zero_shot(src, labels=np.full(src.n_images, 20))
    with pytest.raises(InputError, match="needs image labels"):
        stream_zero_shot(open_source(small_folder))


@pytest.fixture(scope="module")
def small_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("plain") / "cr"
    make_folder(root, 600, 16, 3, seed=1)
    return root


@pytest.mark.parametrize("points", [20_000, 900])
def test_streamed_clustering_equals_in_memory(labelled, points):
    emb = _read(labelled)
    ref = clustering_metrics(
        emb.image_emb, emb.text_emb, emb.text_to_image, emb.labels, max_points=points, seed=3
    )
    got = stream_clustering(open_source(labelled), max_points=points, compute=Compute(seed=3))
    sampling = got.pop("sampling")["clustering"]
    assert got == ref
    assert sampling["exact"] is (points >= 2 * emb.n_images)
    assert sampling["population_images"] == emb.n_images
    assert sampling["images"] == (emb.n_images if points > 2400 else 450)


def test_eval_stream_reports_zero_shot_and_clustering(labelled, tmp_path):
    from modgap.cli import main

    out = tmp_path / "e.json"
    assert main(["eval", str(labelled), "--stream", "--json", str(out), "-q"]) == 0
    tasks = json.loads(out.read_text())["tasks"]
    emb = _read(labelled)
    zs = zero_shot_metrics(emb.image_emb, emb.labels, emb.class_text_emb)
    cl = clustering_metrics(emb.image_emb, emb.text_emb, emb.text_to_image, emb.labels)
    for k, v in {**zs, **cl}.items():
        assert tasks[k] == v, k
    assert "skipped" not in tasks
    assert tasks["sampling"]["clustering"]["exact"] is True


@pytest.mark.parametrize("which", ["labelled", "small_folder"])
def test_every_in_memory_eval_key_is_streamed_or_skipped(which, request, tmp_path):
    from modgap.cli.eval_cmd import run_eval

    folder = request.getfixturevalue(which)
    mem = run_eval(str(folder), quiet=True)["tasks"]
    streamed = stream_eval(open_source(folder), sample_queries=None)
    skipped = streamed.get("skipped", {})
    for key in mem:
        if key in ("skipped", "estimates", "sampling"):
            continue
        assert key in streamed or any(key in s for s in skipped), key
        if key in streamed:
            assert streamed[key] == pytest.approx(mem[key], rel=1e-9, abs=1e-12), key
    # what does not apply says why, on both routes alike
    assert skipped == mem.get("skipped", {})
    if which == "small_folder":
        assert skipped["zeroshot"] == "needs image labels"


def test_streamed_eval_refuses_tasks_that_do_not_apply(small_folder, capsys):
    from modgap.cli import main

    assert main(["eval", str(small_folder), "--stream", "--tasks", "zeroshot", "-q"]) == 2
    err = capsys.readouterr().err
    assert "task 'zeroshot' does not apply: needs image labels" in err
    assert err.count("\n") == 1
