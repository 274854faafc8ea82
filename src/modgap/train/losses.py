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


def _full(x: torch.Tensor) -> torch.Tensor:
    """Half-precision inputs (AMP) are promoted: these statistics need float32 at least."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def positive_mask(n: int, ids: torch.Tensor | None, device=None) -> torch.Tensor:
    """Boolean ``(n, n)`` mask of matched pairs: the diagonal, plus pairs sharing an ``id``."""
    if ids is None:
        return torch.eye(n, dtype=torch.bool, device=device)
    ids = ids.to(device)
    return ids[:, None] == ids[None, :]


class TripletLoss(nn.Module):
    r"""VSE++ bidirectional hinge triplet loss (Faghri et al. 2018).

    With :math:`S = V T^\top` and margin :math:`m`,

    .. math::

        L = \sum_i \operatorname{agg}_{j:\,j\ne i} [m + S_{ij} - S_{ii}]_+
          + \sum_i \operatorname{agg}_{j:\,j\ne i} [m + S_{ji} - S_{ii}]_+

    where ``agg`` is ``max`` (hardest negative, VSE++) or ``sum`` (all negatives, VSE0). Pairs
    sharing an ``id`` are not negatives. ``warmup_epochs`` epochs use the sum before switching
    to the hardest negative (the VSE∞ schedule: hardest negatives from random initialisation
    collapse the embedding).

    Parameters
    ----------
    margin : float
        Hinge margin (0.2 in VSE++).
    max_violation : bool
        Hardest negative (True) or sum over negatives (False).
    warmup_epochs : int
        Epochs (counted from 0) that use the sum even when ``max_violation`` is set.
    reduction : {"sum", "mean"}
        Sum over the batch (VSE++) or mean.
    """

    def __init__(
        self,
        margin: float = 0.2,
        max_violation: bool = True,
        warmup_epochs: int = 0,
        reduction: str = "sum",
    ):
        super().__init__()
        if reduction not in ("sum", "mean"):
            raise ModgapError(f"reduction must be 'sum' or 'mean', got {reduction!r}")
        self.margin = float(margin)
        self.max_violation = bool(max_violation)
        self.warmup_epochs = int(warmup_epochs)
        self.reduction = reduction

    def forward(
        self, v: torch.Tensor, t: torch.Tensor, ids: torch.Tensor | None = None, epoch: int = 0
    ) -> torch.Tensor:
        s = v @ t.T
        diag = s.diagonal()
        pos = positive_mask(s.shape[0], ids, s.device)
        cost_t = (self.margin + s - diag[:, None]).clamp(min=0).masked_fill(pos, 0)  # image anchor
        cost_v = (self.margin + s - diag[None, :]).clamp(min=0).masked_fill(pos, 0)  # text anchor
        if self.max_violation and epoch >= self.warmup_epochs:
            per = cost_t.max(dim=1).values + cost_v.max(dim=0).values
        else:
            per = cost_t.sum(dim=1) + cost_v.sum(dim=0)
        return per.sum() if self.reduction == "sum" else per.mean()


class InfoNCELoss(nn.Module):
    r"""Symmetric InfoNCE with a learnable temperature (CLIP).

    .. math::

        L = \tfrac12\Big[-\frac1B\sum_i \log\frac{e^{S_{ii}/\tau}}{\sum_j e^{S_{ij}/\tau}}
            -\frac1B\sum_i \log\frac{e^{S_{ii}/\tau}}{\sum_j e^{S_{ji}/\tau}}\Big]

    with :math:`S = V T^\top` and :math:`1/\tau = \exp(s)`, ``s`` learnable, clamped so that
    :math:`1/\tau \le 100` as in CLIP. Other positives (same ``id``) are removed from the
    denominators.

    Parameters
    ----------
    temperature : float
        Initial temperature (0.07 in CLIP).
    learnable : bool
        Whether the temperature is trained.
    """

    def __init__(self, temperature: float = 0.07, learnable: bool = True):
        super().__init__()
        if temperature <= 0:
            raise ModgapError(f"temperature must be > 0, got {temperature}")
        init = torch.tensor(math.log(1.0 / temperature))
        if learnable:
            self.logit_scale = nn.Parameter(init)
        else:
            self.register_buffer("logit_scale", init)

    def forward(
        self, v: torch.Tensor, t: torch.Tensor, ids: torch.Tensor | None = None, epoch: int = 0
    ) -> torch.Tensor:
        scale = self.logit_scale.clamp(max=math.log(100.0)).exp()
        logits = scale * (v @ t.T)
        n = logits.shape[0]
        others = positive_mask(n, ids, logits.device) & ~torch.eye(
            n, dtype=torch.bool, device=logits.device
        )
        logits = logits.masked_fill(others, float("-inf"))
        target = torch.arange(n, device=logits.device)
        ce = nn.functional.cross_entropy
        return 0.5 * (ce(logits, target) + ce(logits.T, target))


class DimensionAlignmentLoss(nn.Module):
    r"""Dimension information alignment ``L_dim`` (DIAS; Barlow-Twins form).

    Each dimension is standardised over the batch,
    :math:`\hat V_{:k} = (V_{:k} - \bar V_k) / \sigma_k` (population std), likewise
    :math:`\hat T`; the cross-correlation is :math:`C = \hat V^\top \hat T / B` (``D × D``) and

    .. math::

        L_{dim} = \sum_k (1 - C_{kk})^2 + \lambda_{off} \sum_{k\ne l} C_{kl}^2 .

    The diagonal term asks dimension ``k`` to carry the same information in both modalities;
    the off-diagonal term removes redundancy between dimensions. It is zero exactly when the
    standardised image and text dimensions coincide and are mutually uncorrelated.

    When ``B < D`` the off-diagonal sum is computed without forming ``C``:
    :math:`\sum_{k,l} C_{kl}^2 = \langle \hat V \hat V^\top, \hat T \hat T^\top \rangle_F / B^2`
    (``O(B²D)`` instead of ``O(BD²)``).

    Parameters
    ----------
    lambda_off : float
        Weight of the off-diagonal (redundancy) term.
    eps : float
        Added to the standard deviation (a constant dimension would divide by zero).
    """

    def __init__(self, lambda_off: float = 0.005, eps: float = 1e-5):
        super().__init__()
        if lambda_off < 0:
            raise ModgapError(f"lambda_off must be >= 0, got {lambda_off}")
        self.lambda_off = float(lambda_off)
        self.eps = float(eps)

    def cross_correlation(self, v: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``C = V̂ᵀ T̂ / B`` of the batch-standardised embeddings."""
        vh = (v - v.mean(0)) / (v.std(0, unbiased=False) + self.eps)
        th = (t - t.mean(0)) / (t.std(0, unbiased=False) + self.eps)
        return vh.T @ th / v.shape[0]

    def forward(
        self, v: torch.Tensor, t: torch.Tensor, ids: torch.Tensor | None = None, epoch: int = 0
    ) -> torch.Tensor:
        v, t = _full(v), _full(t)
        b, d = v.shape
        vh = (v - v.mean(0)) / (v.std(0, unbiased=False) + self.eps)
        th = (t - t.mean(0)) / (t.std(0, unbiased=False) + self.eps)
        diag = (vh * th).sum(0) / b  # C_kk
        if b < d:
            # ||C||_F^2 = <V̂V̂ᵀ, T̂T̂ᵀ>_F / B^2: O(B²D) instead of O(BD²) when B < D
            frob = (vh @ vh.T * (th @ th.T)).sum() / (b * b)
        else:
            frob = (vh.T @ th / b).pow(2).sum()
        on = (1 - diag).pow(2).sum()
        off = frob - diag.pow(2).sum()
        return on + self.lambda_off * off


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
