"""Training objectives for image-text matching: VSE++ triplet, InfoNCE and the DIAS terms.

Every loss takes a batch of ``B`` matched joint embeddings ``v`` (images, ``(B, D)``) and ``t``
(texts, ``(B, D)``); row ``i`` of both is a matched pair. An optional ``ids`` vector ``(B,)``
names the instance (image) of each row so that two captions of the same image in one batch are
never treated as a negative pair.

References
----------
- Faghri, Fleet, Kiros, Fidler. *VSE++: Improving Visual-Semantic Embeddings with Hard
  Negatives*. BMVC 2018.
- van den Oord, Li, Vinyals. *Representation Learning with Contrastive Predictive Coding*. 2018;
  Radford et al. *CLIP*. ICML 2021 (symmetric form, learnable temperature).
- Ma, Li, Fang, Zhang. *Enhancing Image-Text Matching with Dimension Information Alignment and
  Sparse Spatial Constraints* (DIAS). ACM MM 2024, arXiv 2410.16853. The full text is not
  available here; the terms below follow this project's specification (docs/dias.md).
- Zbontar et al. *Barlow Twins*. ICML 2021 (the cross-correlation form of ``L_dim``).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..errors import ModgapError
from .pair_losses import (
    DimensionAlignmentLoss,
    InfoNCELoss,
    TripletLoss,
    _full,
    positive_mask,
)

__all__ = [
    "DEFAULT_WEIGHTS",
    "MASK_RULES",
    "MATCHING_LOSSES",
    "DIASLoss",
    "DimensionAlignmentLoss",
    "InfoNCELoss",
    "InterModalityLoss",
    "IntraModalityLoss",
    "LossConfig",
    "TripletLoss",
    "positive_mask",
    "sparse_mask",
]

MASK_RULES = ("mean_std", "topk", "none")
MATCHING_LOSSES = ("triplet", "infonce")

#: default (alpha, beta, gamma) per matching loss: the weights scripts/dias_ablation.py chose on
#: validation rSum (docs/dias.md, "Ablation"). Triplet (summed over a batch of 64): from the
#: COCO-500 from-scratch heads, where DIAS added about +25 rSum. InfoNCE: from the Fashion-MNIST
#: pocket heads, where the chosen (small) weights left rSum unchanged and raised class mAP by 0.8.
DEFAULT_WEIGHTS: dict[str, tuple[float, float, float]] = {
    "triplet": (0.1, 100.0, 100.0),
    "infonce": (0.0005, 1.0, 1.0),
}


@torch.no_grad()
def sparse_mask(
    s: torch.Tensor,
    rule: str = "mean_std",
    k: int = 5,
    std_scale: float = 1.0,
    exclude: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""Sparse correlation mask (DIAS): keep only each row's strong relationships.

    Entries excluded by ``exclude`` (by default the diagonal: matched pairs) never count, neither
    as candidates nor in the row statistics.

    - ``"mean_std"``: keep :math:`S_{ab} > \mu_a + c\,\sigma_a`, with :math:`\mu_a, \sigma_a` the
      mean and population standard deviation of row ``a`` over its candidate entries and
      ``c = std_scale``.
    - ``"topk"``: keep the ``k`` largest candidate entries of each row (all of them when a row
      has fewer than ``k``).
    - ``"none"``: keep every candidate entry (dense constraints).

    Parameters
    ----------
    s : tensor (B, B)
        Relationship strengths (similarities).
    rule : {"mean_std", "topk", "none"}
    k : int
        Entries per row for ``"topk"``.
    std_scale : float
        ``c`` in the ``"mean_std"`` threshold.
    exclude : bool tensor (B, B), optional
        Entries that are not candidates (default: the diagonal).

    Returns
    -------
    bool tensor (B, B)
    """
    n = s.shape[0]
    if exclude is None:
        exclude = torch.eye(n, dtype=torch.bool, device=s.device)
    cand = ~exclude
    if rule == "none":
        return cand
    s = _full(s)
    if rule == "mean_std":
        cnt = cand.sum(1, keepdim=True).clamp(min=1)
        z = torch.where(cand, s, torch.zeros_like(s))
        mu = z.sum(1, keepdim=True) / cnt
        var = (torch.where(cand, s - mu, torch.zeros_like(s)).pow(2)).sum(1, keepdim=True) / cnt
        return cand & (s > mu + std_scale * var.sqrt())
    if rule == "topk":
        if k < 1:
            raise ModgapError(f"top-k mask needs k >= 1, got {k}")
        kk = min(k, n)
        ranked = s.masked_fill(~cand, float("-inf"))
        idx = ranked.topk(kk, dim=1).indices
        keep = torch.zeros_like(cand)
        keep.scatter_(1, idx, True)
        return keep & cand
    raise ModgapError(f"unknown sparse mask rule {rule!r} (choose from {', '.join(MASK_RULES)})")


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    n = mask.sum()
    if n == 0:
        return x.sum() * 0.0  # keeps the graph (and a zero gradient) when nothing is kept
    return (x * mask).sum() / n


