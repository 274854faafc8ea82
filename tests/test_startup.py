"""Start-up: the command line and the numpy-only passes import no heavy library they do not use.

Each check runs in a fresh interpreter (``sys.modules`` of this one already holds everything).
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

HEAVY = ("torch", "sklearn", "dask", "distributed", "matplotlib", "jinja2", "pyarrow", "pandas")


def loaded_after(code: str) -> dict[str, bool]:
    """Which of :data:`HEAVY` a fresh interpreter holds after running ``code``."""
    report = f"print(json.dumps({{h: h in sys.modules for h in {HEAVY!r}}}))"
    probe = f"{code}\nimport json, sys\n{report}"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_cli_and_help_import_no_heavy_library():
    code = (
        "from modgap.cli import main\n"
        "for argv in (['--help'], ['measure', '--help'], ['reduce', '--help']):\n"
        "    assert main(argv) == 0\n"
    )
    assert not any(loaded_after(code).values())


def test_top_level_help_imports_no_numpy():
    code = (
        "import sys\n"
        "from modgap.cli import main\n"
        "assert main(['--help']) == 0\n"
        "assert 'numpy' not in sys.modules\n"
    )
    loaded_after(code)


def test_measure_help_imports_no_numpy():
    # the --engine choices come from the engine registry, which needs no reader nor kernel
    code = (
        "import sys\n"
        "from modgap.cli import main\n"
        "assert main(['measure', '--help']) == 0\n"
        "assert 'numpy' not in sys.modules, 'numpy'\n"
        "from modgap.stream import ENGINES\n"
        "assert 'numpy' not in sys.modules and set(ENGINES) == {'local', 'dask'}\n"
    )
    loaded_after(code)


def test_auto_and_cpu_devices_are_checked_without_torch():
    code = (
        "from modgap.compute import Compute\n"
        "for dev in ('auto', 'cpu', ' CPU '):\n"
        "    assert Compute(device=dev).check().describe()['device'] == 'cpu'\n"
    )
    assert not loaded_after(code)["torch"]


@pytest.mark.parametrize("device", ["cpu:0", "tpu", "cuda:x"])
def test_bad_device_names_still_fail_before_work(device):
    from modgap.compute import Compute
    from modgap.errors import ModgapError

    with pytest.raises(ModgapError, match="unknown device"):
        Compute(device=device).check()


def test_describe_names_the_resolved_device_once_torch_ran():
    import torch  # a torch kernel ran in this process

    from modgap.compute import Compute

    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert Compute(device="auto").describe()["device"] == expected


def test_streamed_moment_measures_do_not_import_torch(tmp_path):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "a.npy", rng.standard_normal((40, 8)).astype(np.float32))
    np.save(tmp_path / "b.npy", rng.standard_normal((40, 8)).astype(np.float32))
    out = tmp_path / "m.json"
    code = (
        "from modgap.cli import main\n"
        f"argv = ['measure', {str(tmp_path / 'a.npy')!r}, {str(tmp_path / 'b.npy')!r}, "
        "'--stream', '--only', 'centroid,per_dimension,rmg,frechet_distance,alignment,cosine', "
        f"'--quiet', '--json', {str(out)!r}]\n"
        "assert main(argv) == 0\n"
    )
    assert not loaded_after(code)["torch"]
    doc = json.loads(out.read_text())
    assert doc["provenance"]["compute"]["device"] == "cpu"
    assert "centroid_gap" in doc["measures"] and "frechet_distance" in doc["measures"]


@pytest.mark.parametrize(("n_q", "n_c", "k"), [(500, 500, 10), (3000, 700, 5), (40, 900, 10)])
def test_hubness_chance_is_scipy_stats_binom_bit_for_bit(n_q, n_c, k):
    """The chance values take binom.sf's kernel from scipy.special (no scipy.stats import):
    the same bits as the scipy.stats formula they replace."""
    import math

    from scipy.stats import binom

    from modgap.measures.hubness import random_retrieval_hubness

    def expected_top(n, m, p, h):  # the scipy.stats version, verbatim
        mu, sigma = n * p, math.sqrt(n * p * (1 - p))
        lo = max(1, math.floor(mu - 40 * sigma))
        hi = min(n, math.ceil(mu + 40 * sigma + 40))
        x = np.arange(lo, hi + 1)
        q = binom.sf(x - 1, n, p)
        j = np.arange(h)
        total = float(h * (lo - 1))
        for s in range(0, x.size, 256):
            total += float(binom.sf(j[None, :], m, q[s : s + 256, None]).sum())
        return total

    got = random_retrieval_hubness(n_q, n_c, k)
    p = k / n_c
    assert got["max"] == expected_top(n_q, n_c, p, 1)
    assert got["hub_occupancy"] == expected_top(n_q, n_c, p, got["hubs"]) / (k * n_q)


def test_hubness_chance_does_not_import_scipy_stats():
    code = (
        "from modgap.measures.hubness import random_retrieval_hubness\n"
        "random_retrieval_hubness(500, 500, 10)\n"
        "import sys\n"
        "assert 'scipy.stats' not in sys.modules\n"
    )
    loaded_after(code)
