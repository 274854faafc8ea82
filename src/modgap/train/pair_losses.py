"""The pairwise matching objectives and the dimension term: VSE++ triplet, InfoNCE and DIAS's
``L_dim`` (the cross-correlation form of Barlow Twins), with :func:`positive_mask`, which keeps
two captions of one image from being a negative pair. References in
:mod:`modgap.train.losses`, which combines them with the sparse spatial terms."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import ModgapError

__all__ = ["DimensionAlignmentLoss", "InfoNCELoss", "TripletLoss", "positive_mask"]


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