class _SpatialLoss(nn.Module):
    def __init__(self, rule: str = "none", k: int = 5, std_scale: float = 1.0):
        super().__init__()
        if rule not in MASK_RULES:
            raise ModgapError(
                f"unknown sparse mask rule {rule!r} (choose from {', '.join(MASK_RULES)})"
            )
        self.rule, self.k, self.std_scale = rule, int(k), float(std_scale)

    def mask(self, strength: torch.Tensor, ids: torch.Tensor | None) -> torch.Tensor:
        exclude = positive_mask(strength.shape[0], ids, strength.device)
        return sparse_mask(strength.detach(), self.rule, self.k, self.std_scale, exclude)


class InterModalityLoss(_SpatialLoss):
    r"""Inter-modality spatial constraint on unmatched pairs (DIAS).

    With :math:`S = V T^\top`, image ``a`` should relate to text ``b`` as image ``b`` relates to
    text ``a``:

    .. math::

        L_{inter} = \frac{1}{|M|} \sum_{(a,b)\in M} (S_{ab} - S_{ba})^2 ,

    ``M`` = unmatched pairs ``a ≠ b`` kept by the sparse mask computed on ``S`` (detached);
    dense when ``rule="none"``. Zero when ``S`` is symmetric on ``M`` (e.g. ``V = T``).
    """

    def forward(
        self, v: torch.Tensor, t: torch.Tensor, ids: torch.Tensor | None = None, epoch: int = 0
    ) -> torch.Tensor:
        s = _full(v) @ _full(t).T
        m = self.mask(s, ids)
        return _masked_mean((s - s.T).pow(2), m)


class IntraModalityLoss(_SpatialLoss):
    r"""Intra-modality spatial constraint on unmatched pairs (DIAS).

    With :math:`S_I = V V^\top` and :math:`S_T = T T^\top`, images should relate to each other as
    their captions do:

    .. math::

        L_{intra} = \frac{1}{|M|} \sum_{(a,b)\in M} (S_{I,ab} - S_{T,ab})^2 ,

    ``M`` = unmatched pairs kept by the sparse mask computed on :math:`(S_I + S_T)/2` (detached:
    a relationship is strong when it is strong on average over both modalities). Zero when the
    two Gram matrices agree on ``M`` (e.g. ``T = V R`` with ``R`` orthogonal).
    """

    def forward(
        self, v: torch.Tensor, t: torch.Tensor, ids: torch.Tensor | None = None, epoch: int = 0
    ) -> torch.Tensor:
        v, t = _full(v), _full(t)
        si, st = v @ v.T, t @ t.T
        m = self.mask(0.5 * (si + st), ids)
        return _masked_mean((si - st).pow(2), m)


@dataclass
class LossConfig:
    """The objective: ``L_match + alpha L_dim + beta L_inter + gamma L_intra``.

    The one list of the objective's parameters: the ``loss`` section of a training config and
    the arguments of :class:`DIASLoss`. A weight left out (``None``) takes the ablation's
    default for the matching loss (:data:`DEFAULT_WEIGHTS`); 0 switches its term off.
    """

    matching: str = "triplet"
    alpha: float | None = None
    beta: float | None = None
    gamma: float | None = None
    lambda_off: float = 0.005
    mask_rule: str = "mean_std"
    mask_k: int = 5
    mask_std_scale: float = 1.0
    margin: float = 0.2
    max_violation: bool = True
    warmup_epochs: int = 0
    reduction: str = "sum"
    temperature: float = 0.07
    learnable_temperature: bool = True


