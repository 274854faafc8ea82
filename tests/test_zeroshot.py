"""Zero-shot classification against a plain numpy reference."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from modgap.errors import InputError, ModgapError
from modgap.tasks.zeroshot import (
    class_embeddings,
    ensemble_class_embeddings,
    zero_shot_from_encoder,
    zero_shot_metrics,
)


class FakeEncoder:
    """Maps each prompt to a fixed random vector (seeded by the text); records the calls."""

    def __init__(self, d: int = 16):
        self.d = d
        self.seen: list[str] = []

    def encode_texts(self, texts, batch_size=256):
        self.seen.extend(texts)
        out = []
        for t in texts:
            rng = np.random.default_rng(zlib.crc32(t.encode()))
            v = rng.standard_normal(self.d)
            out.append(v / np.linalg.norm(v))
        return np.asarray(out, dtype=np.float32)


def _reference(X, y, W):
    """Plain numpy: cosine logits, argmax / top-5 by full sort, per-class recall by loops."""
    if W.ndim == 3:
        W = W / np.linalg.norm(W, axis=2, keepdims=True)
        W = W.mean(axis=1)
    W = W / np.linalg.norm(W, axis=1, keepdims=True)
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    logits = Xn @ W.T
    order = np.argsort(-logits, axis=1, kind="stable")
    k = min(5, W.shape[0])
    acc1 = np.mean(order[:, 0] == y)
    acc5 = np.mean([y[i] in order[i, :k] for i in range(len(y))])
    recalls = [np.mean(order[y == c, 0] == c) for c in np.unique(y)]
    return {"acc1": acc1, "acc5": acc5, "mean_per_class_recall": np.mean(recalls)}


def _data(n=120, c=8, d=16, t=3, seed=0):
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((c, t, d)).astype(np.float32)
    y = rng.integers(0, c, n)
    X = (W.mean(axis=1)[y] + 1.2 * rng.standard_normal((n, d))).astype(np.float32)
    return X, y, W


@pytest.mark.parametrize("templates", [1, 3])
def test_matches_reference(templates):
    X, y, W = _data(t=templates, seed=templates)
    W_in = W if templates > 1 else W[:, 0]
    ours = zero_shot_metrics(X, y, W_in)
    ref = _reference(X, y, W_in)
    for key in ref:
        assert ours[key] == pytest.approx(ref[key], abs=1e-9), key
    assert 0 < ours["acc1"] < ours["acc5"] < 1  # informative data


def test_fewer_than_five_classes_uses_top_c():
    X, y, W = _data(c=3, seed=2)
    out = zero_shot_metrics(X, y, W)
    assert out["acc5"] == 1.0
    assert out["acc1"] == pytest.approx(_reference(X, y, W)["acc1"])


def test_encoder_route_ensembles_templates():
    enc = FakeEncoder(d=16)
    names = ["cat", "dog", "car"]
    templates = ["a photo of a {c}.", lambda c: f"art of the {c}", "{} in the wild"]
    W = class_embeddings(enc, names, templates)
    assert enc.seen[:3] == ["a photo of a cat.", "art of the cat", "cat in the wild"]
    raw = np.stack([enc.encode_texts([t]) for t in enc.seen[:9]]).reshape(3, 3, 16)
    expect = raw.mean(axis=1)
    expect /= np.linalg.norm(expect, axis=1, keepdims=True)
    np.testing.assert_allclose(W, expect, atol=1e-6)
    np.testing.assert_allclose(ensemble_class_embeddings(raw), expect, atol=1e-6)
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 40)
    X = W[y] + 0.5 * rng.standard_normal((40, 16)).astype(np.float32)
    a = zero_shot_from_encoder(X, y, enc, names, templates)
    b = zero_shot_metrics(X, y, raw)
    assert a == pytest.approx(b)


def test_bad_inputs_give_clear_errors():
    X, y, W = _data()
    with pytest.raises(InputError, match="needs image labels"):
        zero_shot_metrics(X, None, W)
    with pytest.raises(InputError, match="needs image labels"):
        zero_shot_from_encoder(X, None, FakeEncoder(), ["a"])
    with pytest.raises(ModgapError, match="class list is empty"):
        class_embeddings(FakeEncoder(), [])
    with pytest.raises(InputError, match="class list is empty"):
        zero_shot_metrics(X, y, np.zeros((0, 16), dtype=np.float32))
    with pytest.raises(InputError, match=r"labels must be in \[0, 8\)"):
        zero_shot_metrics(X, y + 8, W)
    with pytest.raises(ModgapError, match="no '\\{c\\}' placeholder"):
        class_embeddings(FakeEncoder(), ["cat"], ["a photo"])
    with pytest.raises(InputError, match="needs class prompt embeddings"):
        zero_shot_metrics(X, y, None)
    with pytest.raises(InputError, match="dimensions"):
        zero_shot_metrics(X[:, :4], y, W)
