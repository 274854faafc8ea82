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
