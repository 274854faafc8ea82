"""modgap.files: atomic outputs, output folders as one unit, stale temporaries, and the check
that no output destroys an input."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from modgap.errors import ModgapError
from modgap.files import atomic_path, check_paths, clean_stale, output_folder, output_lock


def _dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    return int(proc.stdout)


def test_stale_temporaries_of_dead_processes_are_removed(tmp_path):
    target = tmp_path / "res.json"
    dead, alive = _dead_pid(), os.getpid()
    stale = [tmp_path / f".res.json.{dead}.abc12345.tmp.json", tmp_path / f".res.json.{dead}.x.old"]
    keep = [tmp_path / f".res.json.{alive}.def67890.tmp.json", tmp_path / ".res.json.notes"]
    target.write_text("current")  # there: a dead run's .old copy is not needed
    for p in stale + keep:
        p.write_text("x")
    (tmp_path / f".res.json.{dead}.folder.tmp").mkdir()
    clean_stale(target)
    assert all(not p.exists() for p in stale)
    assert not (tmp_path / f".res.json.{dead}.folder.tmp").exists()
    assert all(p.exists() for p in keep) and target.read_text() == "current"


def test_an_output_moved_aside_by_a_dead_run_is_put_back(tmp_path):
    """Killed between moving OUT aside and renaming the new one in: OUT is missing and its
    ``.old`` copy is the only whole set left; the next run restores it (the newest one)."""
    out = tmp_path / "out"
    dead = _dead_pid()
    for rand, text in (("older_01", "old"), ("newer_02", "newest")):
        aside = tmp_path / f".out.{dead}.{rand}.old"
        aside.mkdir()
        (aside / "done.json").write_text(text)
        os.utime(aside, ns=(0, 10**9 if rand == "older_01" else 2 * 10**9))
    with pytest.warns(UserWarning, match="put back"):
        clean_stale(out)
    assert (out / "done.json").read_text() == "newest"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_second_writer_of_an_output_fails_at_once(tmp_path):
    out = tmp_path / "out"
    code = (
        "import sys; from modgap.cli import main\n"
        "sys.exit(main(['reduce', 'center', sys.argv[1], '--out', sys.argv[2], '-q']))"
    )
    np.savez(tmp_path / "x.npz", image_emb=np.eye(4, 3) + 1, text_emb=np.eye(4, 3) - 1)
    with output_lock(out):
        proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "x.npz"), str(out)],
                              capture_output=True, text=True)  # fmt: skip
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.strip() == (
            f"error: another modgap run is writing {out} (pid {os.getpid()}); wait for it or "
            "choose another --out"
        )
        with output_lock(out):  # the same process may nest it
            pass
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["x.npz"]


def test_a_killed_writer_leaves_no_lock(tmp_path):
    out = tmp_path / "out"
    code = (
        "import os, signal, sys; from modgap.files import output_lock\n"
        "with output_lock(sys.argv[1]): os.kill(os.getpid(), signal.SIGKILL)"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(out)], capture_output=True)
    assert proc.returncode == -9 and (tmp_path / ".out.lock").exists()
    with output_lock(out), output_folder(out) as tmp:  # the lock file is taken over
        (tmp / "a").write_text("a")
    assert (out / "a").exists() and not (tmp_path / ".out.lock").exists()


def test_atomic_path_replaces_whole_and_cleans_up_on_error(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]
    with atomic_path(target) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new"


def test_output_folder_swaps_once_and_never_replaces_foreign_folders(tmp_path):
    out = tmp_path / "out"
    with output_folder(out, marker="done.json") as tmp:
        (tmp / "done.json").write_text("1")
        (tmp / "a").write_text("a")
    with pytest.raises(RuntimeError), output_folder(out, marker="done.json") as tmp:
        (tmp / "done.json").write_text("2")
        raise RuntimeError("killed")
    assert (out / "done.json").read_text() == "1" and (out / "a").exists()
    with pytest.warns(UserWarning, match="replaced the previous --x"):
        with output_folder(out, marker="done.json", what="--x") as tmp:
            (tmp / "done.json").write_text("3")
    assert (out / "done.json").read_text() == "3" and not (out / "a").exists()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    with pytest.raises(ModgapError, match="files modgap did not write"):
        with output_folder(mine, marker="done.json"):
            pass
    assert (mine / "thesis.tex").read_text() == "years of work"


def test_check_paths(tmp_path):
    inp = tmp_path / "data" / "emb.npz"
    inp.parent.mkdir()
    inp.write_text("x")
    link = tmp_path / "link.npz"
    link.symlink_to(inp)
    hard = tmp_path / "hard.npz"
    os.link(inp, hard)
    reads = [("the input", inp)]
    check_paths(reads, [("--json", tmp_path / "out.json"), ("--out", tmp_path / "o")])
    for label, path, word in [
        ("--json", inp, "overwrite"),
        ("--json", link, "overwrite"),  # a symbolic link to the input
        ("--save-model", hard, "overwrite"),  # a hard link to the input
        ("--out", tmp_path / "data", "write inside or replace"),  # the folder holding it
        ("--out", tmp_path / "data" / "x" / ".." / "emb.npz", "overwrite"),
        ("--out", tmp_path, "write inside or replace"),
    ]:
        with pytest.raises(ModgapError, match=word):
            check_paths(reads, [(label, path)])
    with pytest.raises(ModgapError, match="would write inside or replace the input"):
        check_paths([("the input", tmp_path / "data")], [("--out", tmp_path / "data" / "o")])
    with pytest.raises(ModgapError, match="are the same place"):
        check_paths([], [("--json", tmp_path / "r.json"), ("--save-model", tmp_path / "r.json")])
    check_paths(reads, [("--json", "-")])  # stdout is no path


def test_outputs_to_urls_are_refused_by_check_paths(tmp_path):
    """Library callers too: an output URL would land in a local folder named like it."""
    with pytest.raises(ModgapError, match="--out s3://b/o: modgap writes outputs to local"):
        check_paths(reads=[], writes=[("--out", "s3://b/o")])
    with pytest.raises(ModgapError, match=f"give the local path {tmp_path}/o"):
        check_paths(reads=[], writes=[("--json", f"file://{tmp_path}/o")])
    assert list(tmp_path.iterdir()) == []
