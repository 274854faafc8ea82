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


def _concentration_reference(pred, y, c):
    """Plain loops: shares, Shannon entropy over log(c), largest share."""
    out = {}
    for name, v in (("prediction", pred), ("label", y)):
        shares = [np.mean(np.asarray(v) == k) for k in range(c)]
        h = -sum(s * np.log(s) for s in shares if s > 0)
        out[f"{name}_entropy"] = h / np.log(c)
        out[f"{name}_top_share"] = max(shares)
    return out


def test_concentration_of_a_classifier_that_predicts_one_class():
    rng = np.random.default_rng(5)
    W = rng.standard_normal((6, 16)).astype(np.float32)
    W[2] = 10 * W.mean(axis=0) + 0.1 * W[2]  # class 2's prompt: close to every image
    y = np.repeat(np.arange(6), 20)
    X = (W.mean(axis=0) + 0.05 * rng.standard_normal((120, 16))).astype(np.float32)
    out = zero_shot_metrics(X, y, W, return_predictions=True)
    assert set(out["predictions"]) == {2}
    assert out["prediction_entropy"] == 0.0 and out["prediction_top_share"] == 1.0
    assert out["label_entropy"] == pytest.approx(1.0) and out["label_top_share"] == 1 / 6


def test_concentration_of_a_perfect_classifier_equals_the_labels():
    rng = np.random.default_rng(6)
    W = rng.standard_normal((5, 16)).astype(np.float32)
    y = rng.choice(5, size=300, p=[0.5, 0.2, 0.15, 0.1, 0.05])  # unbalanced labels
    out = zero_shot_metrics(W[y], y, W)
    assert out["acc1"] == 1.0
    assert out["prediction_entropy"] == out["label_entropy"] < 0.95
    assert out["prediction_top_share"] == out["label_top_share"] == np.mean(y == 0)
    ref = _concentration_reference(y, y, 5)
    for key, value in ref.items():
        assert out[key] == pytest.approx(value, abs=1e-12), key


def test_concentration_of_a_random_classifier():
    X, y, W = _data(n=2000, c=10, seed=8)
    rng = np.random.default_rng(9)
    W = rng.standard_normal(W.shape).astype(np.float32)  # prompts unrelated to the images
    out = zero_shot_metrics(X, y, W, return_predictions=True)
    ref = _concentration_reference(out["predictions"], y, 10)
    for key, value in ref.items():
        assert out[key] == pytest.approx(value, abs=1e-12), key
    assert out["acc1"] < 0.2
    # random predictions spread over the classes, about as evenly as the (uniform) labels
    assert out["prediction_entropy"] > 0.9 and out["label_entropy"] > 0.99


def test_concentration_with_one_class_and_unused_classes():
    from modgap.tasks.zeroshot import prediction_concentration

    one = prediction_concentration([0, 0, 0], [0, 0, 0], 1)
    assert one["prediction_entropy"] == one["label_entropy"] == 1.0
    # classes offered but never predicted count against the entropy
    two_of_four = prediction_concentration([0, 1, 0, 1], [0, 1, 2, 3], 4)
    assert two_of_four["prediction_entropy"] == pytest.approx(0.5)
    assert two_of_four["label_entropy"] == pytest.approx(1.0)
    assert two_of_four["prediction_top_share"] == 0.5 and two_of_four["label_top_share"] == 0.25
