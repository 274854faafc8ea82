"""report.html in a real headless browser (Debian's chromium): it renders, every embedded
figure decodes, and the page logs no console errors.

Needs ``/usr/bin/chromium`` (``apt-get install chromium``); skipped with the reason otherwise.
Console messages are read from chromium's ``--enable-logging=stderr`` output (lines tagged
``CONSOLE``); figure decoding is checked by a copy of the page with a small probe script that
records ``naturalWidth > 0`` of every image in the DOM (``--dump-dom``). A deliberately broken
page checks that both detectors do fire.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from conftest import gapped_pairs
from modgap.bench import run_bench
from modgap.embeddings import EmbeddingSet
from modgap.report import write_bench

CHROMIUM = Path("/usr/bin/chromium")

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="headless browser test needs Debian's chromium at /usr/bin/chromium "
    "(apt-get install chromium)",
)

PROBE = """<script>
window.addEventListener("load", function () {
  var imgs = Array.from(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.body.setAttribute("data-images-loaded", ok + "/" + imgs.length);
  console.log("modgap-probe " + ok + "/" + imgs.length);
});
</script></body>"""


def _chromium(tmp: Path, page: Path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp / f"profile-{len(list(tmp.glob('profile-*')))}"
    cmd = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={profile}",
        "--enable-logging=stderr",
        "--v=0",
        "--virtual-time-budget=5000",
        *args,
        page.resolve().as_uri(),
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def _console(stderr: str) -> list[str]:
    """Console messages of the page (chromium logs them as ``...:CONSOLE:<line>] "msg"``)."""
    return [line for line in stderr.splitlines() if ":CONSOLE" in line]


def _loaded(dom: str) -> tuple[int, int]:
    m = re.search(r'data-images-loaded="(\d+)/(\d+)"', dom)
    assert m, "the probe did not run"
    return int(m.group(1)), int(m.group(2))


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    X, Y = gapped_pairs(n=60, d=16, seed=0)
    out = tmp_path_factory.mktemp("report") / "bench"
    result, views = run_bench(
        EmbeddingSet(X, Y), reducers=["none", "center"], measures=["centroid", "rmg"]
    )
    write_bench(result, views, out)
    return out / "report.html"


def test_report_renders_with_figures_and_no_console_errors(report, tmp_path):
    from PIL import Image

    shot = tmp_path / "report.png"
    proc = _chromium(tmp_path, report, f"--screenshot={shot}", "--window-size=1400,2400")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert shot.exists() and shot.stat().st_size > 20_000
    img = np.asarray(Image.open(shot).convert("RGB"))
    assert img.shape[:2] == (2400, 1400)
    # not a blank page: the scatter colours of the figures are on it
    colours = {tuple(c) for c in img.reshape(-1, 3)[::97]}
    assert len(colours) > 50
    assert _console(proc.stderr) == []  # the report has no scripts: any message is an error

    probe = tmp_path / "probe.html"
    probe.write_text(report.read_text().replace("</body>", PROBE))
    proc = _chromium(tmp_path, probe, "--dump-dom")
    assert proc.returncode == 0, proc.stderr[-2000:]
    loaded, total = _loaded(proc.stdout)
    assert total == 4 and loaded == total
    assert proc.stdout.count('src="data:image/png;base64,') == 4
    messages = _console(proc.stderr)
    assert len(messages) == 1 and "modgap-probe 4/4" in messages[0], messages


def test_detectors_fire_on_a_broken_page(tmp_path):
    bad = tmp_path / "bad.html"
    page = '<html><body><img src="data:image/png;base64,AAAA"><script>nope();</script></body>'
    bad.write_text(page.replace("</body>", PROBE) + "</html>")
    proc = _chromium(tmp_path, bad, "--dump-dom")
    assert _loaded(proc.stdout) == (0, 1)
    assert any("Uncaught ReferenceError" in m for m in _console(proc.stderr))
