"""The results tables of the docs are renderings of committed data, and the data are current.

``scripts/docs_tables.py`` (``scripts/docstables/``) renders every ``<!-- table:ID -->`` block
from ``docs/data/*.json``; these tests fail when a block was edited by hand, when its data file
is missing, and when a quick producer no longer reproduces its committed data (the library
changed the numbers: run ``make docs``).
"""

from __future__ import annotations

import json
import math
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


sys.path.insert(0, str(ROOT / "scripts"))
import docstables as dt  # noqa: E402


def test_every_block_matches_its_data():
    assert dt.problems() == []


def test_every_table_has_a_block_and_every_block_a_table():
    found = dt.blocks()
    assert set(found) == set(dt.TABLES)
    for tid, (path, _) in found.items():
        assert path.relative_to(ROOT).as_posix() == dt.TABLES[tid].doc, tid


def test_check_catches_a_hand_edit_and_a_missing_file(tmp_path, monkeypatch):
    (tmp_path / "docs").mkdir()
    shutil.copytree(ROOT / "docs" / "data", tmp_path / "docs" / "data")
    for md in (ROOT / "docs").glob("*.md"):
        shutil.copy(md, tmp_path / "docs" / md.name)
    shutil.copy(ROOT / "README.md", tmp_path / "README.md")
    monkeypatch.setattr(dt, "ROOT", tmp_path)
    monkeypatch.setattr(dt, "DATA_DIR", tmp_path / "docs" / "data")
    assert dt.problems() == []
    tasks = tmp_path / "docs" / "tasks.md"
    tasks.write_text(tasks.read_text().replace("438.6", "438.7", 1))
    (tmp_path / "docs" / "data" / "measures-coco500.json").unlink()
    bad = dt.problems()
    assert any("retrieval-coco500 differs" in b for b in bad), bad
    assert any("measures-coco500.json is missing" in b for b in bad), bad
    # render repairs what it can, and leaves the block without data alone
    dt.render_all()
    assert [b for b in dt.problems() if "differs" in b] == []


#: Relative precision of each committed figure across machines, with why. A figure is computed
#: in float64 unless listed; BLAS kernels and thread counts only reorder its float64 sums, which
#: moves it by ~1e-15 (counts, recalls and ranks go through exact comparisons and do not move).
PRECISION = 1e-12
#: The float32 scatter of measures.moments (one syrk per chunk of at most CHUNK rows, float64
#: means and merge): its stated bound, per entry (gamma_c + 2u) sqrt(M_jj M_kk) plus
#: 2u (sqrt(T_jj M_kk) + sqrt(T_kk M_jj)), is at most gamma_c + 6u relative to the scale of
#: the scatter; the COCO-500 sets are one chunk of c = 500 rows (8e-9 to 2.1e-7 seen).
_U32 = 2.0**-24
FLOAT32_SCATTER = 500 * _U32 / (1 - 500 * _U32) + 6 * _U32
#: figures whose computation has less: (relative tolerance, reason)
LESS_PRECISE = {
    "frechet_distance": (
        FLOAT32_SCATTER,
        "covariances from the float32 scatter of measures.moments (its bound, c = 500)",
    ),
    "frechet_covariance_term": (FLOAT32_SCATTER, "the same covariances as frechet_distance"),
}


def _rel(path: str) -> float:
    """The tolerance of the figure at ``path`` (its last key names it)."""
    key = path.rsplit(".", 1)[-1].split("[", 1)[0]
    return LESS_PRECISE.get(key, (PRECISION, ""))[0]


