"""``modgap demo`` on a small subset of the real demo data (pocket model, Fashion-MNIST)."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import POCKET_MODULES, needs
from modgap.cli import main
from modgap.datasets.fashion_mnist import CLASS_NAMES, DEFAULT_ROOT
from modgap.datasets.photos import PHOTO_CAPTIONS
from modgap.io import read_embeddings

LIMIT = 60


@pytest.fixture
def fashion_available():
    if not (DEFAULT_ROOT / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip("Debian package dataset-fashion-mnist not installed")


@needs(*POCKET_MODULES, "skimage")
def test_demo_small_subset(fashion_available, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MODGAP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "demo"
    # two reducers keep the benchmark quick; `make demo` runs them all
    args = ["demo", "--out", str(out), "--limit", str(LIMIT)]
    bench_args = ["--reducers", "none,center", "--repeats", "2"]

    # progress on: one line per step on stderr, with the time since the start
    assert main([*args, *bench_args]) == 0
    captured = capsys.readouterr()
    printed, steps = captured.out, captured.err
    assert str(out / "fashion_mnist_pocket.npz") in printed
    assert f"s] embedding the first {LIMIT} Fashion-MNIST test images" in steps
    assert f"s] benchmarking {LIMIT} of the {LIMIT} embedded images: 2 rows" in steps
    for line in ("split 1/2, row 1/2: none", "split 2/2, row 2/2: center"):
        assert f"s] {line}" in steps
    assert "modgap demo --full" in printed  # the full benchmark is one command away

    emb = read_embeddings(out / "fashion_mnist_pocket.npz")
    assert emb.image_emb.shape == (LIMIT, 256) and emb.text_emb.shape == (LIMIT, 256)
    assert list(emb.class_names) == list(CLASS_NAMES)
    assert emb.class_text_emb.shape[0] == 10 and emb.class_text_emb.shape[-1] == 256
    assert emb.labels.shape == (LIMIT,) and emb.has_pairs
    np.testing.assert_allclose(np.linalg.norm(emb.image_emb, axis=1), 1, atol=1e-5)
    # the pocket model separates the classes: nearest class prompt is right far above chance
    proto = emb.class_text_emb.mean(1)
    acc = float(((emb.image_emb @ proto.T).argmax(1) == emb.labels).mean())
    assert acc > 0.5
    # and it has a modality gap
    gap = np.linalg.norm(emb.image_emb.mean(0) - emb.text_emb.mean(0))
    assert gap > 0.1

    photos = read_embeddings(out / "photos_pocket.npz")
    assert photos.n_images == len(PHOTO_CAPTIONS) and photos.n_texts == 2 * len(PHOTO_CAPTIONS)

    report = out / "bench" / "report.html"
    assert report.is_file()
    assert "report.html" in printed

    # second run: tower features come from the cache (the image tower is never built); same
    # vectors. How much faster that is is measured by benchmarks/bench_demo.py, not here.
    import modgap.encoders.pocket as pocket

    def no_tower(*_a, **_k):
        raise AssertionError("the image tower was built although its features are cached")

    monkeypatch.setattr(pocket, "build_image_tower", no_tower)
    before = emb.image_emb.copy()
    assert main([*args, "--no-bench", "--no-progress"]) == 0
    np.testing.assert_allclose(read_embeddings(out / "fashion_mnist_pocket.npz").image_emb, before)
    assert list((tmp_path / "cache").glob("pocket-image-*.npy"))
    err = capsys.readouterr().err
    assert "embedded" in err and "s] embedding" not in err  # --no-progress: no step lines
    assert main([*args, "--no-bench", "-q"]) == 0
    assert capsys.readouterr().err == ""  # -q: nothing at all


def test_demo_without_data_says_how_to_install(tmp_path, capsys):
    code = main(["demo", "--out", str(tmp_path / "d"), "--fashion-mnist", str(tmp_path / "none")])
    err = capsys.readouterr().err
    assert code == 2
    assert "apt-get install dataset-fashion-mnist" in err
    assert not (tmp_path / "d").exists()


def test_demo_refuses_a_foreign_out_folder_before_any_model_loads(
    fashion_available, tmp_path, monkeypatch, capsys
):
    import modgap.encoders.pocket as pocket

    def no_model(*a, **k):
        raise AssertionError("the pocket model was loaded before --out was checked")

    monkeypatch.setattr(pocket, "PocketEncoder", no_model)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "notes.txt").write_text("mine")
    assert main(["demo", "--out", str(tmp_path / "d"), "--no-progress"]) == 2
    assert "files modgap did not write" in capsys.readouterr().err
    assert (tmp_path / "d" / "notes.txt").read_text() == "mine"


def test_demo_limit_too_small(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "d"), "--limit", "3"]) == 2
    assert "Invalid value for '--limit': 3 is not in the range x>=10" in capsys.readouterr().err


def test_demo_reducers_default_leaves_out_the_slow_ones():
    from modgap.cli.demo_cmd import SLOW_REDUCERS, demo_reducers
    from modgap.reducers import REDUCERS

    names, left_out = demo_reducers(None)
    chosen = names.split(",")
    assert chosen[0] == "none"
    assert set(chosen[1:]) == set(REDUCERS) - set(SLOW_REDUCERS)
    assert left_out == [r for r in SLOW_REDUCERS if r in REDUCERS]
    assert demo_reducers("all") == (None, [])
    assert demo_reducers("none,center") == ("none,center", [])


def test_demo_default_size_stays_small():
    """The default demo is sized for about a minute warm on 2 cores: its work grows with the
    rows (none + reducers) x splits x benchmarked images squared (the neighbour measures and
    retrieval are quadratic), and the cold run with the embedded images. Raising any of these
    must be a decision (and a rerun of benchmarks/bench_demo.py), not an accident."""
    from modgap.cli.demo_cmd import (
        BENCH_IMAGES,
        BENCH_REPEATS,
        DEMO_IMAGES,
        SLOW_REDUCERS,
        demo_command,
        demo_reducers,
    )

    defaults = {p.name: p.default for p in demo_command.params}
    assert defaults["limit"] == DEMO_IMAGES and defaults["bench_limit"] == BENCH_IMAGES
    assert defaults["repeats"] == BENCH_REPEATS and defaults["reducers"] is None
    rows = len(demo_reducers(None)[0].split(","))
    # exact OT is cubic; Sinkhorn's thousands of iterations alone outweighed the other rows
    assert {"ot-laplace", "ot-sinkhorn"} <= set(SLOW_REDUCERS)
    assert DEMO_IMAGES <= 2000
    assert 100 <= BENCH_IMAGES <= min(DEMO_IMAGES, 1000) and 2 <= BENCH_REPEATS <= 3
    assert rows * BENCH_REPEATS * BENCH_IMAGES**2 <= 6 * 3 * 1000**2


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ([], {"limit": 2000, "bench_limit": 1000, "reducers": None, "repeats": 3}),
        (["--full"], {"limit": None, "bench_limit": 0, "reducers": "all", "repeats": 5}),
        (
            ["--full", "--repeats", "2", "--reducers", "none,center"],
            {"limit": None, "bench_limit": 0, "reducers": "none,center", "repeats": 2},
        ),
    ],
)
def test_demo_full_is_the_whole_benchmark(monkeypatch, tmp_path, extra, expected):
    import modgap.cli.demo_cmd as demo_cmd

    seen = {}

    def fake_run_demo(out, limit, compute, **kw):
        seen.update(limit=limit, **{k: kw[k] for k in ("bench_limit", "reducers", "repeats")})

    monkeypatch.setattr(demo_cmd, "run_demo", fake_run_demo)
    assert main(["demo", "--out", str(tmp_path / "d"), *extra]) == 0
    assert seen == expected


@pytest.mark.parametrize(("warm", "code"), [(30.0, 0), (400.0, 1)])
def test_bench_demo_fails_over_the_warm_budget(monkeypatch, capsys, warm, code):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_demo.py"
    spec = importlib.util.spec_from_file_location("bench_demo", path)
    bench_demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench_demo)
    runs = iter([(200.0, 900.0), (warm, 600.0)])  # cold, then warm: no demo is run here
    monkeypatch.setattr(bench_demo, "_timed", lambda cmd, env: next(runs))
    monkeypatch.setattr("sys.argv", ["bench_demo.py"])
    assert bench_demo.main() == code
    captured = capsys.readouterr()
    assert ('"within_budget": true' in captured.out) == (code == 0)
    assert ("over its budget of 90 s" in captured.err) == (code == 1)
