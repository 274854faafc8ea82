"""A run's outputs are one unit: SIGKILL ``modgap reduce`` and ``modgap train`` at many points
(while their temporary files are being written) and check that the output holds the complete old
set or the complete new set, never a mix, and that the next run removes the leftovers."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import gapped_pairs

pytestmark = pytest.mark.slow

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "modgap", *args]


def _snapshot(folder: Path) -> dict[str, str]:
    """File -> sha256 of every file below ``folder`` (reduce.json: only what it says, its
    provenance holds a time stamp)."""
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            rel = str(p.relative_to(folder))
            if p.name == "reduce.json":
                doc = json.loads(p.read_text())
                data = json.dumps([doc["reducer"], doc["params"], doc["model_sha256"]]).encode()
            else:
                data = p.read_bytes()
            out[rel] = hashlib.sha256(data).hexdigest()
    return out


def _leftovers(parent: Path, name: str) -> list[str]:
    if not parent.is_dir():
        return []
    return sorted(e.name for e in parent.iterdir() if e.name.startswith(f".{name}."))


def _kill_when_writing(cmd: list[str], parent: Path, name: str, delay: float) -> int:
    """Start ``cmd``; as soon as *its own* temporary of ``parent/name`` appears (the names carry
    the writer's pid; an earlier killed run's leftovers do not count), wait ``delay`` seconds
    and SIGKILL it. Returns the exit code (``-SIGKILL``: killed)."""
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    own = f".{name}.{proc.pid}."
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        if any(e.startswith(own) for e in _leftovers(parent, name)):
            time.sleep(delay)
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.001)
    proc.wait(timeout=120)
    return proc.returncode


@pytest.fixture(scope="module")
def big_npz(tmp_path_factory) -> Path:
    # large enough that writing the outputs takes tens of milliseconds
    X, Y = gapped_pairs(n=20000, d=192, seed=4)
    p = tmp_path_factory.mktemp("kill") / "in.npz"
    np.savez(p, image_emb=X, text_emb=Y)
    return p


def test_sigkill_during_reduce_leaves_the_old_or_the_new_set(big_npz, tmp_path):
    out = tmp_path / "out"
    ref = tmp_path / "ref"
    run = {"check": True, "env": ENV, "capture_output": True}
    subprocess.run(_cmd("reduce", "center", str(big_npz), "--out", str(out), "-q"), **run)
    subprocess.run(_cmd("reduce", "shift", str(big_npz), "--out", str(ref), "-q"), **run)
    old, new = _snapshot(out), _snapshot(ref)
    assert old != new
    seen, killed = set(), 0
    for delay in (0.0, 0.002, 0.005, 0.01, 0.02, 0.04, 0.08, 0.15):
        cmd = _cmd("reduce", "shift", str(big_npz), "--out", str(out), "-q")
        code = _kill_when_writing(cmd, tmp_path, "out", delay)
        assert code in (0, -signal.SIGKILL), f"exit {code}"
        killed += code == -signal.SIGKILL
        now = _snapshot(out)
        assert now in (old, new), f"mixed output after a kill at +{delay}s (exit {code})"
        seen.add("old" if now == old else "new")
        if now == new:  # back to the old set for the next kill
            subprocess.run(_cmd("reduce", "center", str(big_npz), "--out", str(out), "-q"), **run)
    assert killed >= 4 and "old" in seen  # kills did land while the new set was being written
    subprocess.run(_cmd("reduce", "shift", str(big_npz), "--out", str(out), "-q"), **run)
    assert _snapshot(out) == new
    assert _leftovers(tmp_path, "out") == []  # the killed runs' temporaries are gone


@pytest.fixture(scope="module")
def toy_config(tmp_path_factory) -> Path:
    from modgap.train import write_toy_precomp

    base = tmp_path_factory.mktemp("killtrain")
    root = write_toy_precomp(base / "p", {"train": 48, "dev": 12, "test": 12}, regions=4, dim=16)
    cfg = {
        "name": "k",
        "seed": 1,
        "threads": 1,
        "data": {"format": "precomp", "path": str(root)},
        "model": {"joint_dim": 16, "word_dim": 8},
        "optim": {"epochs": 3, "batch_size": 16, "lr": 3e-3},
        "eval": {"measures": []},
        "checkpoint": {"every_steps": 1},
    }
    path = base / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_sigkill_during_train_then_resume_is_exact(toy_config, tmp_path):
    from safetensors.torch import load_file

    from modgap.train import load_config
    from modgap.train.checkpoint import read_checkpoint
    from modgap.train.trainer import Trainer

    ref = tmp_path / "ref"
    subprocess.run(_cmd("train", str(toy_config), "--out", str(ref), "-q"), check=True, env=ENV)
    want = json.loads((ref / "checkpoints/last.json").read_text())
    out = tmp_path / "run"
    steps = []
    for i, delay in enumerate((0.0, 0.003, 0.03, 0.1)):
        args = ["train", str(toy_config), "--out", str(out), "-q"]
        if i:
            args.append("--resume")
        code = _kill_when_writing(_cmd(*args), out / "checkpoints", "last.json", delay)
        assert code == -signal.SIGKILL, f"run {i} was not killed (exit {code})"
        last = out / "checkpoints" / "last.json"
        if last.exists():  # whatever is committed is whole and fits the model
            steps.append(json.loads(last.read_text())["global_step"])
            trainer = Trainer(load_config(toy_config), out, resume=True, progress=False)
            read_checkpoint(
                last,
                model=trainer.model,
                loss=trainer.loss,
                optimizer=trainer.optimizer,
                steps_per_epoch=trainer.steps_per_epoch,
                epochs=3,
            )
    # the resumed runs went on from committed checkpoints, not from scratch each time
    assert steps and steps[-1] > 1 and steps == sorted(steps), steps
    subprocess.run(
        _cmd("train", str(toy_config), "--out", str(out), "--resume", "-q"), check=True, env=ENV
    )
    got = json.loads((out / "checkpoints/last.json").read_text())
    assert got["global_step"] == want["global_step"]
    a = load_file(str(out / "checkpoints" / got["tensors"]))
    b = load_file(str(ref / "checkpoints" / want["tensors"]))
    for k in a:
        if not k.startswith("rng."):
            assert (a[k] == b[k]).all(), k
    assert _leftovers(out / "checkpoints", "last.json") == []


# -- two runs onto one output ----------------------------------------------------------------
@pytest.fixture(scope="module")
def sharded(tmp_path_factory) -> Path:
    """A clip-retrieval folder of 8 shards: reduced shard by shard through a staging folder."""
    from modgap.embeddings import EmbeddingSet
    from modgap.io import write_embeddings

    X, Y = gapped_pairs(n=800, d=16, seed=5)
    root = tmp_path_factory.mktemp("race") / "cr"
    return write_embeddings(EmbeddingSet(X, Y), root, format="clip-retrieval", shard_size=100)


def test_two_runs_onto_one_out_never_mix(sharded, tmp_path):
    """Two ``modgap reduce`` runs (center, shift) started together onto one --out: one writes,
    the other stops at once with one line naming the output and the writer's pid; the folder
    always holds one whole set. MODGAP_RACE_TRIALS sets the number of trials (default 2, each
    two interpreter starts; 20 for a thorough check)."""
    from modgap.cli import main

    refs = {}
    for method in ("center", "shift"):
        ref = tmp_path / f"ref-{method}"
        assert main(["reduce", method, str(sharded), "--out", str(ref), "-q"]) == 0
        refs[method] = _snapshot(ref)
    assert refs["center"] != refs["shift"]
    out = tmp_path / "out"
    wrote = set()
    for trial in range(int(os.environ.get("MODGAP_RACE_TRIALS", "2"))):
        procs = {
            m: subprocess.Popen(_cmd("reduce", m, str(sharded), "--out", str(out), "-q"),
                                env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for m in (("center", "shift") if trial % 2 else ("shift", "center"))
        }  # fmt: skip
        codes = {}
        for m, p in procs.items():
            _, err = p.communicate(timeout=120)
            codes[m] = p.returncode
            if p.returncode:
                assert p.returncode == 2 and "another modgap run is writing" in err, err
                assert len(err.strip().splitlines()) == 1 and str(out) in err, err
        assert 0 in codes.values(), codes
        now = _snapshot(out)
        assert now in refs.values(), f"mixed output in trial {trial} (exits {codes})"
        wrote.add("center" if now == refs["center"] else "shift")
        assert _leftovers(tmp_path, "out") == [], trial  # no lock, staging or temporary left
    assert wrote  # (which run wins is the scheduler's choice)


# -- a kill between moving the old output aside and renaming the new one in ------------------
def test_kill_between_the_renames_puts_the_old_output_back(big_npz, tmp_path):
    import textwrap

    out = tmp_path / "out"
    run = {"check": True, "env": ENV, "capture_output": True}
    subprocess.run(_cmd("reduce", "center", str(big_npz), "--out", str(out), "-q"), **run)
    old = _snapshot(out)
    script = textwrap.dedent(
        f"""
        import os, signal, sys
        import modgap.files as files
        real = os.replace

        def replace(src, dst):
            real(src, dst)
            if str(src) == {str(out)!r}:  # the old output is aside: die before the new one lands
                os.kill(os.getpid(), signal.SIGKILL)

        files.os.replace = replace
        from modgap.cli import main
        sys.exit(main(["reduce", "shift", {str(big_npz)!r}, "--out", {str(out)!r}, "-q"]))
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], env=ENV, capture_output=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    assert not out.exists() and any(e.endswith(".old") for e in _leftovers(tmp_path, "out"))
    from modgap.files import clean_stale

    with pytest.warns(UserWarning, match="put back"):
        clean_stale(out)  # what the next run does first, under the output's lock
    assert _snapshot(out) == old
    subprocess.run(_cmd("reduce", "shift", str(big_npz), "--out", str(out), "-q"), **run)
    assert json.loads((out / "reduce.json").read_text())["reducer"] == "shift"
    assert _leftovers(tmp_path, "out") == []  # the killed run's lock file is gone too


def test_the_next_run_removes_what_killed_runs_left(sharded, tmp_path):
    """Folders moved aside (``.old``) and staging copies (``.tmp``) of dead processes, beside an
    output written in memory and one written shard by shard, are gone after the next run."""
    from modgap.cli import main

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    X, Y = gapped_pairs(n=50, d=8, seed=6)
    np.savez(tmp_path / "in.npz", image_emb=X, text_emb=Y)
    for name, data in (("mem", tmp_path / "in.npz"), ("st", sharded)):
        out = tmp_path / name
        assert main(["reduce", "center", str(data), "--out", str(out), "-q"]) == 0
        for left in (f".{name}.{dead}.k2j_x9ab.old", f".{name}.{dead}.q1w2e3r4.tmp"):
            (tmp_path / left).mkdir()
            (tmp_path / left / "big.npy").write_bytes(b"\0" * 1000)
        assert main(["reduce", "shift", str(data), "--out", str(out), "-q"]) == 0
        assert _leftovers(tmp_path, name) == [], name