def _close(a, b, path=""):
    """Numeric leaves equal at the precision their computation has (:func:`_rel`)."""
    if isinstance(a, dict):
        assert set(a) == set(b), path
        for k in a:
            _close(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _close(x, y, f"{path}[{i}]")
    elif isinstance(a, int | float) and not isinstance(a, bool):
        if isinstance(b, str):
            b = float(b)
        if math.isnan(a):
            assert math.isnan(b), path
        else:
            assert b == pytest.approx(a, rel=_rel(path), abs=1e-300), path
    else:
        assert a == b, path


@pytest.mark.parametrize(
    "pid",
    ["measures-coco500", "retrieval-coco500", "corrections-coco500", "hubness-corrections-coco500"],
)
def test_quick_producers_reproduce_the_committed_data(pid, coco500_path, coco500_random_path):
    committed = json.loads((dt.DATA_DIR / f"{pid}.json").read_text())
    fresh = json.loads(json.dumps(dt._jsonable(dt.PRODUCERS[pid].run())))
    for key in fresh:
        _close(fresh[key], committed[key], key)


def test_every_less_precise_figure_is_a_committed_figure():
    keys: set[str] = set()

    def walk(x):
        if isinstance(x, dict):
            keys.update(x)
            for v in x.values():
                walk(v)

    for path in dt.DATA_DIR.glob("*.json"):
        walk(json.loads(path.read_text()))
    assert set(LESS_PRECISE) <= keys


def test_number_format():
    assert dt.fmt(float("inf")) == "∞"
    assert dt.fmt(-0.25) == "−0.250"
    assert dt.fmt(1234) == "1,234"
    assert dt.fmt("nan") == "nan"
    assert dt.fmt(None) == "—"


def test_every_plus_minus_of_the_dias_figures_is_a_95_percent_interval():
    import dias_ablation

    from modgap.bench.stats import interval

    report = json.loads((dt.DATA_DIR / "dias-coco500-scratch.json").read_text())["report"]
    mean, half, _, _ = dt.results._paired(report, "full DIAS", "rsum")
    base = {(r["seed"], r["fold"]): r for r in report["runs"]["baseline (matching only)"]}
    d = [r["rsum"] - base[(r["seed"], r["fold"])]["rsum"] for r in report["runs"]["full DIAS"]]
    _, lo, hi = interval(d, 100 / 350)  # 5 folds: 100 test images, 350 trained on
    assert (mean, half) == pytest.approx((float(np.mean(d)), (hi - lo) / 2), rel=1e-12)
    assert half > float(np.std(d, ddof=1))  # wider than the standard deviation it replaced
    assert dias_ablation.interval_ratio(report) == 100 / 350
    readme = (ROOT / "README.md").read_text()
    assert f"+{mean:.1f} ± {half:.1f} rSum" in readme and "half-width of a 95% interval" in readme
    assert "± std" not in (ROOT / "docs" / "dias.md").read_text()


def test_comparative_sentences_follow_the_data():
    held = json.loads((dt.DATA_DIR / "bench-coco500-heldout.json").read_text())
    trans = json.loads((dt.DATA_DIR / "bench-coco500-transductive.json").read_text())
    render = dt.TABLES["bench-coco500-findings"].render
    text = render({"bench-coco500-heldout": held, "bench-coco500-transductive": trans})
    assert "`center` leaves rSum where it was" in text
    # make center's rSum loss significant: the sentence no longer says it keeps retrieval
    center = held["results"]["center"]["vs_none"]["rsum"]
    held["results"]["center"]["vs_none"]["rsum"] = {**center, "ci95": [-9.0, -1.0]}
    text = render({"bench-coco500-heldout": held, "bench-coco500-transductive": trans})
    assert "`center` leaves" not in text and "no reducer leaves" in text
    assert "`center`" in text.split("lose rSum significantly")[0].splitlines()[-1]
    reducers = (ROOT / "docs" / "reducers.md").read_text()
    assert "keeps more retrieval than any other reducer" not in reducers


def test_the_corrections_table_gives_paired_95_percent_intervals():
    from modgap.bench.stats import paired

    doc = json.loads((dt.DATA_DIR / "corrections-coco500.json").read_text())
    runs = doc["runs"]
    label = "`CSLS(k=10)`"
    d = paired([r["t2i_r1"] for r in runs[label]], [r["t2i_r1"] for r in runs["none"]], 1.0)
    half = (d["ci95"][1] - d["ci95"][0]) / 2
    row = next(
        ln for ln in dt.TABLES["corrections-coco500"].render(doc).splitlines() if label in ln
    )
    assert f"**{d['mean']:+.3f} ± {half:.3f}**" in row and "standard error" not in row
