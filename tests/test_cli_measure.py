"""``modgap measure``: table on stdout, strict JSON with provenance, errors as exit code 2."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import gapped_pairs
from modgap.cli import main
from modgap.measures import relative_modality_gap

pytestmark = pytest.mark.usefixtures("single_thread")


def _strict_load(path):
    def refuse(token):
        raise AssertionError(f"non-strict JSON token {token}")

    return json.loads(path.read_text(), parse_constant=refuse)


@pytest.fixture
def npz(tmp_path):
    X, Y = gapped_pairs(60, 16, gap=0.9, seed=0)
    path = tmp_path / "emb.npz"
    np.savez(path, image_emb=X, text_emb=Y)
    return path


def test_measure_npz_table_and_json(npz, tmp_path, capsys):
    out = tmp_path / "res" / "measures.json"
    assert main(["measure", str(npz), "--json", str(out), "--seed", "7", "--no-progress"]) == 0
    stdout = capsys.readouterr().out
    assert "centroid_gap" in stdout and "linear_separability" in stdout
    assert f"wrote {out}" in stdout
    doc = _strict_load(out)
    m = doc["measures"]
    for key in ("centroid_gap", "rmg", "itr", "tmr", "frechet_distance", "uniformity_cross"):
        assert isinstance(m[key], (float, int, str)), key
    prov = doc["provenance"]
    assert prov["inputs"] == {"images": str(npz), "texts": None, "pairs": None}
    assert prov["counts"] == {"n_images": 60, "n_texts": 60, "dim": 16, "paired": True}
    assert prov["seed"] == 7
    assert {"modgap", "numpy", "torch", "scipy", "sklearn", "POT"} <= prov["versions"].keys()
    assert not list(out.parent.glob(".*tmp*"))  # atomic write leaves no temp file


def test_measure_infinite_ratio_is_a_string_in_json(tmp_path):
    rng = np.random.default_rng(0)
    X = np.hstack([np.full((20, 1), 5.0), rng.standard_normal((20, 5))])
    Y = np.hstack([np.full((20, 1), -5.0), rng.standard_normal((20, 5))])
    path = tmp_path / "far.npz"
    np.savez(path, image_emb=X, text_emb=Y)
    out = tmp_path / "m.json"
    assert main(["measure", str(path), "--only", "itr", "--json", str(out)]) == 0
    assert _strict_load(out)["measures"] == {"itr": "inf", "tir": "inf", "tmr": 20.0, "imr": 20.0}


def test_measure_npy_pair_with_pairs_file(tmp_path, capsys):
    X, Y = gapped_pairs(45, 8, seed=1)
    X = X[:15]
    t2i = np.r_[np.arange(15), np.random.default_rng(2).integers(0, 15, size=30)]
    np.save(tmp_path / "img.npy", X)
    np.save(tmp_path / "txt.npy", Y)
    np.save(tmp_path / "pairs.npy", t2i)
    out = tmp_path / "m.json"
    args = ["measure", str(tmp_path / "img.npy"), str(tmp_path / "txt.npy")]
    rc = main([*args, "--pairs", str(tmp_path / "pairs.npy"), "--only", "rmg", "--json", str(out)])
    assert rc == 0
    doc = _strict_load(out)
    assert doc["measures"]["rmg"] == pytest.approx(relative_modality_gap(X, Y, t2i), rel=1e-6)
    assert doc["provenance"]["inputs"]["pairs"] == str(tmp_path / "pairs.npy")
    assert doc["provenance"]["only"] == ["rmg"]


def test_measure_unpaired_skips_pair_measures(tmp_path, capsys):
    X, Y = gapped_pairs(80, 8, seed=1)  # 60 texts: enough for hubness (>= 50 rows)
    np.save(tmp_path / "img.npy", X)
    np.save(tmp_path / "txt.npy", Y[:60])
    out = tmp_path / "m.json"
    rc = main(["measure", str(tmp_path / "img.npy"), str(tmp_path / "txt.npy"), "--json", str(out)])
    assert rc == 0
    assert "skipped" in capsys.readouterr().out
    assert set(_strict_load(out)["measures"]["skipped"]) == {"rmg", "alignment", "cosine"}
    rc = main(["measure", str(tmp_path / "img.npy"), str(tmp_path / "txt.npy"), "--only", "rmg"])
    assert rc == 2
    assert "rmg need(s) image-text pairs and the set has none" in capsys.readouterr().err


def test_measure_unknown_name(npz, capsys):
    assert main(["measure", str(npz), "--only", "centroid,bogus"]) == 2
    err = capsys.readouterr().err
    assert "error: unknown measure 'bogus'; valid names: centroid, per_dimension" in err
    assert "Traceback" not in err


def test_measure_missing_file(tmp_path, capsys):
    assert main(["measure", str(tmp_path / "nope.npz")]) == 2
    assert "nope.npz: no such file or folder" in capsys.readouterr().err


def test_measure_coco500(coco500_path, tmp_path):
    out = tmp_path / "coco.json"
    assert main(["measure", str(coco500_path), "--only", "centroid", "--json", str(out)]) == 0
    assert _strict_load(out)["measures"]["centroid_gap"] == pytest.approx(0.8514, abs=5e-4)


@pytest.mark.parametrize(("name", "fmt"), [("crfolder", "clip-retrieval"), ("emb.parquet", None)])
def test_measure_other_formats(tmp_path, name, fmt):
    from modgap.embeddings import EmbeddingSet
    from modgap.io import write_embeddings
    from modgap.measures import centroid_gap

    X, Y = gapped_pairs(40, 8, seed=5)
    path = write_embeddings(EmbeddingSet(X, Y), tmp_path / name, format=fmt)
    out = tmp_path / "m.json"
    assert main(["measure", str(path), "--only", "centroid", "--json", str(out)]) == 0
    got = _strict_load(out)["measures"]["centroid_gap"]
    assert got == pytest.approx(centroid_gap(X, Y)["centroid_gap"], rel=1e-5)


def test_streamed_sample_row_only_when_a_measure_was_sampled(tmp_path, capsys):
    X, Y = gapped_pairs(50, 8, seed=3)
    np.save(tmp_path / "img.npy", X)
    np.save(tmp_path / "txt.npy", Y)
    args = ["measure", str(tmp_path / "img.npy"), str(tmp_path / "txt.npy"), "--stream"]
    out = tmp_path / "m.json"
    assert main([*args, "--only", "centroid_gap", "--no-progress", "--json", str(out)]) == 0
    stdout = capsys.readouterr().out
    assert "sampled" not in stdout and "streamed" in stdout
    st = _strict_load(out)["measures"]["streaming"]
    assert st["sampled"] == [] and st["sample_queries"] == {"images": 0, "texts": 0}
    rc = main([*args, "--only", "centroid_gap,uniformity", "--no-progress", "--json", str(out)])
    assert rc == 0
    assert "sampled" in capsys.readouterr().out
    st = _strict_load(out)["measures"]["streaming"]
    assert st["sampled"] == ["uniformity"] and st["sample_queries"] == {"images": 50, "texts": 50}


@pytest.mark.parametrize("reducer", ["center", "gaussian"])
def test_measure_of_rows_reduced_with_their_own_statistics_says_so(tmp_path, capsys, reducer):
    # two samples of one distribution: no gap to remove, so separability is chance at best
    rng = np.random.default_rng(2)
    mu = rng.normal(size=16)
    X, Y = (rng.normal(size=(200, 16)) + mu for _ in range(2))
    path = tmp_path / "emb.npz"
    np.savez(path, image_emb=X.astype(np.float32), text_emb=Y.astype(np.float32))
    assert main(["reduce", reducer, str(path), "--out", str(tmp_path / "red"), "-q"]) == 0
    js = tmp_path / "m.json"
    red = tmp_path / "red" / "emb.npz"
    args = ["measure", str(red), "--only", "linear_separability", "--json", str(js)]
    assert main([*args, "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert "fitted on these same rows" in captured.err
    assert "not comparable" in captured.out and "†" in captured.out
    doc = _strict_load(js)
    assert "own statistics" in doc["measures"]["own_statistics"]["linear_separability"]
    assert "fitted on these same rows" in doc["warnings"][0]
    # the input itself is not flagged
    assert main(["measure", str(path), "--only", "linear_separability", "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert "not comparable" not in captured.out and "fitted on these" not in captured.err


def test_measure_shows_rmg_next_to_its_no_information_value(tmp_path, capsys):
    # random-encoder-like: each modality in a narrow cone, matched = unmatched cosines
    rng = np.random.default_rng(0)
    mx, my = rng.normal(size=32), rng.normal(size=32)
    X = mx + 0.01 * rng.normal(size=(200, 32))
    Y = my + 0.01 * rng.normal(size=(200, 32))
    path = tmp_path / "emb.npz"
    np.savez(path, image_emb=X.astype(np.float32), text_emb=Y.astype(np.float32))
    js = tmp_path / "m.json"
    assert main(["measure", str(path), "--only", "rmg,cosine", "--json", str(js)]) == 0
    out = capsys.readouterr().out
    m = _strict_load(js)["measures"]
    assert m["matched_cosine_mean"] == pytest.approx(m["unmatched_cosine_mean"], abs=1e-3)
    assert m["rmg"] == pytest.approx(m["rmg_chance"], abs=1e-4) and m["rmg_chance"] > 0.99
    row = next(line for line in out.splitlines() if " rmg " in f" {line} ")
    assert f"{m['rmg_chance']:.4g}" in row and "0.5 = pairs as random" not in out
