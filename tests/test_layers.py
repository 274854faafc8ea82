"""The layer table of docs/architecture.md holds: import-linter's contracts in pyproject.toml
(layers, forbidden imports, no cycles between sibling modules), on a graph that counts the
imports placed inside functions too."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_are_kept():
    cli = pytest.importorskip("importlinter.cli", reason="import-linter is in the dev extra")
    rc = cli.lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True)
    assert rc == 0, "lint-imports found an import against docs/architecture.md (run it to see)"


def test_the_layer_contract_lists_every_package():
    import tomllib

    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    layers = next(c for c in cfg["contracts"] if c["type"] == "layers")["layers"]
    named = {m.strip() for layer in layers for m in layer.replace(":", "|").split("|")}
    src = ROOT / "src" / "modgap"
    have = {
        f"modgap.{p.stem if p.is_file() else p.name}"
        for p in src.iterdir()
        if (p.is_dir() and (p / "__init__.py").exists())
        or (p.suffix == ".py" and p.stem not in ("__init__", "__main__"))
    }
    assert have - named == set(), "a package or module of modgap is missing from the layers"
