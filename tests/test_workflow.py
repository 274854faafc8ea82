"""The reduce workflow above reducers and engines: the route is decided in one place, a set in
memory is written by the same shard writer as a streamed one, and engines are known to the CLI
and the workflow only through their registry."""

from __future__ import annotations

import ast
import warnings
from pathlib import Path

import numpy as np
import pytest

from conftest import gapped_pairs
from modgap.compute import Compute
from modgap.errors import ModgapNotice
from modgap.files import MANIFEST
from modgap.stream import ENGINES, LocalEngine, runs_in_process
from modgap.workflow import choose_route, reduce_to_folder

SRC = Path(__file__).resolve().parents[1] / "src" / "modgap"


def _npy_pair(root: Path, n: int = 300, d: int = 16, dtype=np.float16) -> tuple[str, str]:
    x, y = gapped_pairs(n, d, seed=31)
    root.mkdir(parents=True, exist_ok=True)
    np.save(root / "img.npy", x.astype(dtype))
    np.save(root / "txt.npy", y.astype(dtype))
    return str(root / "img.npy"), str(root / "txt.npy")


def _files(folder: Path) -> dict[str, bytes]:
    """Every file below ``folder`` but ``reduce.json`` (its provenance holds a time stamp)."""
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name not in ("reduce.json", MANIFEST)
    }


class _Remote(LocalEngine):
    """An engine registered as not running in this process (what a Ray adapter would be)."""

    name = "remote-test"
    in_process = False


def test_the_route_is_decided_in_one_place(tmp_path, monkeypatch):
    images, texts = _npy_pair(tmp_path / "in")
    np.savez(tmp_path / "e.npz", image_emb=np.load(images), text_emb=np.load(texts))
    c = Compute()
    route = choose_route(str(tmp_path / "e.npz"), None, None, stream=None, engine=None, compute=c)
    assert (route.writer, route.fit) == ("file", "memory")
    # a .npy pair is a source of one shard: the shard writer, fitted in memory or streamed
    for stream, fit in ((None, "memory"), (False, "memory"), (True, "stream")):
        route = choose_route(images, texts, None, stream=stream, engine=None, compute=c)
        assert (route.writer, route.fit, route.source.format) == ("shards", fit, "npy")
        assert len(route.source.shards) == 1
    # an engine that is not in-process streams, whatever its name: the registry says so
    monkeypatch.setitem(ENGINES, "remote-test", _Remote)
    assert not runs_in_process("remote-test") and runs_in_process("local")
    route = choose_route(images, texts, None, stream=None, engine="remote-test", compute=c)
    assert (route.writer, route.fit) == ("shards", "stream")
    assert choose_route(images, texts, None, stream=None, engine=_Remote(), compute=c).fit == (
        "stream"
    )


@pytest.mark.parametrize("name", ["center", "shift"])
def test_npy_pair_in_memory_and_streamed_write_the_same_bytes(tmp_path, name):
    """The in-memory fit and the streamed one (at a tiny budget) go through the same writer:
    the same file names, float16 kept, the same bytes."""
    images, texts = _npy_pair(tmp_path / "in")
    mem = reduce_to_folder(name, images, texts, out=tmp_path / "mem", stream=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ModgapNotice)
        tiny = Compute(memory_budget="1MiB")  # many row blocks
        st = reduce_to_folder(name, images, texts, out=tmp_path / "st", stream=True, compute=tiny)
    assert mem["fitted_on"]["rows"] == st["fitted_on"]["rows"] == "all"
    got, want = _files(tmp_path / "st"), _files(tmp_path / "mem")
    assert sorted(want) == ["img.npy", "reducer.safetensors", "txt.npy"]
    assert got == want
    assert np.load(tmp_path / "mem" / "img.npy").dtype == np.float16


def test_npy_pair_keeps_its_pairs_file_and_an_inside_model(tmp_path):
    """A pairing that is not row by row is written beside the pair; ``--save-model`` inside
    ``--out`` is part of the output (listed, so the next run may replace the folder)."""
    x, y = gapped_pairs(40, 8, seed=5)
    np.save(tmp_path / "img.npy", x)
    np.save(tmp_path / "txt.npy", np.concatenate([y, y[:10]]))
    t2i = np.concatenate([np.arange(40), np.arange(10)])
    (tmp_path / "pairs.txt").write_text("".join(f"{i}\n" for i in t2i))
    out = tmp_path / "out"
    kw = {"pairs": tmp_path / "pairs.txt", "save_model": out / "m" / "r.safetensors"}
    for _ in range(2):  # the second run replaces the first output whole
        s = reduce_to_folder(
            "center", tmp_path / "img.npy", tmp_path / "txt.npy", out=out, stream=False, **kw
        )
    assert [int(v) for v in (out / "pairs.txt").read_text().split()] == t2i.tolist()
    assert str(out / "pairs.txt") in s["outputs"]
    assert (out / "m" / "r.safetensors").read_bytes() == (out / "reducer.safetensors").read_bytes()


def test_engine_choices_are_the_registry(monkeypatch):
    """``--engine`` of every command offers exactly the registered engines, read when the
    option is parsed (a newly registered engine is a choice without touching the CLI)."""
    import click

    from modgap.cli import _register, cli

    _register()  # the commands add themselves to the group when their modules load
    ctx = click.Context(cli)
    seen = 0
    for name in cli.list_commands(ctx):
        cmd = cli.get_command(ctx, name)
        for p in cmd.params:
            if p.name == "engine":
                seen += 1
                assert tuple(p.type.choices) == tuple(ENGINES)
                monkeypatch.setitem(ENGINES, "remote-test", _Remote)
                assert "remote-test" in p.type.choices
                assert p.type.convert("remote-test", p, None) == "remote-test"
                monkeypatch.delitem(ENGINES, "remote-test")
    assert seen >= 3  # measure, reduce, eval


def _imports(module: Path) -> set[str]:
    """Absolute names of the modgap modules ``module`` imports, inside functions too."""
    parts = list(module.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    out = set()
    for node in ast.walk(ast.parse(module.read_text("utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = parts[: len(parts) - node.level + (module.name == "__init__.py")]
            out.add(".".join(base + ([node.module] if node.module else [])))
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return {m for m in out if m.startswith("modgap")}


@pytest.mark.parametrize(
    "package, forbidden",
    [("reducers", ("modgap.stream", "modgap.workflow")), ("stream", ("modgap.workflow",))],
)
def test_methods_and_engines_do_not_import_the_workflow(package, forbidden):
    bad = [
        f"{f.relative_to(SRC)} imports {m}"
        for f in sorted((SRC / package).rglob("*.py"))
        for m in sorted(_imports(f))
        if m.startswith(forbidden)
    ]
    assert not bad, bad
