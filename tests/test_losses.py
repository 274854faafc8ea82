"""Losses of modgap.train: each term against a plain-loop reference, zero at its ideal
configuration, positive otherwise, finite gradients; the sparse mask against loop rules."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from modgap.errors import ModgapError
from modgap.train.losses import (
    DIASLoss,
    DimensionAlignmentLoss,
    InfoNCELoss,
    InterModalityLoss,
    IntraModalityLoss,
    TripletLoss,
    sparse_mask,
)


def _unit(x):
    return torch.nn.functional.normalize(x, dim=1)


def _pair(b=12, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return _unit(torch.randn(b, d, generator=g, dtype=torch.float64)), _unit(
        torch.randn(b, d, generator=g, dtype=torch.float64)
    )


# -- plain references -----------------------------------------------------------------------


def ref_triplet(v, t, margin, hardest):
    s = (v @ t.T).tolist()
    b = len(s)
    total = 0.0
    for i in range(b):
        ct = [max(0.0, margin + s[i][j] - s[i][i]) for j in range(b) if j != i]
        cv = [max(0.0, margin + s[j][i] - s[i][i]) for j in range(b) if j != i]
        total += (max(ct) + max(cv)) if hardest else (sum(ct) + sum(cv))
    return total


def ref_infonce(v, t, tau):
    s = (v @ t.T).tolist()
    b = len(s)
    li = sum(
        -s[i][i] / tau + math.log(sum(math.exp(s[i][j] / tau) for j in range(b))) for i in range(b)
    )
    lt = sum(
        -s[i][i] / tau + math.log(sum(math.exp(s[j][i] / tau) for j in range(b))) for i in range(b)
    )
    return 0.5 * (li + lt) / b


def ref_dim(v, t, lam, eps=1e-5):
    v, t = v.numpy(), t.numpy()
    b, d = v.shape
    vh = (v - v.mean(0)) / (v.std(0) + eps)
    th = (t - t.mean(0)) / (t.std(0) + eps)
    total = 0.0
    for k in range(d):
        for l in range(d):
            c = sum(vh[i, k] * th[i, l] for i in range(b)) / b
            total += (1 - c) ** 2 if k == l else lam * c**2
    return total


def ref_mask(s, rule, k=3, c=1.0):
    s = s.tolist()
    n = len(s)
    keep = [[False] * n for _ in range(n)]
    for a in range(n):
        others = [b for b in range(n) if b != a]
        vals = [s[a][b] for b in others]
        if rule == "none":
            chosen = others
        elif rule == "topk":
            chosen = sorted(others, key=lambda b: -s[a][b])[:k]
        else:
            mu = sum(vals) / len(vals)
            sd = math.sqrt(sum((x - mu) ** 2 for x in vals) / len(vals))
            chosen = [b for b in others if s[a][b] > mu + c * sd]
        for b in chosen:
            keep[a][b] = True
    return np.array(keep)


# -- matching losses -------------------------------------------------------------------------


@pytest.mark.parametrize("hardest", [True, False])
def test_triplet_matches_loop_reference(hardest):
    v, t = _pair()
    got = TripletLoss(0.2, max_violation=hardest)(v, t)
    assert got.item() == pytest.approx(ref_triplet(v, t, 0.2, hardest), rel=1e-10)


def test_triplet_warmup_uses_sum_then_hardest():
    v, t = _pair()
    loss = TripletLoss(0.2, max_violation=True, warmup_epochs=1)
    assert loss(v, t, epoch=0).item() == pytest.approx(ref_triplet(v, t, 0.2, False))
    assert loss(v, t, epoch=1).item() == pytest.approx(ref_triplet(v, t, 0.2, True))


def test_triplet_zero_when_positives_beat_negatives_by_margin():
    v = torch.eye(6, dtype=torch.float64)  # S = I: positives 1, negatives 0 < 1 - 0.2
    assert TripletLoss(0.2)(v, v).item() == 0.0
    v2, t2 = _pair()
    assert TripletLoss(0.2)(v2, t2).item() > 0


def test_triplet_ids_remove_same_image_negatives():
    # rows 0 and 1 are two captions of one image: their cross pair is not a negative
    v = torch.eye(4, dtype=torch.float64)
    v[1] = v[0]
    t = v.clone()
    ids = torch.tensor([0, 0, 1, 2])
    assert TripletLoss(0.2)(v, t, ids).item() == 0.0
    assert TripletLoss(0.2)(v, t).item() > 0


def test_infonce_matches_loop_reference_and_learns_temperature():
    v, t = _pair()
    loss = InfoNCELoss(0.07)
    got = loss(v, t)
    assert got.item() == pytest.approx(ref_infonce(v, t, 0.07), rel=1e-6)
    got.backward()
    assert loss.logit_scale.grad is not None and torch.isfinite(loss.logit_scale.grad)
    fixed = InfoNCELoss(0.5, learnable=False)
    assert list(fixed.parameters()) == []
    assert fixed(v, t).item() == pytest.approx(ref_infonce(v, t, 0.5), rel=1e-6)


# -- L_dim -------------------------------------------------------------------------------------


def test_dim_loss_matches_loop_reference():
    v, t = _pair(b=10, d=5)
    got = DimensionAlignmentLoss(lambda_off=0.3)(v, t)
    assert got.item() == pytest.approx(ref_dim(v, t, 0.3), rel=1e-8)


def test_dim_loss_zero_at_identical_decorrelated_dims():
    # columns of a centred orthogonal matrix: zero mean, equal std, mutually uncorrelated
    b, d = 16, 6
    h = torch.linalg.qr(torch.randn(b, b, dtype=torch.float64))[0]
    centred = h - h.mean(0)
    q = torch.linalg.qr(centred[:, : d + 1])[0][:, :d]  # orthonormal and orthogonal to ones
    q = q - q.mean(0)
    assert torch.allclose(q.T @ q, torch.eye(d, dtype=torch.float64), atol=1e-6)
    loss = DimensionAlignmentLoss(lambda_off=1.0, eps=0.0)
    assert loss(q, q).item() == pytest.approx(0.0, abs=1e-12)
    # the same information in a different dimension order is penalised
    assert loss(q, q[:, torch.randperm(d)]).item() > 0.5
    # redundant (correlated) dimensions are penalised through the off-diagonal term
    red = torch.cat([q[:, :1]] * d, dim=1)
    assert loss(red, red).item() > 1.0


# -- spatial constraints ------------------------------------------------------------------------


def ref_spatial(v, t, which, rule, k=3):
    s = v @ t.T if which == "inter" else None
    if which == "inter":
        strength, diff = s, (s - s.T) ** 2
    else:
        si, st_ = v @ v.T, t @ t.T
        strength, diff = 0.5 * (si + st_), (si - st_) ** 2
    m = ref_mask(strength, rule, k)
    vals = [diff[a, b].item() for a in range(len(m)) for b in range(len(m)) if m[a][b]]
    return sum(vals) / len(vals) if vals else 0.0


@pytest.mark.parametrize("rule", ["none", "topk", "mean_std"])
@pytest.mark.parametrize("cls,which", [(InterModalityLoss, "inter"), (IntraModalityLoss, "intra")])
def test_spatial_losses_match_loop_reference(cls, which, rule):
    v, t = _pair(b=10, d=6, seed=3)
    got = cls(rule, k=3)(v, t)
    assert got.item() == pytest.approx(ref_spatial(v, t, which, rule), rel=1e-8)
    assert got.item() > 0


@pytest.mark.parametrize("rule", ["none", "topk", "mean_std"])
def test_inter_zero_when_similarity_symmetric(rule):
    v, _ = _pair()
    assert InterModalityLoss(rule)(v, v).item() == pytest.approx(0.0, abs=1e-15)


@pytest.mark.parametrize("rule", ["none", "topk", "mean_std"])
def test_intra_zero_under_rotation(rule):
    v, _ = _pair(d=8)
    r = torch.linalg.qr(torch.randn(8, 8, dtype=torch.float64))[0]
    assert IntraModalityLoss(rule)(v, v @ r).item() == pytest.approx(0.0, abs=1e-12)


def test_spatial_losses_skip_same_image_pairs():
    v, t = _pair(b=6)
    ids = torch.tensor([0, 0, 0, 0, 0, 0])  # every pair is matched: nothing to constrain
    assert InterModalityLoss("none")(v, t, ids).item() == 0.0
    assert IntraModalityLoss("none")(v, t, ids).item() == 0.0


# -- sparse mask ----------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(2, 12),
    rule=st.sampled_from(["mean_std", "topk", "none"]),
    k=st.integers(1, 14),
    c=st.floats(0.0, 2.0),
    seed=st.integers(0, 10_000),
)
def test_sparse_mask_keeps_exactly_what_its_rule_says(n, rule, k, c, seed):
    rng = np.random.default_rng(seed)
    s = torch.from_numpy(rng.standard_normal((n, n)))  # continuous: no ties
    got = sparse_mask(s, rule, k=k, std_scale=c).numpy()
    assert (got == ref_mask(s, rule, k, c)).all()
    assert not got.diagonal().any()
    if rule == "topk":
        assert (got.sum(1) == min(k, n - 1)).all()


def test_sparse_mask_mean_std_known_rows():
    s = torch.tensor(
        [
            [9.0, 1.0, 1.0, 1.0, 5.0],
            [0.0, 9.0, 2.0, 2.0, 2.0],
            [3.0, 0.0, 9.0, 0.0, 0.0],
            [1.0, 2.0, 3.0, 9.0, 4.0],
            [0.0, 0.0, 0.0, 0.0, 9.0],
        ]
    )
    got = sparse_mask(s, "mean_std", std_scale=1.0)
    # row 0: off-diag [1,1,1,5], mean 2, std sqrt(3) -> keep 5 only; row 1 constant -> nothing
    # row 2: [3,0,0,0] mean .75 std 1.299 -> keep 3; row 3: [1,2,3,4] mean 2.5 std 1.118 -> 4
    expected = torch.zeros(5, 5, dtype=torch.bool)
    expected[0, 4] = expected[2, 0] = expected[3, 4] = True
    assert torch.equal(got, expected)


def test_sparse_mask_unknown_rule_and_bad_k():
    s = torch.zeros(3, 3)
    with pytest.raises(ModgapError, match=r"unknown sparse mask rule 'median'"):
        sparse_mask(s, "median")
    with pytest.raises(ModgapError, match=r"k >= 1"):
        sparse_mask(s, "topk", k=0)


# -- DIASLoss -------------------------------------------------------------------------------------


def test_dias_combines_weighted_terms_and_skips_zero_weights():
    v, t = _pair()
    kw = {"mask_rule": "topk", "mask_k": 3}
    full = DIASLoss("triplet", alpha=0.5, beta=2.0, gamma=3.0, lambda_off=0.1, **kw)
    total, terms = full(v, t)
    expected = (
        TripletLoss()(v, t)
        + 0.5 * DimensionAlignmentLoss(0.1)(v, t)
        + 2.0 * InterModalityLoss("topk", 3)(v, t)
        + 3.0 * IntraModalityLoss("topk", 3)(v, t)
    )
    assert total.item() == pytest.approx(expected.item(), rel=1e-10)
    assert set(terms) == {"match", "dim", "inter", "intra", "total"}
    base_total, base_terms = DIASLoss("triplet", alpha=0, beta=0, gamma=0)(v, t)
    assert set(base_terms) == {"match", "total"}
    assert base_total.item() == pytest.approx(TripletLoss()(v, t).item())


@pytest.mark.parametrize("matching", ["triplet", "infonce"])
def test_dias_gradients_are_finite(matching):
    g = torch.Generator().manual_seed(1)
    v = torch.randn(16, 32, generator=g, requires_grad=True)
    t = torch.randn(16, 32, generator=g, requires_grad=True)
    loss = DIASLoss(matching, alpha=1.0, beta=1.0, gamma=1.0)
    total, _ = loss(_unit(v), _unit(t))
    total.backward()
    assert torch.isfinite(v.grad).all() and torch.isfinite(t.grad).all()
    assert v.grad.abs().sum() > 0


def test_dim_loss_finite_gradient_with_a_constant_dimension():
    v = torch.randn(8, 4, requires_grad=True)
    t = torch.randn(8, 4)
    t[:, 0] = 1.0  # zero variance: eps keeps it finite
    DimensionAlignmentLoss()(v, t).backward()
    assert torch.isfinite(v.grad).all()


def test_dias_rejects_bad_settings():
    with pytest.raises(ModgapError, match=r"unknown matching loss 'hinge'"):
        DIASLoss("hinge")
    with pytest.raises(ModgapError, match=r"alpha must be a finite number >= 0"):
        DIASLoss(alpha=-1.0)
    with pytest.raises(ModgapError, match=r"unknown sparse mask rule"):
        DIASLoss(mask_rule="bogus")
    with pytest.raises(ModgapError, match=r"temperature must be > 0"):
        DIASLoss("infonce", temperature=0.0)


@pytest.mark.parametrize("b,d", [(6, 20), (20, 6)])
def test_dim_loss_gram_and_direct_paths_agree(b, d):
    # B < D takes the Gram path, B >= D the D x D path: both equal the loop reference
    v, t = _pair(b=b, d=d, seed=5)
    got = DimensionAlignmentLoss(lambda_off=0.7)(v, t)
    assert got.item() == pytest.approx(ref_dim(v, t, 0.7), rel=1e-8)


def test_dias_default_weights_come_from_the_ablation_table():
    from modgap.train.losses import DEFAULT_WEIGHTS

    for matching, (a, b, g) in DEFAULT_WEIGHTS.items():
        loss = DIASLoss(matching)
        assert loss.weights == {"dim": a, "inter": b, "intra": g}
    assert DIASLoss("triplet", alpha=0.0).weights["dim"] == 0.0  # explicit 0 switches off


def test_dias_loss_from_a_config_and_overrides():
    from modgap.train.config import LossConfig as FromConfig
    from modgap.train.losses import LossConfig

    assert FromConfig is LossConfig  # one list of parameters, re-exported for configs
    cfg = LossConfig(matching="infonce", alpha=0.25, mask_rule="topk", mask_k=3)
    loss = DIASLoss(cfg)
    assert loss.config == cfg and loss.weights["dim"] == 0.25
    assert isinstance(loss.matching, InfoNCELoss) and loss.inter.k == 3
    over = DIASLoss(cfg, alpha=0.0)
    assert over.weights["dim"] == 0.0 and cfg.alpha == 0.25  # the config is not modified
    with pytest.raises(ModgapError, match=r"unknown DIASLoss parameter.*alpah.*valid: alpha"):
        DIASLoss("triplet", alpah=1.0)
