"""``modgap reduce``: fit and write, --apply a saved reducer, and its error messages."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import gapped_pairs
from modgap.cli import main
from modgap.cli.reduce_cmd import parse_params
from modgap.io import read_embeddings
from modgap.reducers import get_reducer, load_reducer

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture
def npz(tmp_path):
    X, Y = gapped_pairs(n=40, d=12, seed=20)
    p = tmp_path / "emb.npz"
    np.savez(p, image_emb=X, text_emb=Y)
    return p


@pytest.fixture
def new_npz(tmp_path):
    X, Y = gapped_pairs(n=10, d=12, seed=21)
    p = tmp_path / "new" / "emb.npz"
    p.parent.mkdir()
    np.savez(p, image_emb=X, text_emb=Y)
    return p


def test_fit_writes_embeddings_and_model(npz, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["reduce", "shift", str(npz), "--out", str(out), "--lam", "0.5", "--no-progress"])
    assert rc == 0
    assert "wrote" in capsys.readouterr().out
    got = read_embeddings(out / "emb.npz")
    src = read_embeddings(npz)
    A, B = get_reducer("shift", lam=0.5).fit_transform(src.image_emb, src.text_emb)
    np.testing.assert_allclose(got.image_emb, A, atol=1e-6)
    np.testing.assert_allclose(got.text_emb, B, atol=1e-6)
    model = load_reducer(out / "reducer.safetensors")
    assert model.get_params()["lam"] == 0.5
    assert (out / "reduce.json").exists()


def test_apply_saved_model(npz, new_npz, tmp_path):
    model = tmp_path / "m.safetensors"
    rc = main(
        ["reduce", "spectral", str(npz), "--out", str(tmp_path / "fit"), "--save-model",
         str(model), "--n-components", "4", "--param", "n_neighbors=6", "--no-progress"]
    )  # fmt: skip
    assert rc == 0
    r = load_reducer(model)
    assert r.get_params()["n_neighbors"] == 6 and r.n_components == 4
    rc = main(["reduce", "--apply", str(model), str(new_npz), "--out", str(tmp_path / "ap")])
    assert rc == 0
    got = read_embeddings(tmp_path / "ap" / "emb.npz", normalize=False)
    new = read_embeddings(new_npz)
    np.testing.assert_allclose(got.image_emb, r.transform_images(new.image_emb), atol=1e-6)
    np.testing.assert_allclose(got.text_emb, r.transform_texts(new.text_emb), atol=1e-6)
    assert got.dim == 4


def test_npy_pair_in_npy_pair_out(tmp_path):
    X, Y = gapped_pairs(n=30, d=8, seed=22)
    np.save(tmp_path / "img.npy", X)
    np.save(tmp_path / "txt.npy", Y)
    out = tmp_path / "o"
    rc = main(["reduce", "center", str(tmp_path / "img.npy"), str(tmp_path / "txt.npy"),
               "--out", str(out), "--no-progress"])  # fmt: skip
    assert rc == 0
    A, B = get_reducer("center").fit_transform(X, Y)
    np.testing.assert_allclose(np.load(out / "img.npy"), A, atol=1e-6)
    np.testing.assert_allclose(np.load(out / "txt.npy"), B, atol=1e-6)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["reduce", "pca", "{npz}", "--out", "{out}"], "unknown reducer 'pca'"),
        (["reduce", "center", "{npz}", "--out", "{out}", "--lam", "1"], "has no parameter 'lam'"),
        (["reduce", "shift", "{npz}", "--out", "{out}", "-p", "lam"], "--param wants key=value"),
        (["reduce", "--apply", "{dir}/none.safetensors", "{npz}", "--out", "{out}"],
         "no such reducer file"),
        (["reduce", "--apply", "{out}/none.safetensors", "{npz}", "--out", "{out}"],
         "--out {out} would write inside or replace --apply {out}/none.safetensors"),
        (["reduce", "--apply", "{npz}", "{npz}", "--out", "{out}"], "not a readable reducer"),
        (["reduce", "spectral", "{npz}", "--out", "{out}", "--direction", "up"],
         "direction"),
        (["reduce", "center", "{npz}", "--out", "{dir}"],
         "--out {dir} would write inside or replace the input {npz}"),
    ],
)  # fmt: skip
def test_errors(argv, message, npz, tmp_path, capsys):
    argv = [a.format(npz=npz, out=tmp_path / "out", dir=npz.parent) for a in argv]
    message = message.format(npz=npz, out=tmp_path / "out", dir=npz.parent)
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_apply_wrong_dimension_and_corrupt_model(npz, tmp_path, capsys):
    model = tmp_path / "m.safetensors"
    assert main(["reduce", "center", str(npz), "--out", str(tmp_path / "a"),
                 "--save-model", str(model), "--no-progress"]) == 0  # fmt: skip
    X, Y = gapped_pairs(n=10, d=6, seed=23)
    other = tmp_path / "d6.npz"
    np.savez(other, image_emb=X, text_emb=Y)
    assert main(["reduce", "--apply", str(model), str(other), "--out", str(tmp_path / "b")]) == 2
    assert "have 6 dimensions but reducer 'center' was fitted on 12" in capsys.readouterr().err
    raw = bytearray(model.read_bytes())
    raw[-2] ^= 0x55
    model.write_bytes(bytes(raw))
    assert main(["reduce", "--apply", str(model), str(npz), "--out", str(tmp_path / "c")]) == 2
    assert "checksum mismatch" in capsys.readouterr().err


def test_parse_params():
    assert parse_params(["n_neighbors=15", "kernel=exp", "normalize=false", "device=none",
                         "temperature=0.1", "direction=images->texts"]) == {
        "n_neighbors": 15, "kernel": "exp", "normalize": False, "device": None,
        "temperature": 0.1, "direction": "images->texts",
    }  # fmt: skip


def test_parse_params_reads_numbers_as_python_does():
    # YAML 1.1 alone reads these as strings (no dot in the mantissa)
    got = parse_params(["reg=1e-300", "n=1e5", "eps=-2E-3", "k=7", "name=1e-3x"])
    assert got == {"reg": 1e-300, "n": 1e5, "eps": -2e-3, "k": 7, "name": "1e-3x"}
    assert isinstance(got["k"], int) and isinstance(got["reg"], float)


def test_repeats_are_bounded(npz, capsys):
    assert (
        main(["bench", str(npz), "--repeats", "100000", "--out", str(npz.parent / "b"), "-q"]) == 2
    )
    err = capsys.readouterr().err
    assert "--repeats" in err and "1000" in err and "Traceback" not in err


def test_class_prompts_are_transformed_as_texts(tmp_path):
    X, Y = gapped_pairs(n=40, d=12, seed=24)
    prompts = Y[:3] + 0.01
    prompts /= np.linalg.norm(prompts, axis=1, keepdims=True)
    src = tmp_path / "cls.npz"
    np.savez(src, image_emb=X, text_emb=Y, class_text_emb=prompts, class_names=["a", "b", "c"])
    out = tmp_path / "o"
    argv = ["reduce", "spectral", str(src), "--out", str(out), "--n-components", "4"]
    assert main([*argv, "--no-progress"]) == 0
    got = read_embeddings(out / "cls.npz", normalize=False)
    r = load_reducer(out / "reducer.safetensors")
    np.testing.assert_allclose(got.class_text_emb, r.transform_texts(prompts), atol=1e-6)
    assert got.class_names == ["a", "b", "c"]


@pytest.mark.parametrize("layout", ["npz", "npy", "npy --stream", "clip-retrieval"])
@pytest.mark.parametrize("where", ["inside", "outside"])
def test_save_model_lands_on_every_route(tmp_path, layout, where):
    from modgap import EmbeddingSet
    from modgap.io import write_embeddings

    X, Y = gapped_pairs(n=40, d=12, seed=22)
    emb = EmbeddingSet(X, Y)
    fmt, *extra = layout.split()
    if fmt == "npy":
        src = [str(write_embeddings(emb, tmp_path / "img.npy", "npy", texts=tmp_path / "txt.npy"))]
        src.append(str(tmp_path / "txt.npy"))
    elif fmt == "npz":
        src = [str(write_embeddings(emb, tmp_path / "e.npz", "npz"))]
    else:
        src = [str(write_embeddings(emb, tmp_path / "cr", "clip-retrieval"))]
    out = tmp_path / "out"
    model = out / "models" / "r.safetensors" if where == "inside" else tmp_path / "r.safetensors"
    argv = ["reduce", "center", *src, "--out", str(out), "--save-model", str(model), "-q"]
    assert main([*argv, *extra]) == 0
    fitted = load_reducer(model)
    np.testing.assert_allclose(fitted.image_mean_, X.mean(axis=0), atol=1e-5)
