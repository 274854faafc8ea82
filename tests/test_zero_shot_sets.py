"""Zero-shot sets without captions (``image_emb``, ``labels``, ``class_names``,
``class_text_emb``): read, evaluated, measured (images against the class prompts) and
benchmarked."""

from __future__ import annotations

import json

import numpy as np
import pytest

from modgap.cli import main
from modgap.io import read_embeddings

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture
def zs_npz(tmp_path):
    rng = np.random.default_rng(0)
    C = rng.standard_normal((10, 16))
    C /= np.linalg.norm(C, axis=1, keepdims=True)
    y = rng.integers(0, 10, 240)
    X = C[y] + 0.5 * rng.standard_normal((240, 16)) + 0.6  # an offset: a modality gap
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    p = tmp_path / "zs.npz"
    np.savez(p, image_emb=X.astype(np.float32), labels=y,
             class_names=np.array([f"c{i}" for i in range(10)]),
             class_text_emb=C.astype(np.float32))  # fmt: skip
    return p, X, y, C


def test_read_eval_measure(zs_npz, tmp_path, capsys):
    p, X, y, C = zs_npz
    emb = read_embeddings(p)
    assert not emb.has_texts and emb.n_texts == 0 and not emb.has_pairs
    js = tmp_path / "e.json"
    assert main(["eval", str(p), "--json", str(js), "--no-progress"]) == 0
    tasks = json.loads(js.read_text())["tasks"]
    expected = float(np.mean(np.argmax(X @ C.T, axis=1) == y))
    assert tasks["acc1"] == pytest.approx(expected)
    assert "cluster_ami" in tasks and "retrieval" in tasks["skipped"]
    js = tmp_path / "m.json"
    assert main(["measure", str(p), "--json", str(js), "--no-progress"]) == 0
    assert "against 10 class prompts" in capsys.readouterr().out
    m = json.loads(js.read_text())["measures"]
    gap = np.linalg.norm(X.mean(0) - C.mean(0))
    assert m["centroid_gap"] == pytest.approx(gap, rel=1e-5)
    # pair measures need pairs; hubness needs more than 10 class prompts to mean anything
    assert set(m["skipped"]) == {"rmg", "alignment", "cosine", "hubness"}
    assert "only 10 rows" in m["skipped"]["hubness"]


def test_bench(zs_npz, tmp_path):
    p = zs_npz[0]
    out = tmp_path / "b"
    argv = ["bench", str(p), "--out", str(out), "--reducers", "none,center,gaussian"]
    assert main([*argv, "--repeats", "2", "--no-progress", "-q"]) == 0
    run = json.loads((out / "results.json").read_text())["datasets"]["zs"]
    assert set(run["results"]) == {"none", "center", "gaussian"} and not run["skipped"]
    assert "acc1" in run["results"]["center"]["metrics"]
    # centring the images and the prompts closes their centroid gap
    gaps = {n: r["metrics"]["centroid_gap"]["mean"] for n, r in run["results"].items()}
    assert gaps["center"] < 0.5 * gaps["none"]