class DIASLoss(nn.Module):
    r"""The DIAS objective: :math:`L = L_{match} + \alpha L_{dim} + \beta L_{inter} +
    \gamma L_{intra}`.

    A term with weight 0 is not computed. ``forward`` returns the total and a dict of the
    (detached) terms, so the trainer can show running values.

    Parameters
    ----------
    config : LossConfig or {"triplet", "infonce"}
        The objective (a training config's ``loss`` section), or the name of the matching loss.
    **params
        :class:`LossConfig` fields, overriding ``config``'s:
    alpha, beta, gamma : float, optional
        Weights of ``L_dim``, ``L_inter``, ``L_intra`` (``>= 0``; 0 switches a term off).
        ``None`` takes the ablation's choice for ``matching`` (:data:`DEFAULT_WEIGHTS`).
    lambda_off : float
        Off-diagonal weight inside ``L_dim``.
    mask_rule : {"mean_std", "topk", "none"}
        Sparse correlation mask of the spatial constraints (``"none"``: dense).
    mask_k, mask_std_scale : int, float
        Parameters of the mask rules.
    margin, max_violation, warmup_epochs, reduction :
        :class:`TripletLoss` parameters.
    temperature, learnable_temperature :
        :class:`InfoNCELoss` parameters.
    """

    def __init__(self, config: LossConfig | str = "triplet", **params: Any):
        super().__init__()
        fields = {f.name for f in dataclasses.fields(LossConfig)}
        unknown = sorted(set(params) - fields)
        if unknown:
            valid = ", ".join(sorted(fields))
            raise ModgapError(f"unknown DIASLoss parameter(s) {', '.join(unknown)}; valid: {valid}")
        if isinstance(config, LossConfig):
            config = dataclasses.replace(config, **params)
        else:
            config = LossConfig(matching=config, **params)
        self.config = config
        c = config
        matching, alpha, beta, gamma = c.matching, c.alpha, c.beta, c.gamma
        if matching not in MATCHING_LOSSES:
            raise ModgapError(
                f"unknown matching loss {matching!r} (choose from {', '.join(MATCHING_LOSSES)})"
            )
        d_alpha, d_beta, d_gamma = DEFAULT_WEIGHTS[matching]
        alpha = d_alpha if alpha is None else alpha
        beta = d_beta if beta is None else beta
        gamma = d_gamma if gamma is None else gamma
        for name, w in (("alpha", alpha), ("beta", beta), ("gamma", gamma)):
            if not (w >= 0 and math.isfinite(w)):
                raise ModgapError(f"loss weight {name} must be a finite number >= 0, got {w}")
        if matching == "triplet":
            self.matching = TripletLoss(c.margin, c.max_violation, c.warmup_epochs, c.reduction)
        else:
            self.matching = InfoNCELoss(c.temperature, c.learnable_temperature)
        self.weights = {"dim": float(alpha), "inter": float(beta), "intra": float(gamma)}
        self.dim = DimensionAlignmentLoss(c.lambda_off)
        self.inter = InterModalityLoss(c.mask_rule, c.mask_k, c.mask_std_scale)
        self.intra = IntraModalityLoss(c.mask_rule, c.mask_k, c.mask_std_scale)

    def forward(
        self, v: torch.Tensor, t: torch.Tensor, ids: torch.Tensor | None = None, epoch: int = 0
    ) -> tuple[torch.Tensor, dict[str, float]]:
        total = self.matching(v, t, ids, epoch)
        terms = {"match": float(total.detach())}
        for name, w in self.weights.items():
            if w > 0:
                val = getattr(self, name)(v, t, ids, epoch)
                total = total + w * val
                terms[name] = float(val.detach())
        terms["total"] = float(total.detach())
        return total, terms
