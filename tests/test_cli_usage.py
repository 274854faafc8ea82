"""First contact through the real installed ``modgap`` script: every usage error is one line on
stderr with exit code 2 and no traceback; ``--version``; ``--json -`` writes JSON to stdout."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import gapped_pairs


def _script() -> str:
    found = Path(sys.executable).with_name("modgap")
    if found.exists():
        return str(found)
    which = shutil.which("modgap")
    if which is None:
        pytest.skip("the modgap console script is not installed in this environment")
    return which


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "100"}
    return subprocess.run(
        [_script(), *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=120
    )


@pytest.fixture(scope="module")
def npz(tmp_path_factory) -> Path:
    X, Y = gapped_pairs(40, 8, seed=3)
    p = tmp_path_factory.mktemp("usage") / "x.npz"
    np.savez(p, image_emb=X, text_emb=Y)
    return p


def test_no_arguments_prints_help_and_exits_2():
    proc = run()
    assert proc.returncode == 2
    assert "Usage: modgap" in proc.stderr and "measure" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["measure"], "Missing argument 'INPUT'"),
        (["nosuchcmd"], "No such command 'nosuchcmd'"),
        (["measure", "{npz}", "--bogus"], "No such option '--bogus'"),
        (["measure", "{npz}", "--seed", "abc"], "'abc' is not a valid integer"),
        (["measure", "{npz}", "--device", "tpu9"], "unknown device 'tpu9'"),
        (["measure", "{npz}", "--memory-budget", "lots"], "memory budget 'lots' is not a size"),
        (["reduce", "shift", "{npz}", "--out", "{tmp}/o", "--lam", "nan"], "'--lam': must be a"),
        (["eval", "{npz}", "--k", "x"], "--k must be comma-separated integers"),
        (["bench", "{npz}"], "Missing option '--out'"),
        (["train"], "Missing argument 'CONFIG.yaml'"),
        (["embed", "--out", "{tmp}/o"], "Missing argument 'IMAGES_DIR CAPTIONS | SHARDS...'"),
        (["embed", "{tmp}/none", "--out", "{tmp}/o"], "none: not found (expected a .tar shard"),
        (["measure", "{npz}", "--threads", "100000"], "--threads 100000 is more than the"),
        (["measure", "{npz}", "--threads", "-2"], "'--threads': -2 is not in the range x>=1"),
        (
            ["measure", "{npz}", "--engine", "dask", "--scheduler", "notanaddress"],
            "--scheduler notanaddress: not a Dask scheduler address",
        ),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(args, message, npz, tmp_path):
    proc = run(*(a.format(npz=npz, tmp=tmp_path) for a in args))
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") and message in lines[0]
    assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_version():
    proc = run("--version")
    assert proc.returncode == 0
    from modgap import __version__

    assert proc.stdout.strip() == f"modgap {__version__}"


def test_json_to_stdout(npz, tmp_path):
    proc = run("measure", str(npz), "--only", "centroid", "--json", "-", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["measures"]["centroid_gap"] > 0
    assert "centroid_gap" in proc.stderr  # the table moves to stderr
    assert not (tmp_path / "-").exists()


def test_no_torch_warning_for_read_only_inputs(tmp_path):
    X, Y = gapped_pairs(80, 8, seed=4)
    np.save(tmp_path / "img.npy", X)  # read back memory-mapped, read-only
    np.save(tmp_path / "txt.npy", Y)
    for args in (["measure"], ["eval"], ["reduce", "spectral", "--n-components", "4", "--out",
                 str(tmp_path / "r")]):  # fmt: skip
        head = args[:2] if args[0] == "reduce" else args[:1]
        tail = args[2:] if args[0] == "reduce" else []
        proc = run(*head, str(tmp_path / "img.npy"), str(tmp_path / "txt.npy"), *tail,
                   "--no-progress")  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        assert "not writable" not in proc.stderr and "warning:" not in proc.stderr, proc.stderr


def test_training_log_in_a_pipe_is_whole_lines(tmp_path):
    from modgap.train import write_toy_precomp

    root = write_toy_precomp(tmp_path / "p", {"train": 24, "dev": 8, "test": 8}, regions=2, dim=8)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        "seed: 0\nthreads: 1\n"
        f"data: {{format: precomp, path: {root}}}\n"
        "model: {joint_dim: 8, word_dim: 4}\n"
        "optim: {epochs: 2, batch_size: 8}\n"
        "eval: {measures: []}\n"
    )
    proc = run("train", str(cfg), "--out", str(tmp_path / "run"))
    assert proc.returncode == 0, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("epoch ")]
    assert len(lines) == 2
    for ln in lines:  # every loss term and the validation rSum, on one uncut line
        assert "match" in ln and "total" in ln and "val rSum" in ln and "best" in ln
    assert "━" not in proc.stderr  # no progress bar drawn into a pipe


# -- URLs as paths: file:// is a local path, other URLs are refused for outputs --------------
@pytest.mark.parametrize(
    ("args", "blame"),
    [
        (["reduce", "center", "{npz}", "--out", "memory://o"], "--out memory://o"),
        (["reduce", "center", "{npz}", "--out", "s3://bucket/o"], "--out s3://bucket/o"),
        (["reduce", "center", "{npz}", "--out", "file://host/o"], "--out file://host/o"),
        (
            ["reduce", "center", "{npz}", "--out", "o", "--save-model", "memory://m.safetensors"],
            "--save-model memory://m.safetensors",
        ),
        (
            ["reduce", "center", "{npz}", "--out", "o", "--save-model", "s3://b/m.safetensors"],
            "--save-model s3://b/m.safetensors",
        ),
        (["measure", "{npz}", "--json", "memory://m.json"], "--json memory://m.json"),
        (["eval", "{npz}", "--json", "gs://b/m.json"], "--json gs://b/m.json"),
        (["bench", "{npz}", "--out", "s3://bucket/b"], "--out s3://bucket/b"),
        (["train", "cfg.yaml", "--out", "memory://run"], "--out memory://run"),
        (["embed", "imgs", "caps.csv", "--out", "memory://e"], "--out memory://e"),
        (["demo", "--out", "s3://bucket/demo"], "--out s3://bucket/demo"),
    ],
)
def test_url_outputs_are_refused_in_one_line(args, blame, npz, tmp_path, monkeypatch, capsys):
    from modgap.cli import main

    monkeypatch.chdir(tmp_path)
    assert main([a.format(npz=npz) for a in args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and blame in err[0], err
    assert "local paths only" in err[0] or "file:///abs/path" in err[0]
    assert list(tmp_path.iterdir()) == []  # no ./memory:/o, ./s3:/bucket/o ...


def test_file_urls_are_local_paths(npz, tmp_path, monkeypatch, capsys):
    from modgap.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "work").mkdir()
    url = f"file://{tmp_path}/"
    args = ["reduce", "center", f"file://{npz}", "--out", url + "o"]
    assert main([*args, "--save-model", url + "m.safetensors", "-q"]) == 0
    assert (tmp_path / "o" / "reduce.json").is_file() and (tmp_path / "m.safetensors").is_file()
    assert main(["measure", url + "o/x.npz", "--json", url + "work/m.json", "-q"]) == 0
    assert json.loads((tmp_path / "work" / "m.json").read_text())["measures"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors", "o", "work"]
