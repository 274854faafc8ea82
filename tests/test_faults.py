"""Fault injection: bad inputs and faults over every reader and every command.

Each case builds its inputs in a fresh folder, runs the command line in-process and asserts what
a user may rely on: exit code 2, one line on stderr starting with ``error:`` that names the file
(or the option) to blame, no traceback, every input byte-identical afterwards, and no output
written (or the previous output untouched). Property-based cases corrupt valid files of every
format (truncations, byte flips, header edits): reading either succeeds with a valid set or
fails with one :class:`~modgap.errors.InputError` naming the file, never another exception.

Classes of cases (counted in ``test_the_suite_is_large_enough``): embedding readers (npz, npy
pairs, clip-retrieval folders, parquet, safetensors, torch), pairing files, output paths that
would destroy an input, saved reducers (damaged, edited headers), options, training configs and
damaged checkpoints, and commands that find nothing to do.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import struct
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import gapped_pairs
from modgap.cli import main
from modgap.embeddings import EmbeddingSet
from modgap.errors import InputError
from modgap.io import read_embeddings, write_embeddings

pytestmark = pytest.mark.usefixtures("single_thread")


def _xy(n: int = 12, d: int = 6, seed: int = 0):
    return gapped_pairs(n, d, seed=seed)


def _npz(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


def _good_npz(t: Path) -> Path:
    X, Y = _xy()
    return _npz(t / "good.npz", image_emb=X, text_emb=Y)


def _npy_header(shape, descr="<f4") -> bytes:
    from numpy.lib import format as npf

    b = io.BytesIO()
    npf.write_array_header_1_0(b, {"descr": descr, "fortran_order": False, "shape": shape})
    return b.getvalue()


def _edit_reducer(t: Path, name: str, edit: Callable[[dict, dict], None]) -> Path:
    """A reducer fitted on the good set and saved, with its JSON header (and arrays) edited."""
    from safetensors import safe_open
    from safetensors.numpy import load_file, save_file

    from modgap.reducers import get_reducer

    X, Y = _xy()
    p = t / f"{name}.safetensors"
    get_reducer(name).fit(X, Y).save(p)
    with safe_open(str(p), framework="numpy") as f:
        header = json.loads(f.metadata()["modgap"])
    arrays = load_file(str(p))
    edit(header, arrays)
    save_file(arrays, str(p), metadata={"modgap": json.dumps(header)})
    return p


def _clip_folder(t: Path, shards: int = 2) -> Path:
    X, Y = _xy(n=12)
    return write_embeddings(EmbeddingSet(X, Y, image_ids=[f"i{k}" for k in range(12)]),
                            t / "cr", format="clip-retrieval", shard_size=6)  # fmt: skip


def _toy_train(t: Path, **over) -> tuple[Path, Path]:
    """A tiny precomp data set and a config for it; returns (config path, output folder)."""
    from modgap.train import write_toy_precomp

    root = write_toy_precomp(t / "p", {"train": 16, "dev": 4, "test": 4}, regions=2, dim=8)
    cfg = {
        "seed": 0,
        "threads": 1,
        "out": str(t / "run"),
        "data": {"format": "precomp", "path": str(root)},
        "model": {"joint_dim": 8, "word_dim": 4},
        "optim": {"epochs": 1, "batch_size": 8},
        "eval": {"measures": []},
        **over,
    }
    p = t / "cfg.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p, t / "run"


def _trained(t: Path) -> tuple[Path, Path]:
    cfg, run = _toy_train(t)
    assert main(["train", str(cfg), "-q"]) == 0
    return cfg, run


def _edit_last(run: Path, edit: Callable[[dict], None]) -> None:
    last = run / "checkpoints" / "last.json"
    meta = json.loads(last.read_text())
    edit(meta)
    last.write_text(json.dumps(meta))


# -- the cases: name -> builder(tmp) -> (argv, blame) -----------------------------------------
# ``blame`` is what the one error line must name; "{t}" in argv/blame is the case folder.
CASES: dict[str, Callable[[Path], tuple[list[str], str]]] = {}


def case(name: str):
    def register(fn):
        CASES[name] = fn
        return fn

    return register


def measure(path) -> list[str]:
    return ["measure", str(path), "--only", "centroid", "--no-progress"]


# npz --------------------------------------------------------------------------------------
@case("npz-empty-file")
def _(t):
    (t / "e.npz").write_bytes(b"")
    return measure(t / "e.npz"), str(t / "e.npz")


@case("npz-truncated")
def _(t):
    p = _good_npz(t)
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    return measure(p), str(p)


@case("npz-garbage")
def _(t):
    (t / "g.npz").write_bytes(os.urandom(3000))
    return measure(t / "g.npz"), str(t / "g.npz")


@case("npz-member-declares-3.6TiB")
def _(t):
    huge = _npy_header((1_000_000_000, 1000)) + b"\x00" * 64
    with zipfile.ZipFile(t / "h.npz", "w") as z:
        z.writestr("image_emb.npy", huge)
        z.writestr("text_emb.npy", huge)
    assert (t / "h.npz").stat().st_size < 4096
    return measure(t / "h.npz"), str(t / "h.npz")


@case("npz-zip-bomb-ratio")
def _(t):
    body = _npy_header((4, 4)) + b"\x00" * 64
    with zipfile.ZipFile(t / "b.npz", "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("image_emb.npy", body)
        z.writestr("text_emb.npy", body)
    data = bytearray((t / "b.npz").read_bytes())
    # claim a huge uncompressed size in the central directory entry of image_emb.npy
    cd = data.rfind(b"PK\x01\x02", 0, data.rfind(b"PK\x01\x02"))
    struct.pack_into("<I", data, cd + 24, 2**31)
    (t / "b.npz").write_bytes(bytes(data))
    return measure(t / "b.npz"), str(t / "b.npz")


@case("npz-object-array")
def _(t):
    X, Y = _xy()
    p = t / "o.npz"
    np.savez(p, image_emb=np.array(list(X), dtype=object), text_emb=Y)
    return measure(p), str(p)


@case("npz-missing-text")
def _(t):
    X, _ = _xy()
    return measure(_npz(t / "m.npz", image_emb=X)), str(t / "m.npz")


@case("npz-1d-images")
def _(t):
    X, Y = _xy()
    return measure(_npz(t / "d.npz", image_emb=X[0], text_emb=Y)), str(t / "d.npz")


@case("npz-nan-row")
def _(t):
    X, Y = _xy()
    X[3, 1] = np.nan
    return measure(_npz(t / "n.npz", image_emb=X, text_emb=Y)), str(t / "n.npz")


@case("npz-inf-row")
def _(t):
    X, Y = _xy()
    Y[5, 0] = np.inf
    return measure(_npz(t / "i.npz", image_emb=X, text_emb=Y)), str(t / "i.npz")


@case("npz-zero-row")
def _(t):
    X, Y = _xy()
    X[2] = 0
    return measure(_npz(t / "z.npz", image_emb=X, text_emb=Y)), str(t / "z.npz")


@case("npz-width-mismatch")
def _(t):
    X, Y = _xy()
    return measure(_npz(t / "w.npz", image_emb=X, text_emb=Y[:, :4])), str(t / "w.npz")


@case("npz-pairing-out-of-range")
def _(t):
    X, Y = _xy()
    p = _npz(t / "p.npz", image_emb=X, text_emb=Y, text_to_image=np.full(12, 99))
    return measure(p), str(p)


@case("npz-pairing-wrong-length")
def _(t):
    X, Y = _xy()
    p = _npz(t / "p.npz", image_emb=X, text_emb=Y, text_to_image=np.arange(5))
    return measure(p), str(p)


@case("npz-pairing-fractional")
def _(t):
    X, Y = _xy()
    p = _npz(t / "p.npz", image_emb=X, text_emb=Y, text_to_image=np.arange(12) + 0.5)
    return measure(p), str(p)


@case("npz-negative-labels")
def _(t):
    X, Y = _xy()
    p = _npz(t / "l.npz", image_emb=X, text_emb=Y, labels=-np.ones(12, int))
    return measure(p), str(p)


@case("npz-class-prompts-no-templates")
def _(t):
    X, Y = _xy()
    p = _npz(t / "c.npz", image_emb=X, text_emb=Y, class_text_emb=np.zeros((3, 0, 6)))
    return measure(p), str(p)


@case("npz-class-names-count")
def _(t):
    X, Y = _xy()
    p = _npz(t / "c.npz", image_emb=X, text_emb=Y, class_names=np.array(["a", "b"]),
             class_text_emb=Y[:3])  # fmt: skip
    return measure(p), str(p)


@case("npz-paired-is-an-array")
def _(t):
    X, Y = _xy()
    p = _npz(t / "p.npz", image_emb=X, text_emb=Y, paired=np.array([True, False]))
    return measure(p), str(p)


@case("npz-string-embeddings")
def _(t):
    _, Y = _xy()
    p = _npz(t / "s.npz", image_emb=np.array([["a"] * 6] * 12), text_emb=Y)
    return measure(p), str(p)


@case("npz-is-a-plain-npy")
def _(t):
    X, _ = _xy()
    np.save(t / "x.npy", X)
    os.replace(t / "x.npy", t / "x.npz")
    return measure(t / "x.npz"), str(t / "x.npz")


# npy pairs ----------------------------------------------------------------------------------
def _npy_pair(t: Path) -> tuple[Path, Path]:
    X, Y = _xy()
    np.save(t / "img.npy", X)
    np.save(t / "txt.npy", Y)
    return t / "img.npy", t / "txt.npy"


@case("npy-negative-shape")
def _(t):
    img, txt = _npy_pair(t)
    txt.write_bytes(txt.read_bytes().replace(b"(12, 6)", b"(-12, 6)"))
    return ["measure", str(img), str(txt)], str(txt)


@case("npy-header-longer-than-file")
def _(t):
    img, txt = _npy_pair(t)
    txt.write_bytes(_npy_header((10**6, 6)) + b"\x00" * 100)
    return ["measure", str(img), str(txt)], str(txt)


@case("npy-fifo")
def _(t):
    img, _ = _npy_pair(t)
    os.mkfifo(t / "fifo.npy")
    return ["measure", str(img), str(t / "fifo.npy")], str(t / "fifo.npy")


@case("npy-folder-as-texts")
def _(t):
    img, _ = _npy_pair(t)
    (t / "dir.npy").mkdir()
    return ["measure", str(img), str(t / "dir.npy")], str(t / "dir.npy")


@case("npy-pickle-file")
def _(t):
    img, _ = _npy_pair(t)
    with open(t / "p.npy", "wb") as f:
        pickle.dump({"x": 1}, f)
    return ["measure", str(img), str(t / "p.npy")], str(t / "p.npy")


@case("npy-3d")
def _(t):
    img, _ = _npy_pair(t)
    np.save(t / "t3.npy", np.ones((12, 2, 3), np.float32))
    return ["measure", str(img), str(t / "t3.npy")], str(t / "t3.npy")


@case("npy-text-file")
def _(t):
    img, _ = _npy_pair(t)
    (t / "t.npy").write_text("hello\n")
    return ["measure", str(img), str(t / "t.npy")], str(t / "t.npy")


@case("npy-alone")
def _(t):
    img, _ = _npy_pair(t)
    return ["measure", str(img)], str(img)


@case("unknown-suffix")
def _(t):
    (t / "x.csv").write_text("1,2\n")
    return measure(t / "x.csv"), str(t / "x.csv")


@case("no-such-file")
def _(t):
    return measure(t / "missing.npz"), str(t / "missing.npz")


# clip-retrieval folders -----------------------------------------------------------------------
@case("cr-empty-folder")
def _(t):
    (t / "cr").mkdir()
    return measure(t / "cr"), str(t / "cr")


@case("cr-no-text-shards")
def _(t):
    cr = _clip_folder(t)
    for f in (cr / "text_emb").iterdir():
        f.unlink()
    return measure(cr), str(cr)


@case("cr-shard-count-mismatch")
def _(t):
    cr = _clip_folder(t)
    (cr / "text_emb" / "text_emb_1.npy").unlink()
    return measure(cr), str(cr)


@case("cr-shard-rows-mismatch")
def _(t):
    cr = _clip_folder(t)
    np.save(cr / "text_emb" / "text_emb_1.npy", _xy(n=5)[1])
    return measure(cr), str(cr)


@case("cr-extra-paired-array")
def _(t):
    cr = _clip_folder(t)
    np.savez(cr / "extra.npz", paired=np.array([1, 0, 1]))
    return measure(cr), str(cr / "extra.npz")


@case("cr-extra-object-array")
def _(t):
    cr = _clip_folder(t)
    np.savez(cr / "extra.npz", paired=np.array([{"a": 1}], dtype=object))
    return measure(cr), str(cr / "extra.npz")


@case("cr-metadata-rows")
def _(t):
    import pyarrow as pa
    import pyarrow.parquet as pq

    cr = _clip_folder(t)
    pq.write_table(pa.table({"image_path": ["a", "b"]}), cr / "metadata" / "metadata_0.parquet")
    return measure(cr), str(cr / "metadata" / "metadata_0.parquet")


@case("cr-metadata-garbage")
def _(t):
    cr = _clip_folder(t)
    (cr / "metadata" / "metadata_1.parquet").write_bytes(b"PAR1" + os.urandom(200))
    return measure(cr), str(cr / "metadata" / "metadata_1.parquet")


@case("cr-shard-truncated")
def _(t):
    cr = _clip_folder(t)
    f = cr / "img_emb" / "img_emb_1.npy"
    f.write_bytes(f.read_bytes()[:-40])
    return measure(cr), str(f)


# parquet ------------------------------------------------------------------------------------
def _parquet(t: Path, **cols) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = t / "e.parquet"
    pq.write_table(pa.table(cols), p)
    return p


@case("parquet-garbage")
def _(t):
    (t / "g.parquet").write_bytes(os.urandom(500))
    return measure(t / "g.parquet"), str(t / "g.parquet")


@case("parquet-missing-column")
def _(t):
    X, _ = _xy()
    return measure(_parquet(t, image_emb=list(X))), str(t / "e.parquet")


@case("parquet-ragged-rows")
def _(t):
    X, Y = _xy()
    rows = [list(r) for r in X]
    rows[4] = rows[4][:3]
    return measure(_parquet(t, image_emb=rows, text_emb=list(Y))), str(t / "e.parquet")


@case("parquet-null-row")
def _(t):
    X, Y = _xy()
    rows = [list(r) for r in X]
    rows[2] = None
    return measure(_parquet(t, image_emb=rows, text_emb=list(Y))), str(t / "e.parquet")


@case("parquet-strings")
def _(t):
    _, Y = _xy()
    return measure(_parquet(t, image_emb=["x"] * 12, text_emb=list(Y))), str(t / "e.parquet")


@case("parquet-no-rows")
def _(t):
    import pyarrow as pa

    empty = pa.array([], pa.list_(pa.float32()))
    return measure(_parquet(t, image_emb=empty, text_emb=empty)), str(t / "e.parquet")


@case("parquet-no-rows-streamed")
def _(t):
    import pyarrow as pa

    empty = pa.array([], pa.list_(pa.float32()))
    p = _parquet(t, image_emb=empty, text_emb=empty)
    return [*measure(p), "--stream"], f"{p}: no rows"


# safetensors / torch ----------------------------------------------------------------------
@case("safetensors-truncated")
def _(t):
    X, Y = _xy()
    p = write_embeddings(EmbeddingSet(X, Y), t / "e.safetensors")
    p.write_bytes(p.read_bytes()[:-30])
    return measure(p), str(p)


@case("safetensors-absurd-header-length")
def _(t):
    (t / "h.safetensors").write_bytes(struct.pack("<Q", 2**60) + b"{}")
    return measure(t / "h.safetensors"), str(t / "h.safetensors")


@case("safetensors-missing-key")
def _(t):
    from safetensors.numpy import save_file

    save_file({"image_emb": _xy()[0]}, str(t / "m.safetensors"))
    return measure(t / "m.safetensors"), str(t / "m.safetensors")


@case("safetensors-bad-string-metadata")
def _(t):
    from safetensors.numpy import save_file

    X, Y = _xy()
    save_file({"image_emb": X, "text_emb": Y}, str(t / "s.safetensors"),
              metadata={"texts": "not json"})  # fmt: skip
    return measure(t / "s.safetensors"), str(t / "s.safetensors")


@case("torch-arbitrary-object")
def _(t):
    X, _ = _xy()
    torch.save({"image_emb": torch.from_numpy(X), "text_emb": object()}, t / "o.pt")
    return measure(t / "o.pt"), str(t / "o.pt")


@case("torch-not-a-dict")
def _(t):
    torch.save(torch.zeros(3, 3), t / "n.pt")
    return measure(t / "n.pt"), str(t / "n.pt")


@case("torch-truncated")
def _(t):
    X, Y = _xy()
    p = write_embeddings(EmbeddingSet(X, Y), t / "e.pt")
    p.write_bytes(p.read_bytes()[:200])
    return measure(p), str(p)


# pairing files ---------------------------------------------------------------------------------
def _pairs_case(t: Path, text: str) -> tuple[list[str], str]:
    img, txt = _npy_pair(t)
    (t / "pairs.txt").write_text(text)
    return ["measure", str(img), str(txt), "--pairs", str(t / "pairs.txt")], str(t / "pairs.txt")


@case("pairs-not-integer")
def _(t):
    return _pairs_case(t, "0\n1\nx\n" + "".join(f"{i}\n" for i in range(9)))


@case("pairs-wrong-count")
def _(t):
    return _pairs_case(t, "0\n1\n2\n")


@case("pairs-out-of-range")
def _(t):
    return _pairs_case(t, "".join(f"{i + 5}\n" for i in range(12)))


@case("pairs-csv-without-column")
def _(t):
    return _pairs_case(t, "a,b\n" + "".join(f"{i},{i}\n" for i in range(12)))


@case("pairs-empty")
def _(t):
    return _pairs_case(t, "")


@case("pairs-huge-number")
def _(t):
    return _pairs_case(t, "1e300\n" * 12)


# outputs that would destroy an input ---------------------------------------------------------
@case("measure-json-over-input")
def _(t):
    p = _good_npz(t)
    return ["measure", str(p), "--json", str(p)], "--json"


@case("reduce-model-over-input")
def _(t):
    p = _good_npz(t)
    return ["reduce", "center", str(p), "--out", str(t / "red"), "--save-model", str(p)], str(p)


@case("reduce-out-holds-input")
def _(t):
    p = _good_npz(t)
    return ["reduce", "center", str(p), "--out", str(t)], str(p)


@case("reduce-pairs-inside-out")
def _(t):
    img, txt = _npy_pair(t)
    (t / "o").mkdir()
    (t / "o" / "pairs.csv").write_text("".join(f"{i}\n" for i in range(12)))
    argv = ["reduce", "center", str(img), str(txt), "--pairs", str(t / "o" / "pairs.csv")]
    return [*argv, "--out", str(t / "o")], str(t / "o" / "pairs.csv")


@case("reduce-out-foreign-folder")
def _(t):
    p = _good_npz(t)
    (t / "mine").mkdir()
    (t / "mine" / "notes.txt").write_text("keep me")
    return ["reduce", "center", str(p), "--out", str(t / "mine")], str(t / "mine")


@case("bench-out-over-input-folder")
def _(t):
    cr = _clip_folder(t)
    return ["bench", str(cr), "--out", str(cr / "bench")], str(cr)


@case("json-and-model-same-path")
def _(t):
    p = _good_npz(t)
    argv = ["reduce", "center", str(p), "--out", str(t / "r"), "--save-model", str(t / "r")]
    return argv, str(t / "r")


# saved reducers ---------------------------------------------------------------------------------
def _apply(t: Path, model: Path) -> tuple[list[str], str]:
    p = _good_npz(t)
    return ["reduce", "--apply", str(model), str(p), "--out", str(t / "ap")], str(model)


@case("reducer-truncated")
def _(t):
    m = _edit_reducer(t, "center", lambda h, a: None)
    m.write_bytes(m.read_bytes()[:-20])
    return _apply(t, m)


@case("reducer-not-a-reducer")
def _(t):
    X, Y = _xy()
    m = write_embeddings(EmbeddingSet(X, Y), t / "e.safetensors")
    return _apply(t, m)


@case("reducer-direction-sideways")
def _(t):
    return _apply(t, _edit_reducer(t, "gaussian", lambda h, a: h["params"].update(
        direction="sideways")))  # fmt: skip


@case("reducer-normalize-no")
def _(t):
    return _apply(t, _edit_reducer(t, "center", lambda h, a: h["params"].update(normalize="no")))


@case("reducer-unknown-name")
def _(t):
    return _apply(t, _edit_reducer(t, "center", lambda h, a: h.update(reducer="magic")))


@case("reducer-unknown-param")
def _(t):
    return _apply(t, _edit_reducer(t, "center", lambda h, a: h["params"].update(speed=3)))


@case("reducer-array-shape")
def _(t):
    def edit(h, a):
        a["rotation_"] = a["rotation_"][:3, :3].copy()
        h["arrays"]["rotation_"] = [[3, 3], "float64"]
        from modgap.reducers._persist import _checksum

        h["sha256"] = _checksum(a)

    return _apply(t, _edit_reducer(t, "procrustes", edit))


@case("reducer-fitted-width")
def _(t):
    return _apply(t, _edit_reducer(t, "shift", lambda h, a: h["fitted"].update(
        n_features_in_="six")))  # fmt: skip


@case("reducer-checksum")
def _(t):
    def edit(h, a):
        a["gap_"] = a["gap_"] * 2

    return _apply(t, _edit_reducer(t, "shift", edit))


@case("reducer-dimension-mismatch")
def _(t):
    from modgap.reducers import get_reducer

    X, Y = _xy(d=9)
    get_reducer("center").fit(X, Y).save(t / "m9.safetensors")
    p = _good_npz(t)
    return ["reduce", "--apply", str(t / "m9.safetensors"), str(p), "--out", str(t / "ap")], str(p)


# options ---------------------------------------------------------------------------------------
@case("option-device-tpu9")
def _(t):
    return [*measure(_good_npz(t)), "--device", "tpu9"], "tpu9"


@case("option-device-cuda-without-cuda")
def _(t):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    return [*measure(_good_npz(t)), "--device", "cuda"], "cuda"


@case("option-lam-nan")
def _(t):
    return ["reduce", "shift", str(_good_npz(t)), "--out", str(t / "r"), "--lam", "nan"], "--lam"


@case("option-param-inf")
def _(t):
    argv = ["reduce", "shift", str(_good_npz(t)), "--out", str(t / "r"), "-p", "lam=inf"]
    return argv, "lam=inf"


@case("option-memory-budget-zero")
def _(t):
    return [*measure(_good_npz(t)), "--memory-budget", "0"], "memory budget"


@case("option-memory-budget-overflows")
def _(t):
    return [*measure(_good_npz(t)), "--memory-budget", "1e400"], "--memory-budget"


@case("option-memory-budget-overflows-with-unit")
def _(t):
    return [*measure(_good_npz(t)), "--memory-budget", "1e400GB"], "--memory-budget"


@case("option-seed-negative")
def _(t):
    img, txt = _npy_pair(t)
    return ["measure", str(img), str(txt), "--stream", "--seed", "-1"], "--seed"


@case("option-seed-above-32-bits")
def _(t):
    return [*measure(_good_npz(t)), "--seed", str(2**32)], "--seed"


def _records_to(t: Path, template: str) -> tuple[list[str], str]:
    argv = ["eval", str(_good_npz(t)), "--format", "clip_benchmark", "--json", template]
    return argv, f"--json {template}"


@case("option-json-template-unknown-field")
def _(t):
    return _records_to(t, "{bogus}")


@case("option-json-template-positional")
def _(t):
    return _records_to(t, "{0}")


@case("option-json-template-lone-brace")
def _(t):
    return _records_to(t, "{task.json")


@case("option-json-template-huge-width")
def _(t):
    return _records_to(t, "{task:>99999999999}")


@case("option-json-template-conversion")
def _(t):
    return _records_to(t, "{task!r}")


@case("option-threads-beyond-a-c-int")
def _(t):
    return [*measure(_good_npz(t)), "--threads", str(2**70)], "--threads"


@case("option-k-zero")
def _(t):
    return ["eval", str(_good_npz(t)), "--k", "0"], "--k"


@case("option-unknown-task")
def _(t):
    return ["eval", str(_good_npz(t)), "--tasks", "bogus"], "bogus"


@case("option-unknown-measure")
def _(t):
    return ["measure", str(_good_npz(t)), "--only", "nope"], "nope"


@case("option-test-fraction")
def _(t):
    return ["bench", str(_good_npz(t)), "--out", str(t / "b"), "--test-fraction", "1.5"], "1.5"


@case("option-reducer-value")
def _(t):
    argv = ["reduce", "spectral", str(_good_npz(t)), "--out", str(t / "r"), "-p", "kernel=cos"]
    return argv, "kernel"


@case("option-threads-above-the-cpus")
def _(t):
    from modgap.compute import available_cpus

    n = available_cpus()
    return [*measure(_good_npz(t)), "--threads", "100000"], f"give --threads {n} or fewer"


@case("option-threads-zero")
def _(t):
    return [*measure(_good_npz(t)), "--threads", "0"], "'--threads': 0 is not in the range"


def test_threads_are_bounded_by_the_cpus_of_the_process(monkeypatch):
    from modgap import compute as compute_module
    from modgap.compute import Compute, available_cpus
    from modgap.errors import ModgapError

    n = available_cpus()
    assert 1 <= n <= (os.cpu_count() or 1)
    assert Compute(threads=n).threads == n
    with pytest.raises(ModgapError, match=f"more than the {n} CPU"):
        Compute(threads=n + 1)
    three = {0, 1, 2}  # a process narrowed to 3 CPUs (taskset, a container)
    monkeypatch.setattr(compute_module.os, "sched_getaffinity", lambda pid: three, raising=False)
    assert available_cpus() == 3
    with pytest.raises(ModgapError, match="give --threads 3 or fewer"):
        Compute(threads=4)
    for bad in (0, -1):
        with pytest.raises(ModgapError, match="positive integer"):
            Compute(threads=bad)


def _dask(t: Path, scheduler: str) -> list[str]:
    return [*measure(_clip_folder(t)), "--engine", "dask", "--scheduler", scheduler]


@case("option-scheduler-not-an-address")
def _(t):
    return _dask(t, "notanaddress"), "--scheduler notanaddress: not a Dask scheduler address"


@case("option-scheduler-udp")
def _(t):
    return _dask(t, "udp://127.0.0.1:8786"), "unknown scheme 'udp://'"


@case("option-scheduler-no-port")
def _(t):  # the form is refused before anything is dialled
    return _dask(t, "tcp://10.255.255.1"), "tcp://10.255.255.1: not a Dask scheduler address"


@case("option-scheduler-nobody-listening")
def _(t):
    import socket

    pytest.importorskip("distributed")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        address = f"tcp://127.0.0.1:{s.getsockname()[1]}"
    return _dask(t, address), f"cannot reach the Dask scheduler at {address} within 10 s"


# commands with nothing to do ---------------------------------------------------------------
@case("bench-every-reducer-fails")
def _(t):
    X, Y = _xy()
    p = _npz(t / "u.npz", image_emb=X, text_emb=Y[:8])  # unpaired: procrustes cannot fit
    return ["bench", str(p), "--out", str(t / "b"), "--reducers", "procrustes"], "procrustes"


@case("embed-missing-folder")
def _(t):
    (t / "c.csv").write_text("image,caption\na.png,x\n")
    return ["embed", str(t / "nope"), str(t / "c.csv"), "--out", str(t / "e")], str(t / "nope")


# results files given to compare, edited by hand --------------------------------------------
def _bench_results(t: Path, name: str, edit: Callable[[dict], None] | None = None) -> Path:
    """A benchmark results.json as modgap writes it (one data set, row none), then edited."""
    metric = {"mean": 0.5, "ci95": [0.25, "inf"], "values": [0.25, 0.75]}  # "inf": strict JSON
    doc = {
        "datasets": {
            "d": {
                "setting": {"seeds": [0, 1], "n_fit_images": 30.0, "n_eval_images": 30.0},
                "results": {"none": {"metrics": {"image_retrieval_recall@1": metric}}},
            }
        }
    }
    if edit is not None:
        edit(doc["datasets"]["d"]["results"]["none"]["metrics"]["image_retrieval_recall@1"])
    (t / name).mkdir()
    (t / name / "results.json").write_text(json.dumps(doc))
    return t / name / "results.json"


def _compare_edited(t: Path, edit: Callable[[dict], None]) -> tuple[list[str], str]:
    good, bad = _bench_results(t, "a"), _bench_results(t, "b", edit)
    return ["compare", str(good), str(bad), "-q"], f"{bad}: 'datasets.d.results.none.metrics."


@case("compare-mean-a-word")
def _(t):
    return _compare_edited(t, lambda m: m.update(mean="abc"))


@case("compare-mean-null")
def _(t):
    return _compare_edited(t, lambda m: m.update(mean=None))


@case("compare-mean-a-list")
def _(t):
    return _compare_edited(t, lambda m: m.update(mean=[0.5, 0.6]))


@case("compare-interval-a-word")
def _(t):
    return _compare_edited(t, lambda m: m.update(ci95=["low", 0.7]))


@case("compare-values-null")
def _(t):
    return _compare_edited(t, lambda m: m.update(values=None))


@case("compare-measure-json-a-word")
def _(t):
    good = _bench_results(t, "a")
    (t / "m.json").write_text(json.dumps({"measures": {"centroid_gap": "abc", "rmg": 0.3}}))
    return [
        "compare",
        str(good),
        str(t / "m.json"),
        "-q",
    ], f"{t / 'm.json'}: 'measures.centroid_gap'"


# caption files -------------------------------------------------------------------------------
def _embed_captions(t: Path, name: str, data: bytes) -> tuple[list[str], Path]:
    (t / "images").mkdir()
    (t / name).write_bytes(data)
    return ["embed", str(t / "images"), str(t / name), "--out", str(t / "e")], t / name


@case("embed-captions-latin1")
def _(t):
    argv, p = _embed_captions(t, "c.csv", "image,caption\na.png,un café\n".encode("latin-1"))
    return argv, f"{p}: line 2 (byte 26): not UTF-8 text (byte 0xe9); save the file as UTF-8"


@case("embed-captions-latin1-jsonl")
def _(t):
    data = '{"image": "a.png", "caption": "café"}\n'.encode("latin-1")
    argv, p = _embed_captions(t, "c.jsonl", data)
    return argv, f"{p}: line 1 (byte 34): not UTF-8"


@case("embed-captions-utf16")
def _(t):
    argv, p = _embed_captions(t, "c.csv", "image,caption\na.png,a dot\n".encode("utf-16"))
    return argv, f"{p}: UTF-16 text; save the file as UTF-8"


# training configs and checkpoints ----------------------------------------------------------
@case("train-joint-dim-1e9")
def _(t):
    cfg, _ = _toy_train(t, model={"joint_dim": 1_000_000_000, "word_dim": 4})
    return ["train", str(cfg)], "joint_dim"


@case("train-seed-negative")
def _(t):
    cfg, _ = _toy_train(t, seed=-1)
    return ["train", str(cfg)], f"{cfg}: seed: must be 0 to"


@case("train-threads-beyond-a-c-int")
def _(t):
    cfg, _ = _toy_train(t, threads=2**70)
    return ["train", str(cfg)], f"{cfg}: threads: must be 0 to"


@case("train-unknown-key")
def _(t):
    cfg, _ = _toy_train(t, optim={"epochs": 1, "batch_size": 8, "lr_rate": 1})
    return ["train", str(cfg)], "lr_rate"


@case("train-missing-data")
def _(t):
    cfg, _ = _toy_train(t)
    data = yaml.safe_load(cfg.read_text())
    data["data"]["path"] = str(t / "nowhere")
    cfg.write_text(yaml.safe_dump(data))
    return ["train", str(cfg)], str(t / "nowhere")


@case("train-out-over-config")
def _(t):
    cfg, _ = _toy_train(t)
    return ["train", str(cfg), "--out", str(t)], str(cfg)


@case("reduce-out-holds-a-user-file")
def _(t):
    npz = _good_npz(t)
    assert main(["reduce", "center", str(npz), "--out", str(t / "o"), "-q"]) == 0
    (t / "o" / "notes.txt").write_text("mine")  # replacing the folder would delete it
    return ["reduce", "shift", str(npz), "--out", str(t / "o")], str(t / "o" / "notes.txt")


@case("reduce-out-from-before-the-manifest")
def _(t):
    npz = _good_npz(t)
    assert main(["reduce", "center", str(npz), "--out", str(t / "o"), "-q"]) == 0
    (t / "o" / ".modgap-files.json").unlink()  # no record of what modgap wrote: not replaced
    return ["reduce", "shift", str(npz), "--out", str(t / "o")], str(t / "o")


@case("reduce-stream-out-holds-a-user-folder")
def _(t):
    cr = _clip_folder(t)
    assert main(["reduce", "center", str(cr), "--out", str(t / "o"), "-q"]) == 0
    (t / "o" / "mine").mkdir()
    (t / "o" / "mine" / "a.txt").write_text("mine")
    return ["reduce", "shift", str(cr), "--out", str(t / "o")], str(t / "o" / "mine")


@case("bench-out-holds-a-user-file")
def _(t):
    from modgap.files import output_folder

    npz = _good_npz(t)
    with output_folder(t / "b", marker="results.json") as tmp:  # as an earlier bench wrote it
        (tmp / "results.json").write_text("{}")
        (tmp / "report.html").write_text("<html></html>")
    (t / "b" / "paper.tex").write_text("mine")
    argv = ["bench", str(npz), "--reducers", "center", "--repeats", "2", "--out", str(t / "b")]
    return argv, str(t / "b" / "paper.tex")


@case("ckpt-state-truncated")
def _(t):
    cfg, run = _trained(t)
    meta = json.loads((run / "checkpoints" / "last.json").read_text())
    state = run / "checkpoints" / meta["tensors"]
    state.write_bytes(state.read_bytes()[:100])
    return ["train", str(cfg), "--resume"], str(state)


@case("ckpt-state-garbage")
def _(t):
    cfg, run = _trained(t)
    meta = json.loads((run / "checkpoints" / "last.json").read_text())
    (run / "checkpoints" / meta["tensors"]).write_bytes(os.urandom(4000))
    return ["train", str(cfg), "--resume"], meta["tensors"]


@case("ckpt-last-json-garbage")
def _(t):
    cfg, run = _trained(t)
    (run / "checkpoints" / "last.json").write_text("{not json")
    return ["train", str(cfg), "--resume"], "last.json"


@case("ckpt-last-json-missing-field")
def _(t):
    cfg, run = _trained(t)
    _edit_last(run, lambda m: m.pop("global_step"))
    return ["train", str(cfg), "--resume"], "global_step"


@case("ckpt-last-json-wrong-type")
def _(t):
    cfg, run = _trained(t)
    _edit_last(run, lambda m: m.update(epoch="one"))
    return ["train", str(cfg), "--resume"], "epoch"


@case("ckpt-tensors-path-escapes")
def _(t):
    cfg, run = _trained(t)
    _edit_last(run, lambda m: m.update(tensors="../../x.safetensors"))
    return ["train", str(cfg), "--resume"], "tensors"


@case("ckpt-impossible-counters")
def _(t):
    cfg, run = _trained(t)
    _edit_last(run, lambda m: m.update(step_in_epoch=m["steps_per_epoch"] + 445))
    return ["train", str(cfg), "--resume"], "step counters"


@case("ckpt-wrong-tensor-shape")
def _(t):
    from safetensors.torch import load_file, save_file

    cfg, run = _trained(t)
    meta = json.loads((run / "checkpoints" / "last.json").read_text())
    path = run / "checkpoints" / meta["tensors"]
    tensors = load_file(str(path))
    key = next(k for k in tensors if k.startswith("model.") and tensors[k].ndim == 2)
    tensors[key] = tensors[key][:, :1].contiguous()
    save_file(tensors, str(path))
    return ["train", str(cfg), "--resume"], key


@case("ckpt-optimizer-entry")
def _(t):
    cfg, run = _trained(t)
    _edit_last(run, lambda m: m.update(optim_extra={"999.step": 1}))
    return ["train", str(cfg), "--resume"], "999.step"


# -- running the cases ------------------------------------------------------------------------
def _snapshot(root: Path) -> dict[str, str]:
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.is_fifo():
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
        elif p.is_fifo():
            out[str(p.relative_to(root))] = "fifo"
    return out


@pytest.mark.parametrize("name", list(CASES))
def test_fault(name, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    t = tmp_path / "case"
    t.mkdir()
    argv, blame = CASES[name](t)
    fails_cleanly(argv, blame, t, capsys)


def fails_cleanly(argv: list[str], blame: str, t: Path, capsys) -> str:
    """Run ``argv``: exit 2, one ``error:`` line naming ``blame``, no traceback, the inputs
    under ``t`` untouched and nothing new there. Returns the line."""
    capsys.readouterr()
    before = _snapshot(t)
    code = main(argv)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if not ln.startswith("notice: ")]
    assert code == 2, f"exit {code}: {err}"
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    assert blame in lines[0], f"the message does not name {blame!r}: {lines[0]}"
    after = _snapshot(t)
    changed = [k for k in before if after.get(k) != before[k]]
    assert not changed, f"inputs changed: {changed}"
    created = sorted(set(after) - set(before))
    # a failed run leaves nothing new behind, except a training run's own files when the failure
    # is in its data or checkpoint (the run folder existed before)
    assert not [c for c in created if not c.startswith("run/")], created
    return lines[0]


def test_the_suite_is_large_enough():
    assert len(CASES) >= 60
    classes = {name.split("-")[0] for name in CASES}
    assert {"npz", "npy", "cr", "parquet", "safetensors", "torch", "pairs", "reducer", "option",
            "ckpt", "train", "reduce", "measure", "bench", "compare"} <= classes  # fmt: skip


# -- faults that need more than files to set up ------------------------------------------------
def test_embed_refuses_an_image_above_the_pixel_limit(tmp_path, capsys, monkeypatch):
    """PIL refuses to decode an image of more than twice ``MAX_IMAGE_PIXELS`` (a decompression
    bomb guard); a lower limit makes a small file such an image."""
    from PIL import Image

    (tmp_path / "images").mkdir()
    Image.new("L", (100, 100)).save(tmp_path / "images" / "big.png")
    Image.new("L", (10, 10)).save(tmp_path / "images" / "small.png")
    (tmp_path / "c.csv").write_text("image,caption\nsmall.png,a dot\nbig.png,a square\n")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    argv = ["embed", str(tmp_path / "images"), str(tmp_path / "c.csv"), "--out",
            str(tmp_path / "e"), "--no-progress"]  # fmt: skip
    line = fails_cleanly(argv, str(tmp_path / "images" / "big.png"), tmp_path, capsys)
    assert "too large" in line and "resize it below 2,000 pixels" in line


def test_embed_refuses_a_csv_field_above_the_limit(tmp_path, capsys, monkeypatch):
    """A field longer than any caption (an unclosed quote swallowing the file): one line."""
    import csv

    from modgap.datasets import caption_file

    monkeypatch.setattr(caption_file, "MAX_FIELD", 200)
    (tmp_path / "images").mkdir()
    (tmp_path / "c.csv").write_text('image,caption\na.png,"a dot\n' + "x" * 300 + "\n")
    argv = [
        "embed",
        str(tmp_path / "images"),
        str(tmp_path / "c.csv"),
        "--out",
        str(tmp_path / "e"),
    ]
    old = csv.field_size_limit(100)  # below the reader's limit, so that limit decides
    try:
        line = fails_cleanly(argv, f"{tmp_path / 'c.csv'}: line 2: not a readable CSV", tmp_path,
                             capsys)  # fmt: skip
    finally:
        csv.field_size_limit(old)
    assert "field larger than field limit (200)" in line and "unclosed quote" in line


# -- inputs at the edge that are not faults -----------------------------------------------------
def test_caption_files_with_a_byte_order_mark_and_a_megabyte_caption(tmp_path):
    """Excel's UTF-8 byte-order mark is not part of the first column's name; a 1 MB caption
    (above the csv module's default field limit) is read whole, and the limit is put back."""
    import csv

    from modgap.datasets.caption_file import read_caption_file

    (tmp_path / "a.png").write_bytes(b"")
    long = "word " * 200_000
    (tmp_path / "c.csv").write_text(f"\ufeffimage,caption\na.png,café\na.png,{long}\n", "utf-8")
    (tmp_path / "c.jsonl").write_text('\ufeff{"image": "a.png", "caption": "café"}\n', "utf-8")
    limit = csv.field_size_limit()
    table = read_caption_file(tmp_path / "c.csv", tmp_path)
    assert table.captions == ["café", long.strip()] and table.image_ids == ["a.png"]
    assert csv.field_size_limit() == limit
    assert read_caption_file(tmp_path / "c.jsonl", tmp_path).captions == ["café"]


def test_one_dimensional_embeddings_are_measured(tmp_path, capsys):
    """d = 1: every measure is defined (a 1 x 1 covariance is still a matrix), none fails."""
    rng = np.random.default_rng(0)
    # 60 rows: hubness needs 50 (below, it is skipped with its reason)
    X = np.where(rng.random((60, 1)) < 0.7, 1.0, -1.0).astype(np.float32)
    Y = np.where(rng.random((60, 1)) < 0.4, 1.0, -1.0).astype(np.float32)
    p = _npz(tmp_path / "d1.npz", image_emb=X, text_emb=Y)
    assert main(["measure", str(p), "--json", str(tmp_path / "m.json"), "-q"]) == 0, capsys
    got = json.loads((tmp_path / "m.json").read_text())["measures"]
    # the closed form in one dimension: (mu_x - mu_y)^2 + (s_x - s_y)^2
    want = (X.mean() - Y.mean()) ** 2 + (X.std(ddof=1) - Y.std(ddof=1)) ** 2
    # the covariance is the one moment kernel's float32 scatter (measures.moments, its bound)
    assert got["frechet_distance"] == pytest.approx(want, rel=1e-6)
    assert 0 <= got["linear_separability"] <= 1 and "skipped" not in got


def test_pca_figure_of_one_dimensional_embeddings():
    from modgap.report.figures import pca_pairs_figure

    X, Y = np.ones((5, 1), np.float32), -np.ones((5, 1), np.float32)
    png = pca_pairs_figure({"none": EmbeddingSet(X, Y)})
    assert png.startswith(b"\x89PNG")


# -- property-based corruption of every format -----------------------------------------------
FORMATS = {
    "npz": "e.npz",
    "safetensors": "e.safetensors",
    "torch": "e.pt",
    "parquet": "e.parquet",
    "npy": "img.npy",
}


def _valid_file(folder: Path, fmt: str) -> tuple[Path, Path | None]:
    X, Y = _xy(n=8, d=4, seed=1)
    emb = EmbeddingSet(X, Y, texts=[f"t{i}" for i in range(8)])
    if fmt == "npy":
        write_embeddings(emb, folder / "img.npy", texts=folder / "txt.npy")
        return folder / "img.npy", folder / "txt.npy"
    return write_embeddings(emb, folder / FORMATS[fmt]), None


@pytest.mark.parametrize("fmt", list(FORMATS))
@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_corrupted_files_read_or_fail_cleanly(fmt, data, tmp_path_factory):
    folder = tmp_path_factory.mktemp(fmt)
    path, texts = _valid_file(folder, fmt)
    raw = bytearray(path.read_bytes())
    kind = data.draw(st.sampled_from(["truncate", "flip", "zero-run", "header"]))
    if kind == "truncate":
        raw = raw[: data.draw(st.integers(0, len(raw) - 1))]
    elif kind == "flip":
        for _ in range(data.draw(st.integers(1, 8))):
            i = data.draw(st.integers(0, len(raw) - 1))
            raw[i] ^= 1 << data.draw(st.integers(0, 7))
    elif kind == "zero-run":
        i, k = data.draw(st.integers(0, len(raw) - 1)), data.draw(st.integers(1, 64))
        raw[i : i + k] = bytes(len(raw[i : i + k]))  # zeroed in place: the size stays
    else:  # the first bytes carry every format's header
        for _ in range(data.draw(st.integers(1, 4))):
            i = data.draw(st.integers(0, min(len(raw), 128) - 1))
            raw[i] = data.draw(st.integers(0, 255))
    path.write_bytes(bytes(raw))
    try:
        emb = read_embeddings(path, texts)
    except InputError as e:
        assert str(e).startswith(str(path)) and "\n" not in str(e)
    else:
        assert isinstance(emb, EmbeddingSet)
        assert np.isfinite(emb.image_emb).all() and np.isfinite(emb.text_emb).all()
